import CIOMMUFD
import SystemPackage

/// Flags of a mock access (`MOCK_FLAGS_ACCESS_CREATE_*`). Bits this type does not name reach
/// the kernel unchanged; 7.3 answers `EOPNOTSUPP` for them.
public struct MockAccessFlags: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// The access pins pages (``IOMMUFDContext/pinPages(_:through:writable:expecting:)``), as a
    /// driver that hands page lists to hardware would; without it the access only reads and
    /// writes. `MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES`.
    public static let needsPinPages = Self(rawValue: CIO_MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES)
    public var description: String { flagDescription(rawValue, [(Self.needsPinPages.rawValue, "needsPinPages")]) }
}

/// Options of a read or write through an access (`MOCK_ACCESS_RW_*` other than the direction,
/// which the call sets). Bits this type does not name reach the kernel unchanged.
public struct MockAccessRWOptions: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// Copy page by page through a kernel mapping instead of the fast path.
    /// `MOCK_ACCESS_RW_SLOW_PATH`.
    public static let slowPath = Self(rawValue: CIO_MOCK_ACCESS_RW_SLOW_PATH)
}

/// Pages pinned through a mock access (`ACCESS_PAGES`' `out_access_pages_id`); a number of
/// that access, not an iommufd object.
public struct MockAccessPagesID: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public var description: String { "MockAccessPagesID(\(rawValue))" }
}

/// The owner of a mock access: an in-kernel user of an IOAS that is not a device, as an
/// emulated device's driver is. Through it the kernel reads and writes the memory mapped at an
/// IOVA and pins pages, exactly as iommufd serves such drivers, without the caller's own record
/// of what is mapped. Closing the descriptor destroys the access and unpins what it pinned.
public struct MockAccess: ~Copyable, Sendable {
    let handle: KernelDescriptor
    /// The access's file descriptor, which names it in every access operation.
    public var descriptor: CInt { handle.rawValue }

    init(descriptor: CInt, kernel: any KernelInterface) {
        handle = KernelDescriptor(descriptor, kernel: kernel)
    }

    /// Closes the access now; ending the owner does the same.
    /// - Throws: ``IOMMUFDError`` with operation `close`; the descriptor is released anyway.
    public consuming func close() throws(IOMMUFDError) { try handle.close() }
}

