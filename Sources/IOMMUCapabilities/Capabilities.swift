/// Which IOMMU architecture a host or guest IOMMU follows; an open set.
public struct IOMMUKind: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }

    public static let intelVTd = Self(rawValue: "intel-vtd")
    public static let armSMMUv3 = Self(rawValue: "arm-smmuv3")
    public static let amd = Self(rawValue: "amd-vi")
    public static let virtio = Self(rawValue: "virtio-iommu")
    /// The kernel's selftest mock IOMMU.
    public static let selftest = Self(rawValue: "selftest")
    /// The kernel reported no data this module can decode.
    public static let unknown = Self(rawValue: "unknown")

    public var description: String { rawValue }
}

/// An IO page-table format: what a table walker must understand to read it.
public enum PageTableFormatKind: Hashable, Sendable, CustomStringConvertible {
    /// x86-64 long-mode paging with 4 or 5 levels: the VT-d first stage and AMD v2 (guest) tables.
    case x86_64(levels: Int)
    /// VT-d second-stage tables (legacy-mode remapping) with 3, 4 or 5 levels.
    case vtdSecondStage(levels: Int)
    /// Arm VMSAv8-64 stage-1 tables with a 4, 16 or 64 KiB granule.
    case armStage1(granule: PageSize)
    /// Arm VMSAv8-64 stage-2 tables.
    case armStage2(granule: PageSize)
    /// AMD v1 (host) tables.
    case amdV1(levels: Int)
    /// The kernel selftest's mock format (`IOMMU_HWPT_DATA_SELFTEST`).
    case selftestMock

    public var description: String {
        switch self {
        case .x86_64(let l): "x86-64 \(l)-level"
        case .vtdSecondStage(let l): "VT-d second-stage \(l)-level"
        case .armStage1(let g): "VMSAv8-64 stage 1 \(g) granule"
        case .armStage2(let g): "VMSAv8-64 stage 2 \(g) granule"
        case .amdV1(let l): "AMD v1 \(l)-level"
        case .selftestMock: "selftest mock"
        }
    }
}

/// One format the host can walk in hardware as the guest-owned first stage of a nested translation.
public struct NestedStageSupport: Hashable, Sendable, CustomStringConvertible {
    public var format: PageTableFormatKind
    /// Page sizes the hardware accepts in that format.
    public var pageSizes: PageSizeSet
    /// Widest input (guest IOVA) address the format covers on this hardware.
    public var inputAddressBits: Int

    public init(format: PageTableFormatKind, pageSizes: PageSizeSet, inputAddressBits: Int) {
        self.format = format
        self.pageSizes = pageSizes
        self.inputAddressBits = inputAddressBits
    }

    public var description: String { "\(format) \(pageSizes) \(inputAddressBits)-bit" }
}

/// One stage of translation that the kernel owns: the page table behind an IOAS-backed HWPT.
public struct KernelManagedStage: Hashable, Sendable, CustomStringConvertible {
    /// The table format; `nil` when the registers do not say (or the kernel has no such stage).
    public var format: PageTableFormatKind?
    /// Page sizes the kernel can map in this stage.
    public var pageSizes: PageSizeSet
    /// Usable IOVA width in bits: IOVAs `0 ..< 2^inputAddressBits` can be mapped. For a
    /// sign-extended table (``signExtended``) this is the lower half only, one bit less than the
    /// table's virtual-address width, since an IOAS holds zero-extended IOVAs.
    public var inputAddressBits: Int
    /// The table is sign-extended (x86-64 canonical addresses); its upper half is not usable.
    public var signExtended: Bool
    /// A domain of this stage can be allocated with `IOMMU_HWPT_ALLOC_DIRTY_TRACKING`.
    public var dirtyTracking: Bool

    public init(
        format: PageTableFormatKind?, pageSizes: PageSizeSet, inputAddressBits: Int, signExtended: Bool = false,
        dirtyTracking: Bool = false
    ) {
        self.format = format
        self.pageSizes = pageSizes
        self.inputAddressBits = inputAddressBits
        self.signExtended = signExtended
        self.dirtyTracking = dirtyTracking
    }

