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
public enum PageTableFormat: Hashable, Sendable, CustomStringConvertible {
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
    public var format: PageTableFormat
    /// Page sizes the hardware accepts in that format.
    public var pageSizes: PageSizeSet
    /// Widest input (guest IOVA) address the format covers on this hardware.
    public var inputAddressBits: Int

    public init(format: PageTableFormat, pageSizes: PageSizeSet, inputAddressBits: Int) {
        self.format = format
        self.pageSizes = pageSizes
        self.inputAddressBits = inputAddressBits
    }

    public var description: String { "\(format) \(pageSizes) \(inputAddressBits)-bit" }
}

/// What the host IOMMU behind one device offers, vendor-neutral.
///
/// Built from one vendor register set (``init(vtd:)``, ``init(smmu:hostPageSize:)``,
/// ``init(amd:)``) or from a whole `IOMMU_GET_HW_INFO` answer (``init(report:hostPageSize:)``).
/// Every field is a plain stored value, so a caller can narrow it (for example the IOVA width to
/// what `IOMMU_IOAS_IOVA_RANGES` reports).
public struct IOMMUCapabilities: Hashable, Sendable {
    public var kind: IOMMUKind
    /// Formats usable as a hardware-walked, guest-owned first stage; empty without nesting.
    public var nestedStages: [NestedStageSupport]
    /// The format the kernel uses for the IOAS-backed stage (the nesting parent when nesting).
    public var kernelManagedFormat: PageTableFormat?
    /// Page sizes of the kernel-managed stage.
    public var pageSizes: PageSizeSet
    /// IOVA width of the kernel-managed stage in bits.
    public var inputAddressBits: Int
    /// Output (physical) address width in bits; `nil` when the registers do not say.
    public var outputAddressBits: Int?
    /// PASID width in bits; 0 without PASID.
    public var pasidBits: Int
    /// PCIe page requests (PRI) can be served.
    public var pri: Bool
    /// PCIe ATS can be used.
    public var ats: Bool
    /// Dirty tracking of the kernel-managed stage.
    public var dirtyTracking: Bool
    /// Table walks snoop CPU caches.
    public var coherent: Bool

    /// Whether any hardware nesting format is available.
    public var nesting: Bool { !nestedStages.isEmpty }

    public init(
        kind: IOMMUKind, nestedStages: [NestedStageSupport] = [], kernelManagedFormat: PageTableFormat? = nil,
        pageSizes: PageSizeSet, inputAddressBits: Int, outputAddressBits: Int? = nil, pasidBits: Int = 0,
        pri: Bool = false, ats: Bool = false, dirtyTracking: Bool = false, coherent: Bool = true
    ) {
        self.kind = kind
        self.nestedStages = nestedStages
        self.kernelManagedFormat = kernelManagedFormat
        self.pageSizes = pageSizes
        self.inputAddressBits = inputAddressBits
        self.outputAddressBits = outputAddressBits
        self.pasidBits = pasidBits
        self.pri = pri
        self.ats = ats
        self.dirtyTracking = dirtyTracking
        self.coherent = coherent
    }

    /// From VT-d registers.
    ///
    /// Nesting offers x86-64 first-stage tables (4 levels, 5 with FS5LP) over a second-stage parent.
    /// The kernel-managed stage is second-stage when the hardware is in legacy mode or has SSTS,
    /// else the first stage (4-level, 48-bit).
    public init(vtd: VTdHardwareInfo) {
        let e = vtd.extendedCapability
        let nested: [NestedStageSupport] = vtd.nestingCapable
            ? vtd.firstStageLevels.map {
                NestedStageSupport(format: .x86_64(levels: $0), pageSizes: vtd.firstStagePageSizes,
                                   inputAddressBits: 12 + 9 * $0)
            }
            : []
        let secondStage = !e.scalableMode || e.secondStageTranslation
        self.init(
            kind: .intelVTd, nestedStages: nested,
            kernelManagedFormat: secondStage
                ? vtd.secondStageLevels.last.map { .vtdSecondStage(levels: $0) } : .x86_64(levels: 4),
            pageSizes: secondStage ? vtd.secondStagePageSizes : vtd.firstStagePageSizes,
            inputAddressBits: secondStage ? vtd.secondStageAddressWidth : 48,
            outputAddressBits: nil, pasidBits: vtd.pasidBits, pri: e.pageRequests, ats: e.deviceTLB,
            dirtyTracking: vtd.dirtyTrackingCapable, coherent: e.coherent)
    }

