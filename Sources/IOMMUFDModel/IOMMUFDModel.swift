#if canImport(Glibc)
import Glibc
#endif
public import IOMMUFD
import SystemPackage
import CIOMMUFD
import Synchronization

/// A model of `/dev/iommu` for the IOAS side of iommufd, behind ``KernelInterface``.
///
/// It decodes the same C argument structs the real kernel does, from the ioctl's argument
/// pointer, follows the dispatch of `iommufd_fops_ioctl` (size header, minimum size, the
/// `E2BIG` rule for larger structs) and the semantics of `drivers/iommu/iommufd/ioas.c` and
/// `io_pagetable.c` of Linux 7.3 for an iommufd with no devices attached, and writes the
/// out-parameters back. Code above ``KernelInterface`` (``IOMMUFDContext``, the mirror engine) can so
/// be tested and benchmarked without a kernel. The kernel tier's `ModelAgreementKernelTests`
/// run the same random operations on the real kernel and on this model and require identical
/// answers.
///
/// What it models, and the choices it makes where it cannot be the kernel:
/// - `open("/dev/iommu")` makes a new context; paths added with ``addNonIOMMUFDPath(_:)`` open
///   as files that answer every iommufd ioctl `ENOTTY`; other paths `ENOENT`. Descriptors are
///   numbers of the model (from 65536 up), not process descriptors.
/// - IOAS alloc/destroy (ids: lowest free from 1, as the kernel's xarray), map (fixed and
///   automatic IOVA, the kernel's first-fit with its alignment heuristic), map file, unmap (whole
///   areas only, ascending, `ENOENT` leaving earlier areas unmapped), copy (spans of contiguous
///   areas, sliced like the kernel), IOVA ranges (`EMSGSIZE`), allowed IOVAs, change process
///   (`EINVAL` while any area maps process memory rather than a file), options (RLIMIT mode and
///   huge pages), the VFIO compatibility IOAS, and the selftest's reserved regions
///   (`IOMMU_TEST_CMD` `ADD_RESERVED`, only with ``Configuration/selftest``).
/// - Nothing is pinned (the kernel pins only for a domain or an access, neither exists here):
///   user addresses are never dereferenced. `IOMMU_IOAS_MAP_FILE` accepts any descriptor that
///   is open in this process (`fcntl(F_GETFD)`), `EBADF` otherwise, like the kernel's `fget`.
/// - Requests that need devices (`HWPT_ALLOC`, `GET_HW_INFO`, dirty tracking, invalidation,
///   vIOMMU, vDevice, vEvent and HW queues) pass the size checks and then answer `ENOENT`
///   (no device or HWPT id can exist in the model); `IOMMU_FAULT_QUEUE_ALLOC` answers
///   `EOPNOTSUPP`; `IOMMU_IOAS_NOIOMMU_GET_PA` answers `EOPNOTSUPP` (a kernel without
///   `CONFIG_IOMMUFD_NOIOMMU`, see ``Configuration/noIOMMU``). Other selftest ops answer `EOPNOTSUPP`.
/// - The VFIO container ioctls on the iommufd: `VFIO_GET_API_VERSION` answers 0 and
///   `VFIO_CHECK_EXTENSION` 1 for type1, type1v2 and unmap-all; the rest `ENOTTY`.
/// - Arrays the commands point to (IOVA ranges) are read and written at the process address
///   given; addresses below 64 KiB (never mapped, `vm.mmap_min_addr`) or wrapping past 2^64
///   answer `EFAULT`. Bytes past the struct up to its `size` are read for the `E2BIG` check,
///   as the kernel does: a caller must not claim more bytes than it owns.
///
/// Every ioctl is counted per request (``ioctlCount(_:)``) and, while tracing, recorded with
/// its decoded key fields and result (``trace``). ``injectFailure(_:for:count:)`` makes the
/// next calls of a request fail with a chosen `errno` before the model looks at them.
///
/// Thread-safe: the state sits behind one `Mutex`.
public final class IOMMUFDModel: KernelInterface, Sendable {
    /// How the modelled kernel and machine are set up.
    public struct Configuration: Sendable {
        /// `PAGE_SIZE`.
        public var pageSize: UInt64
        /// The largest alignment an automatic IOVA gets: `HPAGE_SIZE` with transparent huge
        /// pages (2 MiB on x86), else the page size.
        public var maximumAutomaticAlignment: UInt64
        /// Whether the caller holds `CAP_SYS_RESOURCE` (setting the RLIMIT mode) and
        /// `CAP_SYS_RAWIO` (`NOIOMMU_GET_PA`); `EPERM` otherwise.
        public var privileged: Bool
        /// Whether the kernel has `CONFIG_IOMMUFD_TEST` (`IOMMU_TEST_CMD` known, with
        /// `ADD_RESERVED` modelled). Without it `IOMMU_TEST_CMD` answers `ENOTTY`.
        public var selftest: Bool
        /// Whether the kernel has `CONFIG_IOMMUFD_NOIOMMU`; without it `IOMMU_IOAS_NOIOMMU_GET_PA`
        /// answers `EOPNOTSUPP` to every well-sized command.
        public var noIOMMU: Bool
        /// Record every call in ``IOMMUFDModel/trace`` (turn off for benchmarks).
        public var tracing: Bool