extension IOMMUFDContext {
    /// Creates a mock access attached to `ioas`.
    ///
    /// - Throws: ``IOMMUFDError``; from the kernel `ENOENT` for an unknown IOAS, `EOPNOTSUPP`
    ///   for flags it does not know.
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_CREATE_ACCESS`).
    public func createMockAccess(to ioas: IOASID, flags: MockAccessFlags = []) throws(IOMMUFDError) -> MockAccess {
        var cmd = makeCommand(cio_iommu_test_cmd.self)
        cmd.op = CIO_IOMMU_TEST_OP_CREATE_ACCESS
        cmd.id = ioas.rawValue
        cmd.create_access.flags = flags.rawValue
        try ioctl(.testCommand, &cmd, .mockCreateAccess)
        return MockAccess(descriptor: CInt(bitPattern: cmd.create_access.out_access_fd), kernel: kernel)
    }

    /// Moves an access to another IOAS; what it pinned in the old one must be unpinned first.
    ///
    /// - Throws: ``IOMMUFDError``; from the kernel `ENOENT` for an unknown IOAS.
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_ACCESS_REPLACE_IOAS`).
    public func replaceMockAccessIOAS(_ access: borrowing MockAccess, with ioas: IOASID) throws(IOMMUFDError) {
        var cmd = makeCommand(cio_iommu_test_cmd.self)
        cmd.op = CIO_IOMMU_TEST_OP_ACCESS_REPLACE_IOAS
        cmd.id = UInt32(bitPattern: access.descriptor)
        cmd.access_replace_ioas.ioas_id = ioas.rawValue
        try ioctl(.testCommand, &cmd, .mockAccessReplaceIOAS)
    }

    /// Reads `buffer.count` bytes of the memory mapped at `iova` of the access's IOAS, as a
    /// device would see them, into `buffer`. One call, no allocation here (the kernel copies
    /// through a buffer of its own).
    ///
    /// - Throws: ``IOMMUFDError``; before the call for an empty buffer (the kernel answers
    ///   `EINVAL`); from the kernel `ENOENT` when part of the range is not mapped (bytes of the
    ///   mapped part before the hole may be in `buffer`), `EPERM` when a mapping is not
    ///   readable, `EOVERFLOW` for a range past 2^64, `ENOMEM` above 16 MiB.
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_ACCESS_RW`).
    public func read(
        at iova: IOVA, into buffer: UnsafeMutableRawBufferPointer, through access: borrowing MockAccess,
        options: MockAccessRWOptions = []
    ) throws(IOMMUFDError) {
        try accessRW(access.descriptor, iova, UnsafeMutableRawPointer(buffer.baseAddress), buffer.count,
                     options.rawValue & ~CIO_MOCK_ACCESS_RW_WRITE, .mockAccessRead)
    }

    /// Reads `count` bytes at `iova` through an access into a new array; see
    /// ``read(at:into:through:options:)``.
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_ACCESS_RW`).
    public func read(
        _ count: Int, at iova: IOVA, through access: borrowing MockAccess, options: MockAccessRWOptions = []
    ) throws(IOMMUFDError) -> [UInt8] {
        guard count >= 0 else {
            throw IOMMUFDError(.mockAccessRead, request: .testCommand, reason: .invalidArgument("negative count \(count)"))
        }
        var bytes = [UInt8](repeating: 0, count: count)
        let fd = access.descriptor
        try bytes.withUnsafeMutableBytes { b in
            Result { () throws(IOMMUFDError) in
                try accessRW(fd, iova, b.baseAddress, b.count, options.rawValue & ~CIO_MOCK_ACCESS_RW_WRITE, .mockAccessRead)
            }
        }.get()
        return bytes
    }

    /// Writes `bytes` to the memory mapped at `iova` of the access's IOAS, as a device's DMA
    /// would.
    ///
    /// - Throws: ``IOMMUFDError``; before the call for no bytes (the kernel answers `EINVAL`);
    ///   from the kernel `ENOENT` when part of the range is not mapped (the mapped part before
    ///   the hole may already be written), `EPERM` when a mapping is not writeable, `EOVERFLOW`
    ///   for a range past 2^64, `ENOMEM` above 16 MiB.
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_ACCESS_RW` with
    /// `MOCK_ACCESS_RW_WRITE`).
    public func write(
        _ bytes: UnsafeRawBufferPointer, at iova: IOVA, through access: borrowing MockAccess,
        options: MockAccessRWOptions = []
    ) throws(IOMMUFDError) {
        try accessRW(access.descriptor, iova, UnsafeMutableRawPointer(mutating: bytes.baseAddress), bytes.count,
                     options.rawValue | CIO_MOCK_ACCESS_RW_WRITE, .mockAccessWrite)
    }

    /// Writes `bytes` at `iova` through an access; see ``write(_:at:through:options:)-(UnsafeRawBufferPointer,_,_,_)``.
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_ACCESS_RW` with
    /// `MOCK_ACCESS_RW_WRITE`).
    public func write(
        _ bytes: [UInt8], at iova: IOVA, through access: borrowing MockAccess, options: MockAccessRWOptions = []
    ) throws(IOMMUFDError) {
        let fd = access.descriptor
        try bytes.withUnsafeBytes { b in
            Result { () throws(IOMMUFDError) in
                try accessRW(fd, iova, UnsafeMutableRawPointer(mutating: b.baseAddress), b.count,
                             options.rawValue | CIO_MOCK_ACCESS_RW_WRITE, .mockAccessWrite)
            }
        }.get()
    }

    /// Reads one little-endian value at `iova` through an access (a page-table entry, a
    /// descriptor); see ``read(at:into:through:options:)``.
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_ACCESS_RW`).
    public func read<T: FixedWidthInteger>(
        _ type: T.Type, at iova: IOVA, through access: borrowing MockAccess
    ) throws(IOMMUFDError) -> T {
        var value = T.zero
        let fd = access.descriptor
        try withUnsafeMutableBytes(of: &value) { (b) throws(IOMMUFDError) in
            try accessRW(fd, iova, b.baseAddress, b.count, 0, .mockAccessRead)
        }
        return T(littleEndian: value)
    }

    /// Writes one value, little-endian, at `iova` through an access; see
    /// ``write(_:at:through:options:)-(UnsafeRawBufferPointer,_,_,_)``.
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_ACCESS_RW` with
    /// `MOCK_ACCESS_RW_WRITE`).
    public func write<T: FixedWidthInteger>(_ value: T, at iova: IOVA, through access: borrowing MockAccess) throws(IOMMUFDError) {
        var le = value.littleEndian
        let fd = access.descriptor
        try withUnsafeMutableBytes(of: &le) { (b) throws(IOMMUFDError) in
            try accessRW(fd, iova, b.baseAddress, b.count, CIO_MOCK_ACCESS_RW_WRITE, .mockAccessWrite)
        }
    }

    /// Whether anything is mapped at `iova` of the access's IOAS, as the kernel sees it: a
    /// one-byte read that succeeds, or fails because of what is mapped there (`EPERM`: not
    /// readable; `EINVAL`: a dma-buf, or an area closed to accesses), not `ENOENT`.
    ///
    /// - Throws: ``IOMMUFDError`` for any other kernel answer.
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_ACCESS_RW`).
    public func isMapped(_ iova: IOVA, through access: borrowing MockAccess) throws(IOMMUFDError) -> Bool {
        var byte: UInt8 = 0
        do {
            try withUnsafeMutableBytes(of: &byte) { (b) throws(IOMMUFDError) in
                try accessRW(access.descriptor, iova, b.baseAddress, 1, 0, .mockAccessRead)
            }
            return true
        } catch where error.errno == .noSuchFileOrDirectory {
            return false
        } catch where error.errno == .notPermitted || error.errno == .invalidArgument {
            return true
        }
    }

    private func accessRW(
        _ access: CInt, _ iova: IOVA, _ pointer: UnsafeMutableRawPointer?, _ count: Int, _ flags: UInt32,
        _ operation: IOMMUFDError.Operation
    ) throws(IOMMUFDError) {
        guard count > 0 else {
            throw IOMMUFDError(operation, request: .testCommand, reason: .invalidRange(.empty))
        }
        var cmd = makeCommand(cio_iommu_test_cmd.self)
        cmd.op = CIO_IOMMU_TEST_OP_ACCESS_RW
        cmd.id = UInt32(bitPattern: access)
        cmd.access_rw.iova = iova.rawValue
        cmd.access_rw.length = UInt64(count)
        cmd.access_rw.uptr = UInt64(UInt(bitPattern: pointer))
        cmd.access_rw.flags = flags
        try ioctl(.testCommand, &cmd, operation)
    }

    /// Pins the pages mapped at `range` of the access's IOAS, as a driver does before handing
    /// them to hardware; they stay pinned (and an unmap of them asks the access to unpin first)
    /// until ``unpinPages(_:through:)`` or the access is closed.
    ///
    /// - Parameters:
    ///   - writable: Pin for writing (`MOCK_FLAGS_ACCESS_WRITE`): refused for a read-only mapping.
    ///   - host: When given, the kernel also checks that the pinned pages are the process's
    ///     pages at `host` (`EBADE` otherwise).
    /// - Returns: The number that unpins them.
    /// - Throws: ``IOMMUFDError``; from the kernel `EOPNOTSUPP` when the access was not created
    ///   with ``MockAccessFlags/needsPinPages``, `ENOENT` when part of the range is not mapped,
    ///   `ENOMEM` above 16 MiB.
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_ACCESS_PAGES`).
    public func pinPages(
        _ range: IOVARange, through access: borrowing MockAccess, writable: Bool = false, expecting host: HostAddress? = nil
    ) throws(IOMMUFDError) -> MockAccessPagesID {
        guard let length = range.length else {
            throw IOMMUFDError(.mockAccessPinPages, request: .testCommand, reason: .invalidRange(.wholeSpace))
        }
        var cmd = makeCommand(cio_iommu_test_cmd.self)
        cmd.op = CIO_IOMMU_TEST_OP_ACCESS_PAGES
        cmd.id = UInt32(bitPattern: access.descriptor)
        cmd.access_pages.flags = writable ? CIO_MOCK_FLAGS_ACCESS_WRITE : 0
        cmd.access_pages.iova = range.first.rawValue
        cmd.access_pages.length = length
        cmd.access_pages.uptr = host?.rawValue ?? 0
        try ioctl(.testCommand, &cmd, .mockAccessPinPages)
        return MockAccessPagesID(rawValue: cmd.access_pages.out_access_pages_id)
    }

    /// Unpins pages pinned by ``pinPages(_:through:writable:expecting:)``.
    ///
    /// - Throws: ``IOMMUFDError``; from the kernel `ENOENT` for a number the access does not
    ///   hold (already unpinned, or unpinned by an unmap of its IOVAs).
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_DESTROY_ACCESS_PAGES`).
    public func unpinPages(_ pages: MockAccessPagesID, through access: borrowing MockAccess) throws(IOMMUFDError) {
        var cmd = makeCommand(cio_iommu_test_cmd.self)
        cmd.op = CIO_IOMMU_TEST_OP_DESTROY_ACCESS_PAGES
        cmd.id = UInt32(bitPattern: access.descriptor)
        cmd.destroy_access_pages.access_pages_id = pages.rawValue
        try ioctl(.testCommand, &cmd, .mockAccessUnpinPages)
    }
}
