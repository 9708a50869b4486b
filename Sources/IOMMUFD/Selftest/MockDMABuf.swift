#if canImport(Glibc)
import Glibc
#endif
import CIOMMUFD
import SystemPackage

/// The owner of a dma-buf the kernel's mock exports (`IOMMU_TEST_OP_DMABUF_GET`): zeroed
/// kernel memory, a whole number of pages, that ``IOMMUFDContext/mapFile(_:offset:length:into:at:access:)``
/// maps into an IOAS as a device's BAR exported by dma-buf would be. Closed when the owner ends.
public struct MockDMABuf: ~Copyable, Sendable {
    let handle: KernelDescriptor
    /// The dma-buf's file descriptor, to pass to `mapFile`.
    public var descriptor: CInt { handle.rawValue }
    /// Its size in bytes: the length asked for, rounded up to whole pages.
    public let length: UInt64
    /// What the ioctl itself returned. A kernel that follows the selftest's contract returns the
    /// new descriptor; the 7.3.4 mock returns 0 although it installed one, which
    /// ``IOMMUFDContext/mockDMABuf(length:)`` then finds in `/proc/self/fd`.
    public let ioctlResult: CInt

    /// Closes the dma-buf now; mappings of it keep the buffer alive.
    /// - Throws: ``IOMMUFDError`` with operation `close`; the descriptor is released anyway.
    public consuming func close() throws(IOMMUFDError) { try handle.close() }
}

extension IOMMUFDContext {
    /// Makes the mock export a new dma-buf of `length` bytes (rounded up to pages).
    ///
    /// The 7.3.4 mock installs the new descriptor but answers 0 instead of its number, so the
    /// call looks for it: the one dma-buf descriptor of the kernel's iommufd exporter with this
    /// size that `/proc/self/fd` lists after the call and did not list before. Another thread
    /// making such a dma-buf at the same moment makes that ambiguous: the call then fails
    /// rather than guess, and the descriptors stay open.
    ///
    /// - Throws: ``IOMMUFDError``; from the kernel `EINVAL` for 0 bytes or more than 512
    ///   pages; ``IOMMUFDError/Reason/unexpectedResult(_:)`` when the new descriptor cannot be
    ///   told apart.
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_DMABUF_GET`).
    public func mockDMABuf(length: UInt32) throws(IOMMUFDError) -> MockDMABuf {
        let size = (UInt64(length) + PageSize.system.bytes - 1) & ~(PageSize.system.bytes - 1)
        let before = Self.dmaBufDescriptors(size: size, kernel)
        var cmd = makeCommand(cio_iommu_test_cmd.self)
        cmd.op = CIO_IOMMU_TEST_OP_DMABUF_GET
        cmd.dmabuf_get.length = length
        cmd.dmabuf_get.open_flags = UInt32(O_CLOEXEC)
        let result = try handle.ioctlValue(.testCommand, &cmd, .mockDMABufGet)
        let fresh = Self.dmaBufDescriptors(size: size, kernel).subtracting(before)
        let fd: CInt
        if result > 0, Self.isMockDMABuf(result, size: size, kernel) {
            fd = result
        } else if fresh.count == 1, let only = fresh.first {
            fd = only
        } else {
            throw IOMMUFDError(.mockDMABufGet, request: .testCommand,
                               reason: .unexpectedResult("the ioctl returned \(result); new dma-buf descriptors: \(fresh.sorted())"))
        }
        return MockDMABuf(handle: KernelDescriptor(fd, kernel: kernel), length: size, ioctlResult: result)
    }

    /// Revokes a mock dma-buf (or restores it): mappings of it stop working and new maps of it
    /// answer `ENODEV` until it is restored.
    ///
    /// - Throws: ``IOMMUFDError``; from the kernel `EOPNOTSUPP` for a dma-buf of another
    ///   exporter, `EINVAL` for a descriptor that is not a dma-buf, `EBADF` for a closed one.
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_DMABUF_REVOKE`).
    public func mockRevokeDMABuf(_ buffer: borrowing MockDMABuf, revoked: Bool = true) throws(IOMMUFDError) {
        var cmd = makeCommand(cio_iommu_test_cmd.self)
        cmd.op = CIO_IOMMU_TEST_OP_DMABUF_REVOKE
        cmd.dmabuf_revoke.dmabuf_fd = buffer.descriptor
        cmd.dmabuf_revoke.revoked = revoked ? 1 : 0
        try ioctl(.testCommand, &cmd, .mockDMABufRevoke)
    }

    /// Descriptors of this process that are dma-bufs of the mock's exporter with `size` bytes.
    static func dmaBufDescriptors(size: UInt64, _ kernel: any KernelInterface) -> Set<CInt> {
        guard case .success(let names) = kernel.listDirectory("/proc/self/fd") else { return [] }
        return Set(names.compactMap { CInt($0) }.filter { isMockDMABuf($0, size: size, kernel) })
    }

    /// Whether `fd` is a dma-buf (`/dmabuf:` in `/proc/self/fd`) exported by iommufd's mock
    /// with `size` bytes (its `/proc/self/fdinfo` entry).
    static func isMockDMABuf(_ fd: CInt, size: UInt64, _ kernel: any KernelInterface) -> Bool {
        guard case .success(let link) = kernel.readlink("/proc/self/fd/\(fd)"), link.hasPrefix("/dmabuf:") else { return false }
        guard case .success(let info) = kernel.readTextFile("/proc/self/fdinfo/\(fd)") else { return false }
        let lines = info.split(separator: "\n")
        return lines.contains("size:\t\(size)") && lines.contains("exp_name:\tiommufd")
    }
}