        public init(
            pageSize: UInt64 = PageSize.system.bytes, maximumAutomaticAlignment: UInt64 = 2 << 20,
            privileged: Bool = true, selftest: Bool = false, noIOMMU: Bool = false, tracing: Bool = true
        ) {
            self.noIOMMU = noIOMMU
            self.pageSize = pageSize
            self.maximumAutomaticAlignment = maximumAutomaticAlignment
            self.privileged = privileged
            self.selftest = selftest
            self.tracing = tracing
        }
    }

    /// One call the model answered.
    public struct TraceEntry: Hashable, Sendable, CustomStringConvertible {
        public enum Call: Hashable, Sendable, CustomStringConvertible {
            case open(String)
            case close
            case ioctl(IoctlRequest)
            /// `read`, `write`, `pread`, `pwrite`, `mmap`, `munmap`.
            case other(String)
            public var description: String {
                switch self {
                case .open(let p): "open(\(p))"
                case .close: "close"
                case .ioctl(let r): "\(r)"
                case .other(let s): s
                }
            }
        }
        public let fd: CInt
        public let call: Call
        /// The command's key fields as decoded (inputs), then `out_*` fields on success.
        public let fields: [Field]
        /// The `errno` answered, `nil` on success.
        public let errno: Errno?
        /// The failure was forced by ``IOMMUFDModel/injectFailure(_:for:count:)``.
        public let injected: Bool

        /// The value of the field named `name`, if it was decoded.
        public subscript(_ name: String) -> UInt64? { fields.first { $0.name == name }?.value }

        public var description: String {
            let f = fields.map { "\($0.name)=0x\(String($0.value, radix: 16))" }.joined(separator: " ")
            let r = errno.map { "\($0)\(injected ? " (injected)" : "")" } ?? "ok"
            return "fd \(fd) \(call) \(f) -> \(r)"
        }
    }

    /// A named field of a decoded command.
    public struct Field: Hashable, Sendable {
        public let name: String
        public let value: UInt64
        public init(_ name: String, _ value: UInt64) {
            self.name = name
            self.value = value
        }
    }

    /// One mapped area of an IOAS, as the model keeps it.
    public struct Area: Hashable, Sendable, CustomStringConvertible {
        public let iova: IOVARange
        /// What the area maps: process memory at a user address, or a file at an offset.
        public let source: Source
        /// Whether the pages behind the area were mapped writeable (copies keep this).
        public let writable: Bool

        public enum Source: Hashable, Sendable {
            case user(HostAddress)
            case file(fd: CInt, offset: UInt64)
        }

        public var description: String {
            switch source {
            case .user(let a): "\(iova) -> user \(a)"
            case .file(let fd, let o): "\(iova) -> fd \(fd) +0x\(String(o, radix: 16))"
            }
        }
    }

    let state: Mutex<ModelState>

    public init(_ configuration: Configuration = Configuration()) {
        state = Mutex(ModelState(configuration: configuration))
    }

    // MARK: Set-up and inspection

    /// Makes `path` open as a file that is not an iommufd (every iommufd ioctl: `ENOTTY`).
    public func addNonIOMMUFDPath(_ path: String) {
        state.withLock { _ = $0.otherPaths.insert(path) }
    }

    /// Makes the next `count` ioctls of `request` (on any model descriptor that knows it)
    /// fail with `errno` before the model decodes them. Calls add up per request.
    public func injectFailure(_ errno: Errno, for request: IoctlRequest, count: Int = 1) {
        precondition(count > 0, "count must be positive")
        state.withLock { $0.injections[request, default: []].append(contentsOf: repeatElement(errno, count: count)) }
    }

    /// Failures still to be injected, per request.
    public var pendingInjections: [IoctlRequest: Int] {
        state.withLock { $0.injections.filter { !$0.value.isEmpty }.mapValues(\.count) }
    }

    /// Every call recorded while tracing, oldest first.
    public var trace: [TraceEntry] { state.withLock { $0.trace } }

    /// The recorded ioctls only, oldest first.
    public var ioctlTrace: [TraceEntry] {
        trace.filter { if case .ioctl = $0.call { true } else { false } }
    }

    public func clearTrace() { state.withLock { $0.trace.removeAll(keepingCapacity: true) } }

    /// How many ioctls of `request` were made since the last ``resetCounters()``, failed ones
    /// included.
    public func ioctlCount(_ request: IoctlRequest) -> Int { state.withLock { $0.counts[request] ?? 0 } }

