#if canImport(Glibc)
import Glibc
#endif
import SystemPackage
import CIOMMUFD

/// Page-aligned memory for DMA, owned: unmapped (and its memfd closed) when the owner ends.
///
/// Made with `mmap`, never from Swift arrays (whose storage may move or be shared). A buffer
/// backed by a memfd can also be mapped by file (``IOMMUFDContext/mapFile(_:offset:length:into:at:access:)``)
/// or handed to another process. Unmap it from every IOAS before it ends: `IOMMU_IOAS_MAP`
/// records the process address and pins the pages only when a device or HWPT needs them, so a
/// mapping that outlives its buffer can later pin whatever is mapped at that address then
/// (DMA into unrelated memory). A mapping made by file (memfd) names the file, not the address.
public struct DMABuffer: ~Copyable, Sendable {
    /// Where the memory starts in this process.
    public let address: HostAddress
    /// Size in bytes, a multiple of ``pageSize``.
    public let length: Int
    /// The page size backing the memory (the system page size, or a huge page size).
    public let pageSize: PageSize
    /// The memfd backing the memory, or `nil` for anonymous memory.
    public let memfd: CInt?
    /// Where the buffer's system calls go (its `mmap`, `munmap` and `close` too).
    let kernel: any KernelInterface

    /// Anonymous, private memory.
    ///
    /// - Parameters:
    ///   - length: Bytes; a positive multiple of the page size.
    ///   - hugePages: A huge page size to back it with (`MAP_HUGETLB`), or `nil`.
    ///   - populate: Fault every page in now (`MAP_POPULATE`) instead of on first touch.
    ///   - kernel: Where the system calls go.
    /// - Throws: ``IOMMUFDError`` with operation `allocateBuffer`: before `mmap` for a length
    ///   that is not a positive multiple of the page (`EINVAL`, as `mmap` answers), or the
    ///   `errno` of `mmap` (`ENOMEM` when no huge pages are reserved).
    public init(
        length: Int, hugePages: PageSize? = nil, populate: Bool = false, kernel: any KernelInterface = LinuxKernel()
    ) throws(IOMMUFDError) {
        let page = try Self.checkLength(length, hugePages)
        var flags = MAP_PRIVATE | MAP_ANONYMOUS | (populate ? MAP_POPULATE : 0)
        if let hugePages { flags |= MAP_HUGETLB | (CInt(hugePages.shift) << MAP_HUGE_SHIFT) }
        switch kernel.mmap(length: length, protection: PROT_READ | PROT_WRITE, flags: flags, fd: -1, offset: 0) {
        case .success(let p): self.init(address: HostAddress(p), length: length, pageSize: page, memfd: nil, kernel: kernel)
        case .failure(let e): throw IOMMUFDError(.allocateBuffer, reason: .kernel(e))
        }
    }

    /// Shared memory backed by a new memfd (`memfd_create`), mapped in this process.
    ///
    /// - Parameters:
    ///   - length: Bytes; a positive multiple of the page size.
    ///   - name: The memfd's name, shown in `/proc/PID/fd`.
    ///   - hugePages: A huge page size (`MFD_HUGETLB`), or `nil`.
    ///   - kernel: Where the system calls go.
    public init(
        memfdLength length: Int, name: String = "swift-iommufd", hugePages: PageSize? = nil,
        kernel: any KernelInterface = LinuxKernel()
    ) throws(IOMMUFDError) {
        let page = try Self.checkLength(length, hugePages)
        var mfdFlags = UInt32(MFD_CLOEXEC)
        if let hugePages {
            let encodedSize = UInt32(hugePages.shift) << UInt32(MFD_HUGE_SHIFT)
            mfdFlags |= UInt32(MFD_HUGETLB) | encodedSize
        }
        let fd: CInt
        switch kernel.memfdCreate(name, flags: mfdFlags) {
        case .success(let f): fd = f
        case .failure(let e): throw IOMMUFDError(.allocateBuffer, reason: .kernel(e))
        }
        if case .failure(let e) = kernel.ftruncate(fd, length: Int64(length)) {
            _ = kernel.close(fd)
            throw IOMMUFDError(.allocateBuffer, reason: .kernel(e))
        }
        switch kernel.mmap(length: length, protection: PROT_READ | PROT_WRITE, flags: MAP_SHARED, fd: fd, offset: 0) {
        case .success(let p): self.init(address: HostAddress(p), length: length, pageSize: page, memfd: fd, kernel: kernel)
        case .failure(let e):
            _ = kernel.close(fd)
            throw IOMMUFDError(.allocateBuffer, reason: .kernel(e))
        }
    }

    private init(address: HostAddress, length: Int, pageSize: PageSize, memfd: CInt?, kernel: any KernelInterface) {
        self.address = address
        self.length = length
        self.pageSize = pageSize
        self.memfd = memfd
        self.kernel = kernel
    }

    private static func checkLength(_ length: Int, _ hugePages: PageSize?) throws(IOMMUFDError) -> PageSize {
        let page = hugePages ?? .system
        guard length > 0, UInt64(length) % page.bytes == 0 else {
            throw IOMMUFDError(.allocateBuffer, reason: .invalidArgument("length \(length) is not a positive multiple of \(page)"))
        }
        return page
    }

    deinit {
        _ = kernel.munmap(address.unsafePointer!, length: length)
        if let memfd { _ = kernel.close(memfd) }
    }

    /// The buffer as a host range, for ``IOMMUFDContext/map(_:into:at:access:)``.
    public var range: HostRange { try! HostRange(base: address, length: UInt64(length)) }

    /// Reads or writes the bytes. Do not let the pointer escape the closure; while a device may
    /// be writing, the bytes can change under the reader.
    @discardableResult
    public func withUnsafeMutableBytes<R, E: Error>(
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        try body(UnsafeMutableRawBufferPointer(start: address.unsafePointer, count: length))
    }
}

extension IOMMUFDContext {
    /// Maps a whole ``DMABuffer`` into `ioas`; see ``map(_:into:at:access:)``.
    ///
    /// The corresponding ioctl is `IOMMU_IOAS_MAP`.
    public func map(
        _ buffer: borrowing DMABuffer, into ioas: IOASID, at iova: IOVA? = nil, access: MapAccess = [.readable, .writeable]
    ) throws(IOMMUFDError) -> IOVA {
        try map(buffer.range, into: ioas, at: iova, access: access)
    }
}