    /// No usable stage: no format, no page size, zero width.
    public static let none = KernelManagedStage(format: nil, pageSizes: [], inputAddressBits: 0)

    public var description: String {
        "\(format.map(String.init(describing:)) ?? "unknown format") \(pageSizes) \(inputAddressBits)-bit"
            + (dirtyTracking ? " dirty-tracking" : "")
    }
}

/// What the host IOMMU behind one device offers, vendor-neutral.
///
/// Built from one vendor register set (``init(vtd:)``, ``init(smmu:hostPageSize:)``,
/// ``init(amd:)``) or from a whole `IOMMU_GET_HW_INFO` answer (``init(report:hostPageSize:)``).
/// Every field is a plain stored value, so a caller can narrow it (for example the IOVA width to
/// what `IOMMU_IOAS_IOVA_RANGES` reports).
///
/// The kernel can own up to three different stages for one device, and they need not agree:
/// - ``mirrorStage``: the plain paging domain (`IOMMU_HWPT_ALLOC` without flags, or the automatic
///   domain of an IOAS attach) that serves software mirroring and identity mapping;
/// - ``dirtyTrackingStage``: the domain the kernel gives when dirty tracking is requested, which
///   on VT-d can be another stage than the plain one;
/// - ``nestParentStage``: the `IOMMU_HWPT_ALLOC_NEST_PARENT` domain under a hardware-nested guest stage.
public struct HostIOMMUCapabilities: Hashable, Sendable {
    public var kind: IOMMUKind
    /// Formats usable as a hardware-walked, guest-owned first stage; empty without nesting.
    public var nestedStages: [NestedStageSupport]
    /// The plain paging domain: what a software-mirrored or identity-mapped IOAS is translated by.
    public var mirrorStage: KernelManagedStage
    /// The domain allocated with `IOMMU_HWPT_ALLOC_DIRTY_TRACKING` for a mirrored or identity IOAS;
    /// `nil` without dirty tracking.
    public var dirtyTrackingStage: KernelManagedStage?
    /// The nesting parent (`IOMMU_HWPT_ALLOC_NEST_PARENT`); `nil` without nesting. Its input is the
    /// guest-physical address space.
    public var nestParentStage: KernelManagedStage?
    /// Output (physical) address width in bits; `nil` when the registers do not say.
    public var outputAddressBits: Int?
    /// PASID width in bits; 0 without PASID.
    public var pasidBits: Int
    /// PCIe page requests (PRI) can be served.
    public var pri: Bool
    /// PCIe ATS can be used.
    public var ats: Bool
    /// Hardware walks of (nested) guest tables snoop CPU caches.
    public var coherent: Bool

    /// Page sizes of the mirror stage (``mirrorStage``).
    public var pageSizes: PageSizeSet {
        get { mirrorStage.pageSizes }
        set { mirrorStage.pageSizes = newValue }
    }

    /// Usable IOVA width of the mirror stage (``mirrorStage``) in bits.
    public var inputAddressBits: Int {
        get { mirrorStage.inputAddressBits }
        set { mirrorStage.inputAddressBits = newValue }
    }

    /// Whether a mirror IOAS can track dirty pages (``dirtyTrackingStage`` exists).
    ///
    /// Setting `false` removes dirty tracking from every stage. Setting `true` where no stage has
    /// it (the kernel says so, the registers do not say where) makes the mirror stage dirty-tracking.
    public var dirtyTracking: Bool {
        get { dirtyTrackingStage != nil }
        set {
            if newValue {
                if dirtyTrackingStage == nil {
                    mirrorStage.dirtyTracking = true
                    dirtyTrackingStage = mirrorStage
                }
            } else {
                dirtyTrackingStage = nil
                mirrorStage.dirtyTracking = false
                nestParentStage?.dirtyTracking = false
            }
        }
    }