    /// Ioctls made per request since the last ``resetCounters()``.
    public var ioctlCounts: [IoctlRequest: Int] { state.withLock { $0.counts } }

    /// Every ioctl made since the last ``resetCounters()``.
    public var totalIoctlCount: Int { state.withLock { $0.counts.values.reduce(0, +) } }

    public func resetCounters() { state.withLock { $0.counts.removeAll(keepingCapacity: true) } }

    /// The iommufd descriptors open now.
    public var openContexts: [CInt] { state.withLock { $0.contexts.keys.sorted() } }

    /// The IOAS of the iommufd `fd`, ascending; `nil` for an unknown descriptor.
    public func ioasIDs(in fd: CInt) -> [IOASID]? {
        state.withLock { s in s.contexts[fd].map { $0.objects.keys.sorted().map(IOASID.init(rawValue:)) } }
    }

    /// The areas mapped in `ioas` of the iommufd `fd`, ascending; `nil` when either is unknown.
    public func areas(of ioas: IOASID, in fd: CInt) -> [Area]? {
        state.withLock { s in s.contexts[fd]?.objects[ioas.rawValue].map { $0.publicAreas } }
    }

    /// Marks an object busy (a device would hold it): `IOMMU_DESTROY` answers `EBUSY` for it.
    public func setInUse(_ ioas: IOASID, _ inUse: Bool, in fd: CInt) {
        state.withLock { s in
            guard s.contexts[fd]?.objects[ioas.rawValue] != nil else { return }
            s.contexts[fd]!.objects[ioas.rawValue]!.inUse = inUse
        }
    }

    // MARK: KernelInterface

    public func open(_ path: String, flags: CInt) -> Result<CInt, Errno> {
        state.withLock { $0.open(path) }
    }

    public func close(_ fd: CInt) -> Result<Void, Errno> {
        if !Self.isModelDescriptor(fd) { return passThrough(fd, "close") { $0.close(fd) } }
        return state.withLock { $0.close(fd) }
    }

    public func ioctl(_ fd: CInt, _ request: IoctlRequest, _ argument: UnsafeMutableRawPointer?) -> Result<CInt, Errno> {
        state.withLock { $0.ioctl(fd, request, argument) }
    }

    public func pread(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) -> Result<Int, Errno> {
        if !Self.isModelDescriptor(fd) { return passThrough(fd, "pread") { $0.pread(fd, into: buffer, at: offset) } }
        return state.withLock { $0.other(fd, "pread", .invalidArgument) }.map { _ in 0 }
    }

    public func pwrite(_ fd: CInt, from buffer: UnsafeRawBufferPointer, at offset: Int64) -> Result<Int, Errno> {
        if !Self.isModelDescriptor(fd) { return passThrough(fd, "pwrite") { $0.pwrite(fd, from: buffer, at: offset) } }
        return state.withLock { $0.other(fd, "pwrite", .invalidArgument) }.map { _ in 0 }
    }

    public func read(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer) -> Result<Int, Errno> {
        if !Self.isModelDescriptor(fd) { return passThrough(fd, "read") { $0.read(fd, into: buffer) } }
        return state.withLock { $0.other(fd, "read", .invalidArgument) }.map { _ in 0 }
    }

    public func write(_ fd: CInt, from buffer: UnsafeRawBufferPointer) -> Result<Int, Errno> {
        if !Self.isModelDescriptor(fd) { return passThrough(fd, "write") { $0.write(fd, from: buffer) } }
        return state.withLock { $0.other(fd, "write", .invalidArgument) }.map { _ in 0 }
    }

    /// Memory and other files map for real; an iommufd without hardware queues has nothing to
    /// map: `ENXIO`; the model's other files `ENODEV`.
    public func mmap(
        length: Int, protection: CInt, flags: CInt, fd: CInt, offset: Int64
    ) -> Result<UnsafeMutableRawPointer, Errno> {
        if !Self.isModelDescriptor(fd) {
            return passThrough(fd, "mmap") { $0.mmap(length: length, protection: protection, flags: flags, fd: fd, offset: offset) }
        }
        let r: Result<Void, Errno> = state.withLock { s in
            s.other(fd, "mmap", s.contexts[fd] != nil ? Errno(rawValue: Glibc.ENXIO) : .operationNotSupportedByDevice)
        }
        switch r {
        case .failure(let e): return .failure(e)
        case .success: return .failure(.invalidArgument)  // unreachable: `other` always fails
        }
    }

    /// Memory the model handed out came from the real kernel: unmapped for real.
    public func munmap(_ address: UnsafeMutableRawPointer, length: Int) -> Result<Void, Errno> {
        passThrough(-1, "munmap") { $0.munmap(address, length: length) }
    }
}