    /// From SMMUv3 ID registers, for a host kernel with `hostPageSize` pages (it picks the granule).
    ///
    /// Nesting offers VMSAv8-64 stage-1 tables with every supported granule over a stage-2 parent.
    /// The kernel-managed stage is stage 2 when nesting is possible (or only stage 2 exists), else stage 1.
    public init(smmu: SMMUv3HardwareInfo, hostPageSize: PageSize = .size4K) {
        let nested: [NestedStageSupport] = smmu.nestingCapable
            ? smmu.idr5.granules.map {
                NestedStageSupport(format: .armStage1(granule: $0), pageSizes: smmu.pageSizes(granule: $0),
                                   inputAddressBits: smmu.stage1InputBits(granule: $0))
            }
            : []
        let granule = smmu.kernelGranule(hostPageSize: hostPageSize)
        let useStage2 = smmu.idr0.stage2 && (smmu.nestingCapable || !smmu.idr0.stage1)
        let usable = (smmu.idr0.stage1 || smmu.idr0.stage2) && granule != nil
        self.init(
            kind: .armSMMUv3, nestedStages: nested,
            kernelManagedFormat: usable ? (useStage2 ? .armStage2(granule: granule!) : .armStage1(granule: granule!)) : nil,
            pageSizes: granule.map { smmu.pageSizes(granule: $0) } ?? [],
            inputAddressBits: !usable ? 0 : useStage2 ? smmu.stage2InputBits : smmu.stage1InputBits(granule: granule!),
            outputAddressBits: smmu.outputAddressBits, pasidBits: smmu.pasidBits, pri: smmu.idr0.pri,
            ats: smmu.idr0.ats, dirtyTracking: smmu.dirtyTrackingCapable, coherent: smmu.idr0.coherentAccess)
    }

    /// From AMD EFR/EFR2.
    ///
    /// Nesting offers v2 (x86-64 format) guest tables, 4 levels or also 5 with GATS, over a v1 parent.
    /// The kernel-managed stage is v1 unless HATS says host translation is unavailable (then v2, 4-level).
    /// ATS and coherency are not in these registers and are taken as present.
    public init(amd: AMDHardwareInfo) {
        let nested: [NestedStageSupport] = amd.nestingCapable
            ? amd.guestLevels.map {
                NestedStageSupport(format: .x86_64(levels: $0), pageSizes: amd.guestPageSizes,
                                   inputAddressBits: 12 + 9 * $0)
            }
            : []
        self.init(
            kind: .amd, nestedStages: nested,
            kernelManagedFormat: amd.hostLevels.map { .amdV1(levels: $0) } ?? .x86_64(levels: 4),
            pageSizes: amd.hostLevels == nil ? amd.guestPageSizes : amd.hostPageSizes,
            inputAddressBits: amd.hostLevels == nil ? 48 : amd.hostAddressBits,
            outputAddressBits: nil, pasidBits: amd.pasidBits, pri: amd.efr.peripheralPageRequests, ats: true,
            dirtyTracking: amd.dirtyTrackingCapable, coherent: true)
    }

    /// The kernel selftest mock IOMMU (facts from `drivers/iommu/iommufd/selftest.c`): a 2 KiB
    /// AMDv1-style format with 56-bit input, 51-bit output, 20-bit PASIDs, dirty tracking and nesting.
    public static let selftestMock: IOMMUCapabilities = {
        let sizes = PageSizeSet(rawValue: ((1 << 56) - 1) & ~0x7ff)
        return IOMMUCapabilities(
            kind: .selftest,
            nestedStages: [NestedStageSupport(format: .selftestMock, pageSizes: sizes, inputAddressBits: 56)],
            kernelManagedFormat: .selftestMock, pageSizes: sizes, inputAddressBits: 56, outputAddressBits: 51,
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