    /// Whether hardware nesting is available: a nested format and a nesting parent.
    public var nesting: Bool { !nestedStages.isEmpty && nestParentStage != nil }

    public init(
        kind: IOMMUKind, nestedStages: [NestedStageSupport] = [], mirrorStage: KernelManagedStage,
        dirtyTrackingStage: KernelManagedStage? = nil, nestParentStage: KernelManagedStage? = nil,
        outputAddressBits: Int? = nil, pasidBits: Int = 0, pri: Bool = false, ats: Bool = false, coherent: Bool = true
    ) {
        self.kind = kind
        self.nestedStages = nestedStages
        self.mirrorStage = mirrorStage
        self.dirtyTrackingStage = dirtyTrackingStage
        self.nestParentStage = nestParentStage
        self.outputAddressBits = outputAddressBits
        self.pasidBits = pasidBits
        self.pri = pri
        self.ats = ats
        self.coherent = coherent
    }

    /// An IOMMU whose one kernel-managed stage (`format`, `pageSizes`, `inputAddressBits`) serves
    /// mirroring, dirty tracking (when `dirtyTracking`) and, when `nestedStages` is not empty, nesting.
    public init(
        kind: IOMMUKind, nestedStages: [NestedStageSupport] = [], format: PageTableFormatKind? = nil,
        pageSizes: PageSizeSet, inputAddressBits: Int, outputAddressBits: Int? = nil, pasidBits: Int = 0,
        pri: Bool = false, ats: Bool = false, dirtyTracking: Bool = false, coherent: Bool = true
    ) {
        let stage = KernelManagedStage(format: format, pageSizes: pageSizes, inputAddressBits: inputAddressBits,
                                       dirtyTracking: dirtyTracking)
        self.init(kind: kind, nestedStages: nestedStages, mirrorStage: stage,
                  dirtyTrackingStage: dirtyTracking ? stage : nil, nestParentStage: nestedStages.isEmpty ? nil : stage,
                  outputAddressBits: outputAddressBits, pasidBits: pasidBits, pri: pri, ats: ats, coherent: coherent)
    }

    /// From VT-d registers, as the Linux 7.3 driver allocates domains.
    ///
    /// - Mirror stage: the first stage (x86-64, sign-extended) when scalable mode has FSTS, since
    ///   the driver prefers it for a domain without flags; its usable IOVA is the lower half,
    ///   min(48, or 57 with FS5LP and MGAW > 48, MGAW) - 1 bits. Otherwise (legacy mode, as
    ///   QEMU's default VT-d) the second stage with the SAGAW/MGAW width.
    /// - Dirty tracking: only the second stage (scalable mode, SSADS, SMPWC), so a dirty-tracking
    ///   mirror is second-stage even where the plain one is first-stage.
    /// - Nest parent: the second stage, with nesting (scalable mode, NEST, FSTS, SSTS).
    /// - Nested formats: x86-64 first-stage tables of 4 levels (5 with FS5LP), input limited by MGAW.
    /// - Coherency: SMPWC in scalable mode, ECAP.C otherwise.
    public init(vtd: VTdHardwareInfo) {
        let e = vtd.extendedCapability
        let mgaw = vtd.capability.maximumGuestAddressWidth
        let nested: [NestedStageSupport] = vtd.nestingCapable
            ? vtd.firstStageLevels.map {
                NestedStageSupport(format: .x86_64(levels: $0), pageSizes: vtd.firstStagePageSizes,
                                   inputAddressBits: min(12 + 9 * $0, mgaw))
            }
            : []
        let secondStage: KernelManagedStage? = !e.scalableMode || e.secondStageTranslation
            ? KernelManagedStage(
                format: vtd.secondStageLevels.last.map { .vtdSecondStage(levels: $0) },
                pageSizes: vtd.secondStagePageSizes, inputAddressBits: vtd.secondStageAddressWidth,
                dirtyTracking: vtd.dirtyTrackingCapable)
            : nil
        let firstStage: KernelManagedStage? = e.scalableMode && e.firstStageTranslation
            ? KernelManagedStage(
                format: .x86_64(levels: vtd.kernelFirstStageLevels), pageSizes: vtd.firstStagePageSizes,
                inputAddressBits: vtd.kernelFirstStageAddressWidth - 1, signExtended: true)
            : nil
        self.init(
            kind: .intelVTd, nestedStages: nested, mirrorStage: firstStage ?? secondStage ?? .none,
            dirtyTrackingStage: secondStage.flatMap { $0.dirtyTracking ? $0 : nil },
            nestParentStage: vtd.nestingCapable ? secondStage : nil,
            outputAddressBits: nil, pasidBits: vtd.pasidBits, pri: e.pageRequests, ats: e.deviceTLB,
            coherent: vtd.pageWalkCoherent)
    }

