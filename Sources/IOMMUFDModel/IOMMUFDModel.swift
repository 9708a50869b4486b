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
/// Thread-safe, with a lock per open iommufd: calls on different descriptors run in parallel.
/// Which descriptors are open sits behind a read-write lock that calls only read; the trace,
/// calls on descriptors that are not iommufds and pending injections share one lock, which a
/// call takes only while tracing or while an injection is pending. Without tracing, a map or
/// unmap at a fixed IOVA allocates nothing once the IOAS's area array has room.
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

    let configuration: Configuration
    let files = ReadWriteLock(Files())
    let shared = ReadWriteLock(Shared())
    /// Failures still to inject, in all: a call looks at `shared` only when this is nonzero.
    let pendingInjectionCount = Atomic<Int>(0)

    public init(_ configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    // MARK: Set-up and inspection

    /// Makes `path` open as a file that is not an iommufd (every iommufd ioctl: `ENOTTY`).
    public func addNonIOMMUFDPath(_ path: String) {
        files.write { _ = $0.otherPaths.insert(path) }
    }

    /// Makes the next `count` ioctls of `request` (on any model descriptor that knows it)
    /// fail with `errno` before the model decodes them. Calls add up per request.
    public func injectFailure(_ errno: Errno, for request: IoctlRequest, count: Int = 1) {
        precondition(count > 0, "count must be positive")
        shared.write {
            $0.injections[request, default: []].append(contentsOf: repeatElement(errno, count: count))
            pendingInjectionCount.add(count, ordering: .relaxed)
        }
    }

    /// Failures still to be injected, per request.
    public var pendingInjections: [IoctlRequest: Int] {
        shared.write { $0.injections.filter { !$0.value.isEmpty }.mapValues(\.count) }
    }

    /// Every call recorded while tracing, oldest first.
    public var trace: [TraceEntry] { shared.write { $0.trace } }

    /// The recorded ioctls only, oldest first.
    public var ioctlTrace: [TraceEntry] {
        trace.filter { if case .ioctl = $0.call { true } else { false } }
    }

    public func clearTrace() { shared.write { $0.trace.removeAll(keepingCapacity: true) } }

    /// How many ioctls of `request` were made since the last ``resetCounters()``, failed ones
    /// included.
    public func ioctlCount(_ request: IoctlRequest) -> Int { ioctlCounts[request] ?? 0 }

    /// Ioctls made per request since the last ``resetCounters()``.
    public var ioctlCounts: [IoctlRequest: Int] {
        files.read { f in
            var counts: [IoctlRequest: Int] = [:]
            for context in f.contexts.values {
                context.state.write { c in counts.merge(c.counts, uniquingKeysWith: +) }
            }
            return shared.write { counts.merging($0.counts, uniquingKeysWith: +) }
        }
    }

    /// Every ioctl made since the last ``resetCounters()``.
    public var totalIoctlCount: Int { ioctlCounts.values.reduce(0, +) }

    public func resetCounters() {
        files.read { f in
            for context in f.contexts.values { context.state.write { $0.counts.removeAll(keepingCapacity: true) } }
            shared.write { $0.counts.removeAll(keepingCapacity: true) }
        }
    }

    /// The iommufd descriptors open now.
    public var openContexts: [CInt] { files.read { $0.contexts.keys.sorted() } }

    /// The IOAS of the iommufd `fd`, ascending; `nil` for an unknown descriptor.
    public func ioasIDs(in fd: CInt) -> [IOASID]? {
        context(fd)?.state.write { c in c.objects.keys.sorted().map(IOASID.init(rawValue:)) }
    }

    /// The areas mapped in `ioas` of the iommufd `fd`, ascending; `nil` when either is unknown.
    public func areas(of ioas: IOASID, in fd: CInt) -> [Area]? {
        context(fd)?.state.write { c in c.objects[ioas.rawValue].map { $0.state.publicAreas } } ?? nil
    }

    /// Marks an object busy (a device would hold it): `IOMMU_DESTROY` answers `EBUSY` for it.
    public func setInUse(_ ioas: IOASID, _ inUse: Bool, in fd: CInt) {
        context(fd)?.state.write { c in c.objects[ioas.rawValue]?.state.inUse = inUse }
    }

    // MARK: KernelInterface

    public func open(_ path: String, flags: CInt) -> Result<CInt, Errno> {
        let fd: CInt? = files.write { f in
            let fd = f.nextFD
            if path == "/dev/iommu" {
                f.contexts[fd] = ModelContext(configuration)
            } else if f.otherPaths.contains(path) {
                f.otherFiles[fd] = path
            } else {
                return nil
            }
            f.nextFD += 1
            return fd
        }
        guard let fd else {
            record(-1, .open(path), [], .noSuchFileOrDirectory)
            return .failure(.noSuchFileOrDirectory)
        }
        record(fd, .open(path), [], nil)
        return .success(fd)
    }

    /// Closing an iommufd keeps its counts (they move to the model's).
    public func close(_ fd: CInt) -> Result<Void, Errno> {
        if !Self.isModelDescriptor(fd) { return passThrough(fd, "close") { $0.close(fd) } }
        let closed: Bool = files.write { f in
            if let context = f.contexts.removeValue(forKey: fd) {
                let counts = context.state.write { c in
                    c.closed = true
                    return c.counts
                }
                shared.write { $0.counts.merge(counts, uniquingKeysWith: +) }
                return true
            }
            return f.otherFiles.removeValue(forKey: fd) != nil
        }
        record(fd, .close, [], closed ? nil : .badFileDescriptor)
        return closed ? .success(()) : .failure(.badFileDescriptor)
    }

    public func ioctl(_ fd: CInt, _ request: IoctlRequest, _ argument: UnsafeMutableRawPointer?) -> Result<CInt, Errno> {
        if let context = context(fd),
           let result = context.state.write({ c in c.closed ? nil : c.ioctl(fd, request, argument, self) }) {
            return result
        }
        let e: Errno = files.read { $0.otherFiles[fd] != nil } ? .inappropriateIOCTLForDevice : .badFileDescriptor
        shared.write { $0.counts[request, default: 0] += 1 }
        record(fd, .ioctl(request), [], e)
        return .failure(e)
    }

    public func pread(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) -> Result<Int, Errno> {
        if !Self.isModelDescriptor(fd) { return passThrough(fd, "pread") { $0.pread(fd, into: buffer, at: offset) } }
        return other(fd, "pread", .invalidArgument).map { _ in 0 }
    }

    public func pwrite(_ fd: CInt, from buffer: UnsafeRawBufferPointer, at offset: Int64) -> Result<Int, Errno> {
        if !Self.isModelDescriptor(fd) { return passThrough(fd, "pwrite") { $0.pwrite(fd, from: buffer, at: offset) } }
        return other(fd, "pwrite", .invalidArgument).map { _ in 0 }
    }

    public func read(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer) -> Result<Int, Errno> {
        if !Self.isModelDescriptor(fd) { return passThrough(fd, "read") { $0.read(fd, into: buffer) } }
        return other(fd, "read", .invalidArgument).map { _ in 0 }
    }

    public func write(_ fd: CInt, from buffer: UnsafeRawBufferPointer) -> Result<Int, Errno> {
        if !Self.isModelDescriptor(fd) { return passThrough(fd, "write") { $0.write(fd, from: buffer) } }
        return other(fd, "write", .invalidArgument).map { _ in 0 }
    }

    public func lseek(_ fd: CInt, offset: Int64, whence: CInt) -> Result<Int64, Errno> {
        if !Self.isModelDescriptor(fd) { return passThrough(fd, "lseek") { $0.lseek(fd, offset: offset, whence: whence) } }
        return other(fd, "lseek", .invalidArgument).map { _ in 0 }
    }

    /// An iommufd without hardware queues has nothing to map: `ENXIO`; other files `ENODEV`.
    public func mmap(
        length: Int, protection: CInt, flags: CInt, fd: CInt, offset: Int64
    ) -> Result<UnsafeMutableRawPointer, Errno> {
        if !Self.isModelDescriptor(fd) {
            return passThrough(fd, "mmap") { $0.mmap(length: length, protection: protection, flags: flags, fd: fd, offset: offset) }
        }
        let isContext = context(fd) != nil
        switch other(fd, "mmap", isContext ? Errno(rawValue: Glibc.ENXIO) : .operationNotSupportedByDevice) {
        case .failure(let e): return .failure(e)
        case .success: return .failure(.invalidArgument)  // unreachable: `other` always fails
        }
    }

    /// The model never maps memory.
    public func munmap(_ address: UnsafeMutableRawPointer, length: Int) -> Result<Void, Errno> {
        passThrough(-1, "munmap") { $0.munmap(address, length: length) }
    }

    // MARK: Shared state

    /// The open iommufd `fd`, if it is one.
    func context(_ fd: CInt) -> ModelContext? { files.read { $0.contexts[fd] } }

    /// Appends to the trace while tracing.
    func record(_ fd: CInt, _ call: TraceEntry.Call, _ fields: [Field], _ errno: Errno?, injected: Bool = false) {
        guard configuration.tracing else { return }
        let entry = TraceEntry(fd: fd, call: call, fields: fields, errno: errno, injected: injected)
        shared.write { $0.trace.append(entry) }
    }

    /// The next failure to inject for `request`, taken off the list; `nil` when none is pending.
    func takeInjection(for request: IoctlRequest) -> Errno? {
        guard pendingInjectionCount.load(ordering: .relaxed) > 0 else { return nil }
        return shared.write { s in
            guard let e = s.injections[request]?.first else { return nil }
            s.injections[request]!.removeFirst()
            pendingInjectionCount.subtract(1, ordering: .relaxed)
            return e
        }
    }

    /// A call the model's files do not implement: `EBADF` for unknown descriptors, else `errno`.
    private func other(_ fd: CInt, _ name: String, _ errno: Errno) -> Result<Void, Errno> {
        let e = files.read { $0.isOpen(fd) } ? errno : .badFileDescriptor
        record(fd, .other(name), [], e)
        return .failure(e)
    }
}
