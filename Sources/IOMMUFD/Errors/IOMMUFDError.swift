public import SystemPackage

/// Every failure of this package: which operation, which kernel call, and why.
///
/// Failures the kernel reports carry its `errno` (``errno``) and the ioctl (``request``).
/// Bad arguments that can be seen without the kernel (zero or overflowing ranges, misaligned
/// addresses, empty access) are refused before any syscall, with ``reason`` saying why and no
/// `errno`. Nothing in the kernel changed when such a check fails.
public struct IOMMUFDError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The operation that failed, named after the public call.
    public struct Operation: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }
    }

    /// Why the operation failed.
    public enum Reason: Hashable, Sendable {
        /// The kernel refused the call with this `errno`.
        case kernel(Errno)
        /// A range argument was empty, overflowed 2^64 or was misaligned; checked before the call.
        case invalidRange(AddressRangeError)
        /// Another argument was unusable; checked before the call.
        case invalidArgument(String)
        /// A file descriptor handed in is not an iommufd (the kernel answered `ENOTTY`).
        case notAnIOMMUFD
        /// The kernel answered, but not as its contract says.
        case unexpectedResult(String)
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

    /// The kernel's error number, when the kernel refused the call.
    public var errno: Errno? {
        if case .kernel(let e) = reason { e } else { nil }
    }

    /// The kernel or this IOMMU lacks the feature: `EOPNOTSUPP`, or `ENOTTY` for an unknown ioctl.
    public var isNotSupported: Bool {
        guard let e = errno else { return false }
        return e.rawValue == Errno.notSupported.rawValue || e == .inappropriateIOCTLForDevice
    }

    public var description: String {
        let what = request.map { "\($0) (\(operation))" } ?? "\(operation)"
        switch reason {
        case .kernel(let e):
            let hint = Self.hints[HintKey(request: request, errno: e.rawValue)].map { ": " + $0 } ?? ""
            return "\(what) failed: \(e) (errno \(e.rawValue))\(hint)"
        case .invalidRange(let r): return "\(what) refused before the call: \(r)"
        case .invalidArgument(let s): return "\(what) refused before the call: \(s)"
        case .notAnIOMMUFD: return "\(what) failed: the file descriptor is not an iommufd"
        case .unexpectedResult(let s): return "\(what): unexpected kernel answer: \(s)"
        }
    }

    private struct HintKey: Hashable {
        var request: IoctlRequest?
        var errno: CInt
    }

    /// What common kernel answers mean for a given ioctl.
    private static let hints: [HintKey: String] = {
        var h: [HintKey: String] = [:]
        func add(_ r: IoctlRequest?, _ e: Errno, _ s: String) { h[HintKey(request: r, errno: e.rawValue)] = s }
        for r in [IoctlRequest.ioasMap, .ioasMapFile, .ioasCopy] {
            add(r, .fileExists, "the IOVA range overlaps an existing mapping")
            add(r, .noSpace, "no free IOVA range of that size is allowed")
        }
        add(.ioasUnmap, .noSuchFileOrDirectory, "the range maps nothing or cuts through a mapped area (areas wholly inside it may already be gone)")
        add(.ioasCopy, .noSuchFileOrDirectory, "the source range is not covered by back-to-back mapped areas")
        add(.ioasIOVARanges, .messageTooLong, "the output array is too small")
        for r in [IoctlRequest.hwptAlloc, .vfioDeviceAttachIOMMUFDPT, .viommuAlloc, .faultQueueAlloc, .hwptSetDirtyTracking] {
            add(r, .notSupported, "not supported by this IOMMU")
        }
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
    public static let copy = Self(rawValue: "copy")
    public static let iovaRanges = Self(rawValue: "iovaRanges")
    public static let allowIOVAs = Self(rawValue: "allowIOVAs")
    public static let changeProcess = Self(rawValue: "changeProcess")
    public static let option = Self(rawValue: "option")
    public static let vfioCompatibility = Self(rawValue: "vfioCompatibility")
    public static let physicalAddress = Self(rawValue: "physicalAddress")
    public static let allocateBuffer = Self(rawValue: "allocateBuffer")
}