    /// From SMMUv3 ID registers, for a host kernel with `hostPageSize` pages (it picks the granule).
    ///
    /// - Mirror stage: stage 1 when the SMMU has it (the driver's choice without flags), with
    ///   48-bit input, or 52 with VAX and the 64 KiB granule; stage 2 otherwise. The kernel also
    ///   limits stage-1 input to its own `VA_BITS`, which the registers cannot tell: narrow
    ///   ``inputAddressBits`` where the host kernel has fewer.
    /// - Dirty tracking: stage 1 only, with HTTU dirty state and COHACC.
    /// - Nest parent: stage 2 (input = OAS, at most 48 bits below the 64 KiB granule), never dirty-tracking.
    /// - Nested formats: VMSAv8-64 stage-1 tables with every supported granule.
    public init(smmu: SMMUv3HardwareInfo, hostPageSize: PageSize = .size4K) {
        let nested: [NestedStageSupport] = smmu.nestingCapable
            ? smmu.idr5.granules.map {
                NestedStageSupport(format: .armStage1(granule: $0), pageSizes: smmu.pageSizes(granule: $0),
                                   inputAddressBits: smmu.stage1InputBits(granule: $0))
            }
            : []
        let granule = smmu.kernelGranule(hostPageSize: hostPageSize)
        let stage1 = granule.flatMap { g in
            smmu.idr0.stage1
                ? KernelManagedStage(format: .armStage1(granule: g), pageSizes: smmu.pageSizes(granule: g),
                                     inputAddressBits: smmu.kernelStage1InputBits(granule: g),
                                     dirtyTracking: smmu.dirtyTrackingCapable)
                : nil
        }
        let stage2 = granule.flatMap { g in
            smmu.idr0.stage2
                ? KernelManagedStage(format: .armStage2(granule: g), pageSizes: smmu.pageSizes(granule: g),
                                     inputAddressBits: smmu.stage2InputBits(granule: g))
                : nil
        }
        self.init(
            kind: .armSMMUv3, nestedStages: nested, mirrorStage: stage1 ?? stage2 ?? .none,
            dirtyTrackingStage: stage1.flatMap { $0.dirtyTracking ? $0 : nil },
            nestParentStage: smmu.nestingCapable ? stage2 : nil,
            outputAddressBits: smmu.outputAddressBits, pasidBits: smmu.pasidBits, pri: smmu.idr0.pri,
            ats: smmu.idr0.ats, coherent: smmu.idr0.coherentAccess)
    }

