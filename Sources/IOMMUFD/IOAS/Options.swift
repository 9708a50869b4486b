import SystemPackage
import CIOMMUFD

/// How pinned memory is charged against `RLIMIT_MEMLOCK`.
public struct RLimitMode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    /// Charged to the user (the default).
    public static let perUser = Self(rawValue: 0)
    /// Charged to the process.
    public static let perProcess = Self(rawValue: 1)
    public var description: String {
        switch self {
        case .perUser: "perUser"
        case .perProcess: "perProcess"
        default: "RLimitMode(\(rawValue))"
        }
    }
}

/// The value of `IOMMU_OPTION_HUGE_PAGES` for an IOAS. Values this type does not name reach
/// the kernel unchanged (7.3 answers `EINVAL` above 1), so a newer value can be probed.
public struct HugePagesOption: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    /// Only pages of the system's size; also what the VFIO type1 compatibility mode sets.
    public static let disabled = Self(rawValue: 0)
    /// Contiguous memory may be mapped with huge IOMMU pages (the default).
    public static let enabled = Self(rawValue: 1)
    public var description: String {
        switch self {
        case .disabled: "disabled"
        case .enabled: "enabled"
        default: "HugePagesOption(\(rawValue))"
        }
    }
}

extension IOMMUFDContext {
    /// How this iommufd charges pinned memory.
    ///
    /// The corresponding ioctl is `IOMMU_OPTION` (`IOMMU_OPTION_RLIMIT_MODE`, get).
    public func rlimitMode() throws(IOMMUFDError) -> RLimitMode {
        RLimitMode(rawValue: try option(CIO_IOMMU_OPTION_RLIMIT_MODE, object: 0, set: nil, .rlimitMode))
    }

    /// Changes how pinned memory is charged; needs `CAP_SYS_RESOURCE` (`EPERM` otherwise).
    ///
    /// The corresponding ioctl is `IOMMU_OPTION` (`IOMMU_OPTION_RLIMIT_MODE`, set).
    public func setRLimitMode(_ mode: RLimitMode) throws(IOMMUFDError) {
        _ = try option(CIO_IOMMU_OPTION_RLIMIT_MODE, object: 0, set: mode.rawValue, .setRLimitMode)
    }

    /// Whether `ioas` may combine contiguous pages into huge IOMMU pages (the default).
    ///
    /// The corresponding ioctl is `IOMMU_OPTION` (`IOMMU_OPTION_HUGE_PAGES`, get).
    public func hugePages(in ioas: IOASID) throws(IOMMUFDError) -> Bool {
        try option(CIO_IOMMU_OPTION_HUGE_PAGES, object: ioas.rawValue, set: nil, .hugePages) != 0
    }

    /// Allows or forbids huge IOMMU pages in `ioas`; only while nothing is mapped.
    ///
    /// The corresponding ioctl is `IOMMU_OPTION` (`IOMMU_OPTION_HUGE_PAGES`, set).
    public func setHugePages(_ enabled: Bool, in ioas: IOASID) throws(IOMMUFDError) {
        try setHugePagesOption(enabled ? .enabled : .disabled, in: ioas)
    }

    /// The huge-pages option of `ioas` as the kernel reports it.
    ///
    /// - Throws: ``IOMMUFDError``; from the kernel `ENOENT` for an unknown IOAS.
    ///
    /// The corresponding ioctl is `IOMMU_OPTION` (`IOMMU_OPTION_HUGE_PAGES`, get).
    public func hugePagesOption(in ioas: IOASID) throws(IOMMUFDError) -> HugePagesOption {
        HugePagesOption(rawValue: try option(CIO_IOMMU_OPTION_HUGE_PAGES, object: ioas.rawValue, set: nil, .hugePages))
    }

    /// Sets the huge-pages option of `ioas`, passing the value to the kernel as given.
    ///
    /// - Throws: ``IOMMUFDError``; from the kernel `EINVAL` for a value it does not know, or
    ///   when disabling while a domain already holds mappings; `ENOENT` for an unknown IOAS.
    ///
    /// The corresponding ioctl is `IOMMU_OPTION` (`IOMMU_OPTION_HUGE_PAGES`, set).
    public func setHugePagesOption(_ value: HugePagesOption, in ioas: IOASID) throws(IOMMUFDError) {
        _ = try option(CIO_IOMMU_OPTION_HUGE_PAGES, object: ioas.rawValue, set: value.rawValue, .setHugePages)
    }

    private func option(
        _ id: UInt32, object: UInt32, set value: UInt64?, _ operation: IOMMUFDError.Operation
    ) throws(IOMMUFDError) -> UInt64 {
        var cmd = makeCommand(cio_iommu_option.self)
        cmd.option_id = id
        cmd.op = UInt16(value == nil ? CIO_IOMMU_OPTION_OP_GET : CIO_IOMMU_OPTION_OP_SET)
        cmd.object_id = object
        cmd.val64 = value ?? 0
        try ioctl(.option, &cmd, operation)
        return cmd.val64
    }

    /// The IOAS the VFIO container compatibility layer uses, if one is set (the kernel answers
    /// `ENODEV` when none is).
    ///
    /// The corresponding ioctl is `IOMMU_VFIO_IOAS` (`IOMMU_VFIO_IOAS_GET`).
    public func vfioCompatibilityIOAS() throws(IOMMUFDError) -> IOASID? {
        var cmd = makeCommand(cio_iommu_vfio_ioas.self)
        cmd.op = UInt16(CIO_IOMMU_VFIO_IOAS_GET)
        do { try ioctl(.vfioIOAS, &cmd, .vfioCompatibility) } catch where error.errno == .operationNotSupportedByDevice {
            return nil
        }
        return IOASID(cmd.ioas_id)
    }

    /// Sets (or with `nil` clears) the IOAS the VFIO container compatibility layer uses.
    ///
    /// The corresponding ioctl is `IOMMU_VFIO_IOAS` (`IOMMU_VFIO_IOAS_SET` / `_CLEAR`).
    public func setVFIOCompatibilityIOAS(_ ioas: IOASID?) throws(IOMMUFDError) {
        var cmd = makeCommand(cio_iommu_vfio_ioas.self)
        cmd.op = UInt16(ioas == nil ? CIO_IOMMU_VFIO_IOAS_CLEAR : CIO_IOMMU_VFIO_IOAS_SET)
        cmd.ioas_id = ioas?.rawValue ?? 0
        try ioctl(.vfioIOAS, &cmd, .setVFIOCompatibility)
    }
}
