import SystemPackage
import CIOMMUFD

/// Which iommufd ioctls the running kernel knows, probed once.
public struct KernelFeatures: Hashable, Sendable, CustomStringConvertible {
    /// The requests the kernel answered as known.
    public let supported: Set<IoctlRequest>

    public func supports(_ request: IoctlRequest) -> Bool { supported.contains(request) }

    public var description: String {
        IoctlRequest.iommufdRequests.map { "\($0): \(supports($0) ? "yes" : "no")" }.joined(separator: "\n")
    }
}

extension IOMMUFDContext {
    /// Whether the kernel knows `request`, without side effects.
    ///
    /// The probe passes an argument whose `size` is 0: a kernel that knows the ioctl refuses the
    /// size with `EINVAL` before doing anything, one that does not answers `ENOTTY`. (Newer
    /// fields are probed by the kernel's size-extension rule: a struct larger than the kernel's
    /// is accepted only when the extra bytes are zero, `E2BIG` otherwise.)
    public func supports(_ request: IoctlRequest) -> Bool {
        var header: UInt32 = 0
        switch withUnsafeMutableBytes(of: &header, { kernel.ioctl(descriptor, request, $0.baseAddress) }) {
        case .failure(let e): return e == .invalidArgument
        case .success: return true
        }
    }

    /// Probes every iommufd request of the 7.3 uAPI.
    public func probeFeatures() -> KernelFeatures {
        KernelFeatures(supported: Set(IoctlRequest.iommufdRequests.filter { supports($0) }))
    }
}
