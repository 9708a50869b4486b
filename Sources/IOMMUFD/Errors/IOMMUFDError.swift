public import SystemPackage

/// Every failure of this package: which operation, which kernel call, and why.
///
/// ``errno`` is set for every failure the kernel reports, and also for a call refused by a
/// check made before the syscall: such a check refuses only what the kernel would refuse too,
/// and carries the `errno` the kernel would have returned, so a caller switching on `errno`
/// (or ``isNotSupported``) sees the same answer whichever side refused. ``code`` tells the two
/// apart; ``detail`` says what was wrong. Nothing in the kernel changed when a check before the
/// call refused.
///
/// The error is an open struct: new codes and operations can be added without breaking a
/// client's `switch`.
public struct IOMMUFDError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The operation that failed, named after the public call.
    public struct Operation: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }
    }

    /// What kind of failure; an open set.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// The kernel refused the call; ``IOMMUFDError/errno`` is its answer.
        public static let kernel = Self(rawValue: "kernel")
        /// A range argument the call cannot carry to the kernel, or one the kernel would refuse;
        /// checked before the call (``IOMMUFDError/rangeError``).
        public static let invalidRange = Self(rawValue: "invalidRange")
        /// Another argument the kernel would refuse, or that this library cannot pass on;
        /// checked before the call.
        public static let invalidArgument = Self(rawValue: "invalidArgument")
        /// A descriptor handed in is not an iommufd (the kernel answered `ENOTTY`).
        public static let notAnIOMMUFD = Self(rawValue: "notAnIOMMUFD")
        /// The kernel answered, but not as its contract says.
        public static let unexpectedResult = Self(rawValue: "unexpectedResult")
    }

    /// Why an operation failed: a code, the `errno` (the kernel's, or the one it would give),
    /// and what was wrong.
    public struct Reason: Hashable, Sendable {
        public let code: Code
        public let errno: Errno?
        public let detail: String?
        public let rangeError: AddressRangeError?

        public init(code: Code, errno: Errno?, detail: String? = nil, rangeError: AddressRangeError? = nil) {
            self.code = code
            self.errno = errno
            self.detail = detail
            self.rangeError = rangeError
        }

        /// The kernel refused the call with `errno`; `subject` names what it was about (a path).
        public static func kernel(_ errno: Errno, subject: String? = nil) -> Self {
            Self(code: .kernel, errno: errno, detail: subject)
        }

        /// A range refused before the call, with the `errno` the kernel gives for it: `EOVERFLOW`
        /// for a range past 2^64 or of 2^64 bytes (a length no 64-bit field carries), `EINVAL`
        /// for an empty or misaligned one.
        public static func invalidRange(_ error: AddressRangeError) -> Self {
            let e: Errno = switch error {
            case .overflow, .wholeSpace: .overflow
            case .empty, .misaligned: .invalidArgument
            }
            return Self(code: .invalidRange, errno: e, detail: error.description, rangeError: error)
        }

        /// Another argument refused before the call, with the `errno` the kernel would give.
        public static func invalidArgument(_ detail: String, errno: Errno = .invalidArgument) -> Self {
            Self(code: .invalidArgument, errno: errno, detail: detail)
        }

        /// The descriptor is not an iommufd: the kernel answered `ENOTTY`.
        public static let notAnIOMMUFD = Self(
            code: .notAnIOMMUFD, errno: .inappropriateIOCTLForDevice, detail: "the file descriptor is not an iommufd")

        /// The kernel answered, but not as its contract says; no `errno`.
        public static func unexpectedResult(_ detail: String) -> Self {
            Self(code: .unexpectedResult, errno: nil, detail: detail)
        }
    }

    public let operation: Operation
    /// The ioctl involved, if any.
    public let request: IoctlRequest?
    public let reason: Reason

    public init(_ operation: Operation, request: IoctlRequest? = nil, reason: Reason) {
        self.operation = operation
        self.request = request
        self.reason = reason
    }

    public init(_ operation: Operation, request: IoctlRequest? = nil, errno: Errno) {
        self.init(operation, request: request, reason: .kernel(errno))
    }

    public var code: Code { reason.code }
    /// The kernel's error number; for a call refused before the syscall, the one the kernel
    /// would have returned. `nil` only for ``Code/unexpectedResult``.
    public var errno: Errno? { reason.errno }
    /// What was wrong, for refusals made before the call and unexpected answers.
    public var detail: String? { reason.detail }
    /// The range problem, for ``Code/invalidRange``.
    public var rangeError: AddressRangeError? { reason.rangeError }
    /// The call never reached the kernel.
    public var isRefusedBeforeCall: Bool { code != .kernel && code != .notAnIOMMUFD && code != .unexpectedResult }

    /// The kernel or this IOMMU lacks the feature: `EOPNOTSUPP`, or `ENOTTY` for an unknown ioctl.
    public var isNotSupported: Bool {
        guard let e = errno else { return false }
        return e == .notSupported || e == .inappropriateIOCTLForDevice
    }

    /// "IOMMU_IOAS_MAP (map) failed: EEXIST (errno 17, File exists): the IOVA range overlaps ...".
    public var description: String {
        let what = request.map { "\($0) (\(operation))" } ?? "\(operation)"
        let number = errno.map { e in "\(Self.name(of: e)) (errno \(e.rawValue), \(e))" }
        switch code {
        case .kernel:
            let hint = errno.flatMap { hintText(for: $0) }.map { ": " + $0 } ?? ""
            return "\(what) failed\(detail.map { " (\($0))" } ?? ""): \(number ?? "no errno")\(hint)"
        case .unexpectedResult:
            return "\(what): unexpected kernel answer: \(detail ?? "")"
        case .notAnIOMMUFD:
            return "\(what) failed: \(number ?? ""): \(detail ?? "")"
        default:
            return "\(what) refused before the call: \(number.map { $0 + ": " } ?? "")\(detail ?? code.rawValue)"
        }
    }

    /// The symbolic name of an errno value on Linux (`ENOENT`), or `errno N`.
    public static func name(of errno: Errno) -> String {
        let n = Int(errno.rawValue)
        if n >= 0, n < errnoNames.count, let name = errnoNames[n] { return name }
        return n == 524 ? "ENOTSUPP" : "errno \(n)"
    }

    private static let errnoNames: [String?] = [
        nil, "EPERM", "ENOENT", "ESRCH", "EINTR", "EIO", "ENXIO", "E2BIG", "ENOEXEC", "EBADF", "ECHILD",
        "EAGAIN", "ENOMEM", "EACCES", "EFAULT", "ENOTBLK", "EBUSY", "EEXIST", "EXDEV", "ENODEV", "ENOTDIR",
        "EISDIR", "EINVAL", "ENFILE", "EMFILE", "ENOTTY", "ETXTBSY", "EFBIG", "ENOSPC", "ESPIPE", "EROFS",
        "EMLINK", "EPIPE", "EDOM", "ERANGE", "EDEADLK", "ENAMETOOLONG", "ENOLCK", "ENOSYS", "ENOTEMPTY", "ELOOP",
        nil, "ENOMSG", "EIDRM", nil, nil, nil, nil, nil, nil, nil,
        nil, nil, nil, nil, nil, nil, nil, nil, nil, "ENOSTR",
        "ENODATA", "ETIME", "ENOSR", nil, nil, nil, "ENOLINK", nil, nil, nil,
        "EPROTO", nil, nil, "EBADMSG", "EOVERFLOW", nil, "EBADFD", nil, nil, nil,
        nil, nil, nil, nil, "EILSEQ", nil, nil, "ENOTSOCK", nil, "EMSGSIZE",
        nil, nil, nil, nil, "EOPNOTSUPP", nil, nil, "EADDRINUSE", "EADDRNOTAVAIL", nil,
        nil, nil, nil, nil, nil, nil, nil, nil, nil, "ETIMEDOUT",
        nil, nil, nil, nil, "EALREADY", "EINPROGRESS", nil, nil, nil, nil,
        nil, nil, nil, nil, nil, "ECANCELED",
    ]

    private struct HintKey: Hashable {
        var operation: Operation?
        var request: IoctlRequest?
        var errno: CInt
    }

    private func hintText(for e: Errno) -> String? {
        Self.hints[HintKey(operation: operation, request: request, errno: e.rawValue)]
            ?? Self.hints[HintKey(operation: nil, request: request, errno: e.rawValue)]
    }

    /// What kernel answers whose meaning is not obvious mean, for an operation or an ioctl.
    private static let hints: [HintKey: String] = {
        var h: [HintKey: String] = [:]
        func add(_ r: IoctlRequest?, _ e: Errno, _ s: String, operation: Operation? = nil) {
            h[HintKey(operation: operation, request: r, errno: e.rawValue)] = s
        }
        add(nil, .noSuchFileOrDirectory, "no such device node: the kernel needs CONFIG_IOMMUFD (try `modprobe iommufd`); on a machine without an IOMMU, run inside the test VM (Harness/run-in-vm.sh)", operation: .open)
        add(nil, .resourceBusy, "the device is open elsewhere: another process (a VMM) or its VFIO group holds it", operation: .openDevice)
        add(nil, .noSuchFileOrDirectory, "no such VFIO device: bind the PCI function to vfio-pci first", operation: .openDevice)
        add(nil, .permissionDenied, "no permission to open the VFIO device: run as root or give this user access to it", operation: .openDevice)
        add(nil, .permissionDenied, "no permission to open the device node: run as root, or give this user read-write access to it (a udev rule, or chmod/chown)", operation: .open)
        for r in [IoctlRequest.ioasMap, .ioasMapFile, .ioasCopy] {
            add(r, .fileExists, "the IOVA range overlaps an existing mapping")
            add(r, .noSpace, "no free IOVA range of that size is allowed")
            add(r, .invalidArgument, "the IOVA or length is not a multiple of the IOAS's alignment, the range hits a reserved region, or no access was asked for")
            add(r, .notSupported, "unknown map flags for this kernel")
            add(r, .overflow, "the IOVA or length is 2^64 - 1 or more, or IOVA + length passes 2^64")
        }
        add(.ioasUnmap, .noSuchFileOrDirectory, "the range maps nothing or cuts through a mapped area (areas wholly inside it may already be gone)")
        add(.ioasCopy, .noSuchFileOrDirectory, "the source range is not covered by back-to-back mapped areas")
        add(.ioasIOVARanges, .messageTooLong, "the output array is too small")
        for r in [IoctlRequest.hwptAlloc, .vfioDeviceAttachIOMMUFDPT, .viommuAlloc, .faultQueueAlloc, .hwptSetDirtyTracking] {
            add(r, .notSupported, "not supported by this IOMMU")
        }
        add(.hwptAlloc, .noSuchFileOrDirectory, "no bound device with that id (an unknown page-table id answers EINVAL instead)")
        add(.hwptAlloc, .invalidArgument, "the page-table id is unknown or of the wrong kind, the data type and length disagree, or the vIOMMU belongs to another IOMMU")
        add(.viommuAlloc, .invalidArgument, "the HWPT is not a nest parent (allocate it with the nest-parent flag), or the device's IOMMU takes no vIOMMU of that type")
        add(.option, .resourceBusy, "the option can change only while nothing is allocated in the iommufd (RLIMIT mode) or nothing is mapped in the IOAS (huge pages)")
        add(.option, .notPermitted, "changing the RLIMIT mode needs CAP_SYS_RESOURCE")
        add(.destroy, .resourceBusy, "the object is still in use")
        add(.destroy, .noSuchFileOrDirectory, "no object with that id")
        add(.vfioDeviceBindIOMMUFD, .notPermitted, "interrupt remapping is missing (iommufd.allow_unsafe_interrupts)")
        add(.vfioDeviceBindIOMMUFD, .invalidArgument, "the device is already bound through this or another open file")
        return h
    }()
}