    /// From AMD EFR/EFR2.
    ///
    /// - Mirror stage: v1 (the kernel's default), or, when HATS says host translation is
    ///   unavailable, v2 (x86-64 format without sign extension: 47 bits, 56 with GATS 5-level and
    ///   an LA57 CPU), which needs GTSup and GIOSup; none otherwise.
    /// - Dirty tracking: v1 with HDSup (so never without host translation).
    /// - Nest parent: v1, with nesting (GTSup, GIOSup, GCR3TRPMode).
    /// - Nested formats: v2 (x86-64 format) guest tables, 4 levels or also 5 with GATS.
    ///
    /// ATS and coherency are not in these registers and are taken as present.
    public init(amd: AMDHardwareInfo) {
        let nested: [NestedStageSupport] = amd.nestingCapable
            ? amd.guestLevels.map {
                NestedStageSupport(format: .x86_64(levels: $0), pageSizes: amd.guestPageSizes,
                                   inputAddressBits: 12 + 9 * $0)
            }
            : []
        let v1 = amd.hostLevels.map {
            KernelManagedStage(format: .amdV1(levels: $0), pageSizes: amd.hostPageSizes,
                               inputAddressBits: amd.hostAddressBits, dirtyTracking: amd.dirtyTrackingCapable)
        }
        let v2: KernelManagedStage? = amd.efr.guestTranslation && amd.efr.guestIOProtection
            ? KernelManagedStage(format: .x86_64(levels: amd.guestLevels.last ?? 4), pageSizes: amd.guestPageSizes,
                                 inputAddressBits: amd.guestLevels.last == 5 ? 56 : 47)
            : nil
        self.init(
            kind: .amd, nestedStages: nested, mirrorStage: v1 ?? v2 ?? .none,
            dirtyTrackingStage: v1.flatMap { $0.dirtyTracking ? $0 : nil },
            nestParentStage: amd.nestingCapable ? v1 : nil,
            outputAddressBits: nil, pasidBits: amd.pasidBits, pri: amd.efr.peripheralPageRequests, ats: true,
            coherent: true)
    }

    /// The kernel selftest mock IOMMU (facts from `drivers/iommu/iommufd/selftest.c`): a 2 KiB
    /// AMDv1-style format with 56-bit input, 51-bit output, 20-bit PASIDs, dirty tracking and nesting.
    public static let selftestMock: HostIOMMUCapabilities = {
        let sizes = PageSizeSet(rawValue: ((1 << 56) - 1) & ~0x7ff)
        return HostIOMMUCapabilities(
            kind: .selftest,
            nestedStages: [NestedStageSupport(format: .selftestMock, pageSizes: sizes, inputAddressBits: 56)],
            format: .selftestMock, pageSizes: sizes, inputAddressBits: 56, outputAddressBits: 51,
            pasidBits: 20, pri: true, ats: true, dirtyTracking: true, coherent: true)
    }()

    /// From a whole `IOMMU_GET_HW_INFO` answer.
    ///
    /// Vendor registers give kind, formats, page sizes and widths. The kernel's per-device answer
    /// overrides the registers where it is more precise: `out_max_pasid_log2` is the PASID width,
    /// `IOMMU_HW_CAP_DIRTY_TRACKING` is dirty tracking, and `IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED`
    /// turns ATS off. Type `none`, unknown types and a lone Tegra241 CMDQV answer (ask again with
    /// the SMMUv3 input type for its registers) give kind ``IOMMUKind/unknown`` (or SMMUv3) with no
    /// formats and zero widths, which every check then refuses unless the caller fills them in.
    public init(report: HardwareInfoReport, hostPageSize: PageSize = .size4K) {
        switch report.info {
        case .intelVTd(let vtd): self.init(vtd: vtd)
        case .armSMMUv3(let smmu): self.init(smmu: smmu, hostPageSize: hostPageSize)
        case .amd(let amd): self.init(amd: amd)
        case .selftest: self = .selftestMock
        case .tegra241CMDQV: self.init(kind: .armSMMUv3, pageSizes: [], inputAddressBits: 0, ats: true)
        case .none, .unknown: self.init(kind: .unknown, pageSizes: [], inputAddressBits: 0, ats: true)
        }
        pasidBits = Int(report.maxPASIDLog2)
        dirtyTracking = report.capabilities.contains(.dirtyTracking)
        if report.capabilities.contains(.atsNotSupported) { ats = false }
    }
}
