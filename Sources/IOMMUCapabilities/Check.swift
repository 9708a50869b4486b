/// One thing the guest was promised that this host cannot supply, with wanted and offered values.
public enum Mismatch: Hashable, Sendable, CustomStringConvertible {
    /// The requirements contradict themselves.
    case invalidRequirements(String)
    /// Hardware nesting needs the host IOMMU to be of the vIOMMU's architecture.
    case vendorMismatch(guest: VirtualIOMMUKind, host: IOMMUKind)
    /// The host cannot nest at all.
    case nestingUnsupported
    /// The host can nest, but not with the guest's table format.
    case pageTableFormatUnsupported(required: PageTableFormatKind, offered: [PageTableFormatKind])
    /// The nested stage does not accept every page size the guest may use.
    case nestedPageSizes(required: PageSizeSet, offered: PageSizeSet)
    /// The nested stage's input is narrower than the guest's IOVA width.
    case nestedAddressWidth(required: Int, offered: Int)
    /// The mirror stage's usable IOVA width (`offered`) cannot hold the guest's IOVAs. `required`
    /// is the guest's IOVA width; for a sign-extended guest table only its lower half
    /// (``GuestRequirements/mirroredAddressBits``, one bit less) had to fit.
    case addressWidth(required: Int, offered: Int)
    /// The mirror stage (identity) or the nest parent (nesting) cannot hold the guest-physical
    /// addresses it must translate.
    case guestPhysicalAddressWidth(required: Int, offered: Int)
    /// The host's smallest page is larger than the guest's smallest page (`nil`: host has none).
    case pageGranule(required: PageSize, offered: PageSize?)
    case pasidBits(required: Int, offered: Int)
    case pri
    case ats
    case dirtyTracking
    /// Hardware walks of guest tables would not be coherent as the guest was told.
    case coherency

    public var description: String {
        switch self {
        case .invalidRequirements(let s): "invalid requirements: \(s)"
        case .vendorMismatch(let g, let h): "guest vIOMMU \(g) cannot be nested on a \(h) host"
        case .nestingUnsupported: "host IOMMU has no nesting"
        case .pageTableFormatUnsupported(let r, let o): "host cannot walk \(r) (offers \(o.map(\.description)))"
        case .nestedPageSizes(let r, let o): "nested page sizes \(r) not within \(o)"
        case .nestedAddressWidth(let r, let o): "nested input width \(r) > \(o) bits"
        case .addressWidth(let r, let o): "IOVA width \(r) > host \(o) bits"
        case .guestPhysicalAddressWidth(let r, let o): "guest-physical width \(r) > host \(o) bits"
        case .pageGranule(let r, let o): "guest page \(r) smaller than host page \(o?.description ?? "none")"
        case .pasidBits(let r, let o): "PASID width \(r) > host \(o) bits"
        case .pri: "host has no PRI"
        case .ats: "host has no ATS"
        case .dirtyTracking: "host has no dirty tracking"
        case .coherency: "host table walks are not coherent"
        }
    }
}

/// Why a device is served by software mirroring rather than hardware nesting.
public enum MirroringReason: Hashable, Sendable {
    /// The requirements forbid hardware nesting.
    case nestingForbidden
    /// The vIOMMU has no guest page table (virtio-iommu): its requests are mapped directly.
    case requestBasedIOMMU
    /// Hardware nesting was preferred but these mismatches rule it out.
    case nestingUnavailable([Mismatch])
}

/// How the VMM serves one device's DMA.
public enum Plan: Hashable, Sendable {
    /// The host walks the guest's tables (`format`) over the kernel-managed nest parent.
    case hardwareNesting(format: PageTableFormatKind)
    /// A mirror-stage IOAS that the VMM fills by walking the guest's tables (or serving its requests).
    case softwareMirroring(reason: MirroringReason)
    /// No vIOMMU: a mirror-stage IOAS maps guest-physical memory at IOVA = guest-physical address.
    case identity
    /// The device cannot be given to this guest.
    case refuse(reasons: [Mismatch])