extension IOMMUFDError.Operation {
    public static let open = Self(rawValue: "open")
    public static let close = Self(rawValue: "close")
    public static let adopt = Self(rawValue: "adopt")
    public static let destroy = Self(rawValue: "destroy")
    public static let allocateIOAS = Self(rawValue: "allocateIOAS")
    public static let map = Self(rawValue: "map")
    public static let mapFile = Self(rawValue: "mapFile")
    public static let unmap = Self(rawValue: "unmap")
    public static let unmapAll = Self(rawValue: "unmapAll")
    public static let copy = Self(rawValue: "copy")
    public static let iovaRanges = Self(rawValue: "iovaRanges")
    public static let allowIOVAs = Self(rawValue: "allowIOVAs")
    public static let changeProcess = Self(rawValue: "changeProcess")
    public static let rlimitMode = Self(rawValue: "rlimitMode")
    public static let setRLimitMode = Self(rawValue: "setRLimitMode")
    public static let hugePages = Self(rawValue: "hugePages")
    public static let setHugePages = Self(rawValue: "setHugePages")
    public static let vfioCompatibility = Self(rawValue: "vfioCompatibility")
    public static let setVFIOCompatibility = Self(rawValue: "setVFIOCompatibility")
    public static let physicalAddress = Self(rawValue: "physicalAddress")
    public static let allocateBuffer = Self(rawValue: "allocateBuffer")
}
