public import IOMMUCapabilities

/// The requirements `check` applied, as it reports them.
public struct RequirementsEntry: Codable, Hashable, Sendable {
    /// As the requirements file spells it (`intel-vtd`).
    public var viommu: String
    public var format: String?
    public var addressBits: Int
    public var mirroredAddressBits: Int
    public var guestPhysicalAddressBits: Int
    public var pageSizes: [String]
    public var pasidBits: Int
    public var pri: Bool
    public var ats: Bool
    public var coherentWalks: Bool
    public var nesting: String
    public var dirtyTracking: Bool
    public var mixing: String

    public init(_ file: RequirementsFile) {
        let r = file.requirements
        viommu = switch r.viommu {
        case .none: "none"
        case .intelVTd: "intel-vtd"
        case .armSMMUv3: "arm-smmuv3"
        case .amd: "amd"
        case .virtio: "virtio"
        }
        format = r.format.map(String.init(describing:))
        addressBits = r.addressBits
        mirroredAddressBits = r.mirroredAddressBits
        guestPhysicalAddressBits = r.guestPhysicalAddressBits
        pageSizes = r.pageSizes.sizes.map(\.description)
        pasidBits = r.pasidBits
        pri = r.pri
        ats = r.ats
        coherentWalks = r.coherentWalks
        nesting = r.nesting.rawValue
        dirtyTracking = r.dirtyTracking
        mixing = file.mixing.rawValue
    }
}

/// One device's plan.
public struct DevicePlanEntry: Codable, Hashable, Sendable {
    public var address: String
    /// The host IOMMU's kind (`intel-vtd`).
    public var iommu: String
    /// `hardwareNesting`, `softwareMirroring`, `identity` or `refuse`.
    public var strategy: String
    /// The plan in words, with the reason for mirroring or refusing.
    public var plan: String
    /// Every mismatch the check found (for a plan that is not refused: what ruled out nesting).
    public var mismatches: [String]
    /// Where the planner put the device (`starts group 0`, `joins group 0`, `refused: ...`).
    public var assignment: String
    /// The group it is in; `nil` when refused.
    public var group: Int?
}

/// Devices sharing one IOAS and one plan.
public struct DeviceGroupEntry: Codable, Hashable, Sendable {
    public var index: Int
    public var strategy: String
    public var plan: String
    public var iommu: String
    public var devices: [String]
}

/// Everything `iommuctl check` found.
public struct CheckReport: Codable, Hashable, Sendable {
    public var requirementsFile: String
    public var requirements: RequirementsEntry
    public var devices: [DevicePlanEntry]
    public var groups: [DeviceGroupEntry]
    /// How many devices were refused.
    public var refused: Int
}

/// Checks `file`'s requirements against the host IOMMU of each named device, in order, and
/// groups them with ``DevicePlanner``.
///
/// `hosts` are the devices' capabilities, as ``readDeviceIOMMU(cdev:iommufdPath:)`` reads them;
/// pure otherwise, so it can be tested with capabilities built from register values.
public func planDevices(_ file: RequirementsFile, name: String, hosts: [(address: String, host: HostIOMMUCapabilities)]) -> CheckReport {
    var planner = DevicePlanner(requirements: file.requirements, mixing: file.mixing)
    var devices: [DevicePlanEntry] = []
    for (address, host) in hosts {
        let result = check(file.requirements, host)
        let assignment = planner.add(device: address, host: host)
        let group: Int? = switch assignment {
        case .joined(let g), .newGroup(let g, _): g
        case .refused, .refusedDifferentHost: nil
        }
        let strategy = group == nil ? Plan.Strategy.refuse : result.plan.strategy
        devices.append(DevicePlanEntry(
            address: address, iommu: host.kind.rawValue, strategy: strategy.rawValue,
            plan: group == nil && result.plan.strategy != .refuse ? "refuse: \(assignment)" : result.plan.description,
            mismatches: result.mismatches.map(\.description), assignment: assignment.description, group: group))
    }
    let groups = planner.groups.map {
        DeviceGroupEntry(index: $0.index, strategy: $0.plan.strategy.rawValue, plan: $0.plan.description,
                         iommu: $0.host.kind.rawValue, devices: $0.devices)
    }
    return CheckReport(requirementsFile: name, requirements: RequirementsEntry(file), devices: devices, groups: groups,
                       refused: devices.filter { $0.group == nil }.count)
}