    /// The strategy without its payload, for grouping.
    public var strategy: Strategy {
        switch self {
        case .hardwareNesting: .hardwareNesting
        case .softwareMirroring: .softwareMirroring
        case .identity: .identity
        case .refuse: .refuse
        }
    }

    public enum Strategy: String, Hashable, Sendable { case hardwareNesting, softwareMirroring, identity, refuse }
}

/// The result of checking one device's host IOMMU against the guest's requirements.
public struct CompatibilityReport: Hashable, Sendable {
    public var plan: Plan
    /// What stands in the way of hardware nesting; `nil` when nesting was not considered.
    public var nestingMismatches: [Mismatch]?
    /// What stands in the way of a mirror-stage IOAS (mirroring or identity); `nil` when not considered.
    public var kernelManagedMismatches: [Mismatch]?
    /// Every mismatch found, each once, nesting ones first.
    public var mismatches: [Mismatch] {
        var seen: [Mismatch] = []
        for m in (nestingMismatches ?? []) + (kernelManagedMismatches ?? []) where !seen.contains(m) { seen.append(m) }
        return seen
    }
}

/// Checks what `host` offers against what the guest was promised, and picks a plan.
///
/// Rules:
/// - Device-visible features the VMM cannot emulate must come from the host whatever the plan:
///   PASID width, PRI, ATS, and dirty tracking (from the stage that plan uses).
/// - Hardware nesting also needs: the host of the vIOMMU's architecture, nesting, the guest's
///   table format among the host's nested formats, every guest page size accepted by that
///   format, the guest IOVA width within the format's input width, the guest-physical width
///   within the nest parent's (``HostIOMMUCapabilities/nestParentStage``) input width, dirty
///   tracking in the nest parent if the guest needs it, and coherent walks if the guest was told so.
/// - Software mirroring (and identity without a vIOMMU) uses the mirror stage
///   (``HostIOMMUCapabilities/mirrorStage``, or ``HostIOMMUCapabilities/dirtyTrackingStage`` when the
///   guest needs dirty tracking) and also needs: its usable IOVA width to cover the guest's
///   ``GuestRequirements/mirroredAddressBits`` (the lower half of a sign-extended guest table;
///   guest-physical width for identity), and its smallest page no larger than the guest's
///   smallest page (larger guest pages are split). Upper-half (sign-extended or Arm TTBR1)
///   guest IOVAs are not mirrored.
/// - Policy `required`: nesting or refuse. `preferred`: nesting, else mirroring, else refuse with
///   every mismatch of both. `forbidden`: mirroring or refuse. virtio-iommu always mirrors; no
///   vIOMMU is identity. Inconsistent requirements refuse.
///
/// Pure and cheap: no kernel calls.
public func check(_ requirements: GuestRequirements, _ host: HostIOMMUCapabilities) -> CompatibilityReport {
    let r = requirements
    let invalid = r.inconsistencies.map(Mismatch.invalidRequirements)
    if !invalid.isEmpty { return CompatibilityReport(plan: .refuse(reasons: invalid)) }

    var common: [Mismatch] = []
    if r.pasidBits > host.pasidBits { common.append(.pasidBits(required: r.pasidBits, offered: host.pasidBits)) }
    if r.pri && !host.pri { common.append(.pri) }
    if r.ats && !host.ats { common.append(.ats) }

    // A kernel-managed IOAS in the mirror stage: mirroring (guest IOVA) or identity (guest-physical).
    var managed = common
    var stage = host.mirrorStage
    if r.dirtyTracking {
        if let dirty = host.dirtyTrackingStage { stage = dirty } else { managed.append(.dirtyTracking) }
    }
    if r.viommu == .none {
        if r.guestPhysicalAddressBits > stage.inputAddressBits {
            managed.append(.guestPhysicalAddressWidth(required: r.guestPhysicalAddressBits, offered: stage.inputAddressBits))
        }
    } else if r.mirroredAddressBits > stage.inputAddressBits {
        managed.append(.addressWidth(required: r.addressBits, offered: stage.inputAddressBits))
    }
    if let guestPage = r.pageSizes.smallest, (stage.pageSizes.smallest.map { $0 > guestPage } ?? true) {
        managed.append(.pageGranule(required: guestPage, offered: stage.pageSizes.smallest))
    }

    switch r.viommu {
    case .none:
        return CompatibilityReport(plan: managed.isEmpty ? .identity : .refuse(reasons: managed),
                                   kernelManagedMismatches: managed)
    case .virtio:
        return CompatibilityReport(plan: managed.isEmpty ? .softwareMirroring(reason: .requestBasedIOMMU)
                                       : .refuse(reasons: managed),
                                   kernelManagedMismatches: managed)
    default:
        break
    }

    var nestingOnly: [Mismatch] = []
    if r.dirtyTracking && host.nestParentStage?.dirtyTracking != true { nestingOnly.append(.dirtyTracking) }
    if let want = r.viommu.hostKind, want != host.kind {
        nestingOnly.append(.vendorMismatch(guest: r.viommu, host: host.kind))
    }
    if !host.nesting {
        nestingOnly.append(.nestingUnsupported)
    } else if let format = r.format {
        if let nested = host.nestedStages.first(where: { $0.format == format }) {
            if !r.pageSizes.isSubset(of: nested.pageSizes) {
                nestingOnly.append(.nestedPageSizes(required: r.pageSizes, offered: nested.pageSizes))
            }
            if r.addressBits > nested.inputAddressBits {
                nestingOnly.append(.nestedAddressWidth(required: r.addressBits, offered: nested.inputAddressBits))
            }
        } else {
            nestingOnly.append(.pageTableFormatUnsupported(required: format, offered: host.nestedStages.map(\.format)))
        }
    }
    if let parent = host.nestParentStage, r.guestPhysicalAddressBits > parent.inputAddressBits {
        nestingOnly.append(.guestPhysicalAddressWidth(required: r.guestPhysicalAddressBits, offered: parent.inputAddressBits))
    }
    if r.coherentWalks && !host.coherent { nestingOnly.append(.coherency) }
    let nesting = common + nestingOnly

    switch r.nesting {
    case .required:
        return CompatibilityReport(
            plan: nesting.isEmpty ? .hardwareNesting(format: r.format!) : .refuse(reasons: nesting),
            nestingMismatches: nesting)
    case .forbidden:
        return CompatibilityReport(
            plan: managed.isEmpty ? .softwareMirroring(reason: .nestingForbidden) : .refuse(reasons: managed),
            kernelManagedMismatches: managed)
    case .preferred:
        var report = CompatibilityReport(plan: .identity, nestingMismatches: nesting, kernelManagedMismatches: managed)
        report.plan = if nesting.isEmpty {
            .hardwareNesting(format: r.format!)
        } else if managed.isEmpty {
            .softwareMirroring(reason: .nestingUnavailable(nestingOnly))
        } else {
            .refuse(reasons: report.mismatches)
        }
        return report
    }
}

extension MirroringReason: CustomStringConvertible {
    public var description: String {
        switch self {
        case .nestingForbidden: "hardware nesting forbidden"
        case .requestBasedIOMMU: "the vIOMMU has no page table to walk"
        case .nestingUnavailable(let m): "no hardware nesting: " + m.map(\.description).joined(separator: "; ")
        }
    }
}

extension Plan: CustomStringConvertible {
    public var description: String {
        switch self {
        case .hardwareNesting(let format): "hardware nesting of \(format)"
        case .softwareMirroring(let reason): "software mirroring (\(reason))"
        case .identity: "identity mapping of guest-physical memory"
        case .refuse(let reasons): "refuse: " + reasons.map(\.description).joined(separator: "; ")
        }
    }
}
