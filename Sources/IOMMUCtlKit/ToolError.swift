import IOMMUFD

/// A failure of one `iommuctl` command, worded for the person running it: what went wrong,
/// what to do about it, and the process exit status.
public struct ToolError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Exit statuses of `iommuctl` (a few of them from BSD's sysexits).
    public enum ExitStatus: Int32, Sendable {
        /// The operation failed (a kernel or sysfs error, a device problem).
        case failure = 1
        /// `check` ran, and at least one device is refused.
        case refused = 3
        /// A malformed argument, such as a PCI address (`EX_USAGE`, as swift-argument-parser's own).
        case usage = 64
        /// A requirements file is malformed (`EX_DATAERR`).
        case badRequirements = 65
        /// No iommufd here, or the VM harness cannot be found (`EX_UNAVAILABLE`).
        case unavailable = 69
        /// Not allowed: needs root or access to a device node (`EX_NOPERM`).
        case permission = 77
    }

    public var message: String
    /// What the person can do, one suggestion a line.
    public var hints: [String]
    public var status: ExitStatus

    public init(_ message: String, hints: [String] = [], status: ExitStatus = .failure) {
        self.message = message
        self.hints = hints
        self.status = status
    }

    public var description: String {
        ([message] + hints.map { "  hint: " + $0 }).joined(separator: "\n")
    }

    /// The tool's wording of any error a command can meet, built on ``IOMMUFDError``'s own
    /// description (which names the path and carries the library's hints).
    public static func from(_ error: any Error, command: String = "COMMAND") -> ToolError {
        if let tool = error as? ToolError { return tool }
        if let file = error as? RequirementsFileError {
            return ToolError(file.description, status: .badRequirements)
        }
        guard let e = error as? IOMMUFDError else { return ToolError("\(error)") }
        switch (e.operation, e.errno) {
        case (.open, .noSuchFileOrDirectory?):
            return ToolError(e.description, hints: [
                "this kernel has no iommufd: it needs CONFIG_IOMMUFD=y (or the iommufd module: `modprobe iommufd`), "
                    + "an IOMMU driver (CONFIG_INTEL_IOMMU, CONFIG_AMD_IOMMU or CONFIG_ARM_SMMU_V3) enabled at boot "
                    + "(e.g. intel_iommu=on), and for VFIO devices CONFIG_VFIO_DEVICE_CDEV",
                "no IOMMU here? run the same command inside the bundled test VM: `iommuctl \(command) --vm`",
            ], status: .unavailable)
        case (.open, .permissionDenied?), (.open, .notPermitted?):
            return ToolError(e.description, hints: [
                "run iommuctl as root (sudo), or give your user read-write access to /dev/iommu, e.g. a udev rule "
                    + "`KERNEL==\"iommu\", GROUP=\"kvm\", MODE=\"0660\"` and membership of that group",
            ], status: .permission)
        case (.openDevice, .permissionDenied?), (.openDevice, .notPermitted?):
            return ToolError(e.description, hints: [
                "run iommuctl as root (sudo), or give your user access to the VFIO device node under /dev/vfio/devices",
            ], status: .permission)
        case (.openDevice, .resourceBusy?):
            return ToolError(e.description, hints: [
                "another process (a VMM) holds the device or its VFIO group; stop it, or pick another device",
            ])
        case (.bind, .invalidArgument?):
            return ToolError(e.description, hints: [
                "another process may have this device bound to its own iommufd (a running VMM); stop it first",
            ])
        case (.sysfs, .permissionDenied?), (.sysfs, .notPermitted?):
            return ToolError(e.description, hints: ["changing a device's driver writes sysfs: run iommuctl as root (sudo)"],
                             status: .permission)
        default:
            return ToolError(e.description)
        }
    }
}
