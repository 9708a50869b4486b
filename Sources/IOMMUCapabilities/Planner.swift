/// A property of a device's host IOMMU that differs from the group's first device, with both values.
public enum HostDifference: Hashable, Sendable, CustomStringConvertible {
    case kind(first: IOMMUKind, device: IOMMUKind)
    case strategy(first: Plan.Strategy, device: Plan.Strategy)
    case nestedStages(first: [NestedStageSupport], device: [NestedStageSupport])
    case pageSizes(first: PageSizeSet, device: PageSizeSet)
    case inputAddressBits(first: Int, device: Int)
    case pasidBits(first: Int, device: Int)
    case pri(first: Bool, device: Bool)
    case ats(first: Bool, device: Bool)
    case dirtyTracking(first: Bool, device: Bool)

    public var description: String {
        switch self {
        case .kind(let a, let b): "IOMMU kind \(b) differs from \(a)"
        case .strategy(let a, let b): "plan \(b.rawValue) differs from \(a.rawValue)"
        case .nestedStages(let a, let b): "nested formats \(b) differ from \(a)"
        case .pageSizes(let a, let b): "page sizes \(b) differ from \(a)"
        case .inputAddressBits(let a, let b): "IOVA width \(b) differs from \(a)"
        case .pasidBits(let a, let b): "PASID width \(b) differs from \(a)"
        case .pri(let a, let b): "PRI \(b) differs from \(a)"
        case .ats(let a, let b): "ATS \(b) differs from \(a)"
        case .dirtyTracking(let a, let b): "dirty tracking \(b) differs from \(a)"
        }
    }

    /// The plan-relevant properties in which `device` differs from `first`. Nested stages count only
    /// when both are planned for hardware nesting.
    static func between(
        _ first: HostIOMMUCapabilities, _ firstPlan: Plan.Strategy, _ device: HostIOMMUCapabilities, _ devicePlan: Plan.Strategy
    ) -> [HostDifference] {
        var out: [HostDifference] = []
        if first.kind != device.kind { out.append(.kind(first: first.kind, device: device.kind)) }
        if firstPlan != devicePlan { out.append(.strategy(first: firstPlan, device: devicePlan)) }
        if firstPlan == .hardwareNesting, devicePlan == .hardwareNesting, first.nestedStages != device.nestedStages {
            out.append(.nestedStages(first: first.nestedStages, device: device.nestedStages))
        }
        if first.pageSizes != device.pageSizes { out.append(.pageSizes(first: first.pageSizes, device: device.pageSizes)) }
        if first.inputAddressBits != device.inputAddressBits {
            out.append(.inputAddressBits(first: first.inputAddressBits, device: device.inputAddressBits))
        }
        if first.pasidBits != device.pasidBits { out.append(.pasidBits(first: first.pasidBits, device: device.pasidBits)) }
        if first.pri != device.pri { out.append(.pri(first: first.pri, device: device.pri)) }
        if first.ats != device.ats { out.append(.ats(first: first.ats, device: device.ats)) }
        if first.dirtyTracking != device.dirtyTracking {
            out.append(.dirtyTracking(first: first.dirtyTracking, device: device.dirtyTracking))
        }
        return out
    }
}

/// Assigns a guest's devices, in hot-plug order, to groups that share one IOAS and one plan.
///
/// Rules:
/// - Each device is first checked on its own with ``check(_:_:)``; a refused device joins nothing.
/// - A device joins an existing group when its host IOMMU matches that group's first device in
///   every plan-relevant property (kind, plan strategy, nested formats when nesting, mirror-stage
///   page sizes and IOVA width, PASID width, PRI, ATS, dirty tracking).
/// - Otherwise the device differs, and ``MixingPolicy`` decides: `separateGroups` opens a new group
///   (its own IOAS and plan), `refuse` refuses it. Either way the differences are reported against
///   the first group's first device.
///
/// Groups are by properties, not by IOMMU instance: devices behind two host IOMMUs that match
/// (two VT-d units of one machine, say) share one IOAS, and the kernel gives each IOMMU its own
/// domain, filled from the IOAS's one pin of guest memory, so a mirror maps each area once. A
/// device needs an IOAS of its own when the properties differ (an IOVA width or aperture the
/// others lack: one IOAS offers only the ranges all its devices can use; another page-table
/// format for nesting), and when the guest must see it behind a separate vIOMMU (its own
/// guest-visible topology and invalidations), which is the caller's choice, not the planner's.
public struct DevicePlanner: Sendable {
    /// What to do with a device whose host IOMMU differs from the first device's.
    public enum MixingPolicy: String, Hashable, Sendable {
        /// Give it its own IOAS and plan.
        case separateGroups
        /// Refuse it (hot-plug fails).
        case refuse
    }

    /// Devices sharing one IOAS and one plan.
    public struct Group: Hashable, Sendable {
        /// Position of the group in ``DevicePlanner/groups``.
        public let index: Int
        public let plan: Plan
        /// The host IOMMU of the group's first device.
        public let host: HostIOMMUCapabilities
        public internal(set) var devices: [String]
    }

    /// Where one device went.
    public enum Assignment: Hashable, Sendable {
        /// Joined the existing group at `group`.
        case joined(group: Int)
        /// Opened the group at `group`; `differences` from the first group (empty for the first group).
        case newGroup(group: Int, differences: [HostDifference])
        /// Refused: the host cannot supply the requirements.
        case refused(reasons: [Mismatch])
        /// Refused under ``MixingPolicy/refuse``: its host IOMMU differs from the first device's.
        case refusedDifferentHost(differences: [HostDifference])
    }

    public let requirements: GuestRequirements
    public let mixing: MixingPolicy
    public private(set) var groups: [Group] = []

    public init(requirements: GuestRequirements, mixing: MixingPolicy = .separateGroups) {
        self.requirements = requirements
        self.mixing = mixing
    }

    /// Checks and places one device; cost is one ``check(_:_:)`` plus one comparison per group.
    public mutating func add(device: String, host: HostIOMMUCapabilities) -> Assignment {
        let plan = check(requirements, host).plan
        if case .refuse(let reasons) = plan { return .refused(reasons: reasons) }
        for g in groups where HostDifference.between(g.host, g.plan.strategy, host, plan.strategy).isEmpty {
            groups[g.index].devices.append(device)
            return .joined(group: g.index)
        }
        let differences = groups.first.map { HostDifference.between($0.host, $0.plan.strategy, host, plan.strategy) } ?? []
        if !groups.isEmpty && mixing == .refuse { return .refusedDifferentHost(differences: differences) }
        groups.append(Group(index: groups.count, plan: plan, host: host, devices: [device]))
        return .newGroup(group: groups.count - 1, differences: differences)
    }
}

extension DevicePlanner.Assignment: CustomStringConvertible {
    public var description: String {
        func list(_ d: [HostDifference]) -> String { d.map(\.description).joined(separator: "; ") }
        switch self {
        case .joined(let g): return "joins group \(g)"
        case .newGroup(let g, let d): return d.isEmpty ? "starts group \(g)" : "starts group \(g) (\(list(d)))"
        case .refused(let reasons): return "refused: " + reasons.map(\.description).joined(separator: "; ")
        case .refusedDifferentHost(let d): return "refused, its IOMMU differs: \(list(d))"
        }
    }
}
