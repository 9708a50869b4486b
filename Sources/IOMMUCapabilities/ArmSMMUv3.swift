/// Arm SMMUv3 `SMMU_IDR0` (SMMUv3 architecture specification section 6.3.1).
public struct SMMUv3IDR0: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    private var v: UInt64 { UInt64(rawValue) }

    /// S2P (bit 0): stage-2 translation.
    public var stage2: Bool { bit(v, 0) }
    /// S1P (bit 1): stage-1 translation.
    public var stage1: Bool { bit(v, 1) }
    /// TTF (bits 3:2): the translation table formats the SMMU walks.
    public var tableFormats: SMMUv3TableFormats { SMMUv3TableFormats(rawValue: UInt8(field(v, 2, 3))) }
    /// COHACC (bit 4): coherent access to tables, queues and MSIs.
    public var coherentAccess: Bool { bit(v, 4) }
    /// BTM (bit 5): broadcast TLB maintenance.
    public var broadcastTLBMaintenance: Bool { bit(v, 5) }
    /// HTTU (bits 7:6): hardware updates of the access flag and dirty state.
    public var hardwareTableUpdate: SMMUv3HardwareUpdate { SMMUv3HardwareUpdate(rawValue: UInt8(field(v, 6, 7)))! }
    /// HYP (bit 9): EL2 translation regime.
    public var hypervisor: Bool { bit(v, 9) }
    /// ATS (bit 10): PCIe ATS.
    public var ats: Bool { bit(v, 10) }
    /// ASID16 (bit 12): 16-bit ASIDs (else 8-bit).
    public var asid16: Bool { bit(v, 12) }
    /// MSI (bit 13): message-signalled interrupts.
    public var msi: Bool { bit(v, 13) }
    /// SEV (bit 14): generates WFE wake-up events.
    public var sendEvent: Bool { bit(v, 14) }
    /// PRI (bit 16): PCIe page request interface.
    public var pri: Bool { bit(v, 16) }
    /// VMID16 (bit 18): 16-bit VMIDs (else 8-bit).
    public var vmid16: Bool { bit(v, 18) }
    /// CD2L (bit 19): two-level context-descriptor tables.
    public var twoLevelContextDescriptors: Bool { bit(v, 19) }
    /// TTENDIAN (bits 22:21): endianness of translation table walks.
    public var tableEndianness: SMMUv3Endianness { SMMUv3Endianness(rawValue: UInt8(field(v, 21, 22)))! }
    /// STALL_MODEL (bits 25:24): how faulting transactions may be stalled.
    public var stallModel: SMMUv3StallModel { SMMUv3StallModel(rawValue: UInt8(field(v, 24, 25)))! }
    /// TERM_MODEL (bit 26): a terminated transaction always aborts (else it may be RAZ/WI).
    public var terminateAlwaysAborts: Bool { bit(v, 26) }
    /// ST_LEVEL (bits 28:27): stream-table levels; 0 linear, 1 two-level.
    public var streamTableLevel: Int { Int(field(v, 27, 28)) }
    /// Whether ``streamTableLevel`` allows a two-level stream table.
    public var twoLevelStreamTable: Bool { streamTableLevel == 1 }
}

/// The TTF field of `SMMU_IDR0`.
public struct SMMUv3TableFormats: OptionSet, Hashable, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// AArch32 long-descriptor (LPAE) tables.
    public static let aarch32 = Self(rawValue: 1)
    /// AArch64 (VMSAv8-64) tables.
    public static let aarch64 = Self(rawValue: 2)
}

/// The HTTU field of `SMMU_IDR0`.
public enum SMMUv3HardwareUpdate: UInt8, Hashable, Sendable {
    /// No hardware updates.
    case none = 0
    /// Hardware sets the access flag.
    case accessFlag = 1
    /// Hardware sets the access flag and dirty state.
    case accessAndDirty = 2
    /// Access flag, dirty state and table access flags (HAFT).
    case accessDirtyAndTableAccess = 3

    /// Whether the hardware records dirty state (what dirty tracking needs).
    public var dirtyState: Bool { rawValue >= 2 }
}

/// The TTENDIAN field of `SMMU_IDR0`.
public enum SMMUv3Endianness: UInt8, Hashable, Sendable {
    case mixed = 0, reserved = 1, little = 2, big = 3
}

/// The STALL_MODEL field of `SMMU_IDR0`.
public enum SMMUv3StallModel: UInt8, Hashable, Sendable {
    /// Stall and terminate both supported.
    case stallOrTerminate = 0
    /// Only terminate; faulting transactions cannot be stalled.
    case terminateOnly = 1
    /// Stall is forced for stage-1 faults.
    case stallForced = 2
    case reserved = 3
}

/// Arm SMMUv3 `SMMU_IDR1` (section 6.3.2).
public struct SMMUv3IDR1: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    private var v: UInt64 { UInt64(rawValue) }

    /// SIDSIZE (bits 5:0): StreamID width in bits.
    public var streamIDBits: Int { Int(field(v, 0, 5)) }
    /// SSIDSIZE (bits 10:6): SubstreamID (PASID) width in bits; 0 means no substreams.
    public var substreamIDBits: Int { Int(field(v, 6, 10)) }
    /// PRIQS (bits 15:11): log2 of the largest PRI queue.
    public var priQueueLog2: Int { Int(field(v, 11, 15)) }
    /// EVTQS (bits 20:16): log2 of the largest event queue.
    public var eventQueueLog2: Int { Int(field(v, 16, 20)) }
    /// CMDQS (bits 25:21): log2 of the largest command queue.
    public var commandQueueLog2: Int { Int(field(v, 21, 25)) }
    /// ATTR_TYPES_OVR (bit 27): incoming memory types can be overridden.
    public var attributeTypesOverride: Bool { bit(v, 27) }
    /// REL (bit 28): preset base addresses are relative to the register page.
    public var relativeBase: Bool { bit(v, 28) }
    /// QUEUES_PRESET (bit 29): queue base addresses are fixed.
    public var queuesPreset: Bool { bit(v, 29) }
    /// TABLES_PRESET (bit 30): table base addresses are fixed.
    public var tablesPreset: Bool { bit(v, 30) }
}

/// Arm SMMUv3 `SMMU_IDR3` (section 6.3.4).
public struct SMMUv3IDR3: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    private var v: UInt64 { UInt64(rawValue) }

    /// FWB (bit 8): stage-2 forced write-back.
    public var forcedWriteBack: Bool { bit(v, 8) }
    /// RIL (bit 10): range-based TLB invalidation.
    public var rangeInvalidation: Bool { bit(v, 10) }
    /// BBML (bits 12:11): break-before-make level (0, 1 or 2).
    public var breakBeforeMakeLevel: Int { Int(field(v, 11, 12)) }
}

/// Arm SMMUv3 `SMMU_IDR5` (section 6.3.6).
public struct SMMUv3IDR5: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    private var v: UInt64 { UInt64(rawValue) }

    /// OAS (bits 2:0) as the raw encoding.
    public var outputAddressSizeEncoding: Int { Int(field(v, 0, 2)) }
    /// The output (physical) address size in bits: 32, 36, 40, 42, 44, 48 or 52; `nil` for the reserved encoding 7.
    public var outputAddressBits: Int? {
        let table = [32, 36, 40, 42, 44, 48, 52]
        return outputAddressSizeEncoding < table.count ? table[outputAddressSizeEncoding] : nil
    }
    /// GRAN4K (bit 4): the 4 KiB translation granule.
    public var granule4K: Bool { bit(v, 4) }
    /// GRAN16K (bit 5): the 16 KiB translation granule.
    public var granule16K: Bool { bit(v, 5) }
    /// GRAN64K (bit 6): the 64 KiB translation granule.
    public var granule64K: Bool { bit(v, 6) }
    /// DS (bit 7): 52-bit addresses with the 4 KiB and 16 KiB granules (FEAT_LPA2 descriptors).
    public var largeAddressesSmallGranules: Bool { bit(v, 7) }
    /// VAX (bits 11:10): virtual address extension; 0 is 48-bit, 1 is 52-bit stage-1 input.
    public var virtualAddressExtension: Int { Int(field(v, 10, 11)) }
    /// STALL_MAX (bits 31:16): the most transactions that can be stalled at once.
    public var maximumStalls: Int { Int(field(v, 16, 31)) }

    /// The supported granules, ascending.
    public var granules: [PageSize] {
        [(granule4K, PageSize.size4K), (granule16K, .size16K), (granule64K, .size64K)].filter(\.0).map(\.1)
    }
}

/// Arm SMMUv3 `SMMU_IIDR` (section 6.3.7): who made the SMMU.
public struct SMMUv3IIDR: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    private var v: UInt64 { UInt64(rawValue) }

    /// Implementer (bits 11:0): JEP106 code of the implementer.
    public var implementer: Int { Int(field(v, 0, 11)) }
    /// Revision (bits 15:12).
    public var revision: Int { Int(field(v, 12, 15)) }
    /// Variant (bits 19:16).
    public var variant: Int { Int(field(v, 16, 19)) }
    /// ProductID (bits 31:20).
    public var productID: Int { Int(field(v, 20, 31)) }
}

/// Arm SMMUv3 `SMMU_AIDR` (section 6.3.8): the architecture version.
public struct SMMUv3AIDR: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// ArchMajorRev (bits 7:4): 0 means SMMUv3.
    public var majorRevision: Int { Int((rawValue >> 4) & 0xf) }
    /// ArchMinorRev (bits 3:0): the x of SMMUv3.x.
    public var minorRevision: Int { Int(rawValue & 0xf) }
    /// "3.x" for SMMUv3.x.
    public var description: String { "\(3 + majorRevision).\(minorRevision)" }
}

/// `struct iommu_hw_info_arm_smmuv3`: the SMMUv3 ID registers behind one device, 40 bytes.
///
/// The kernel documents that only some fields are stable for a VMM to use (ST_LEVEL, TERM_MODEL,
/// STALL_MODEL, TTENDIAN, CD2L, ASID16, TTF, SIDSIZE, SSIDSIZE, BBML, RIL, VAX, GRAN*, DS); the
/// others are decoded for information.
public struct SMMUv3HardwareInfo: Hashable, Sendable {
    /// Size of the structure in bytes.
    public static let size = 40

    /// Driver flags (`enum iommu_hw_info_arm_smmuv3_flags`).
    public struct Flags: OptionSet, Hashable, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// Erratum T264-SMMU-3: TLBI/CFGI plus SYNC must be issued twice.
        public static let repeatTLBIAndCFGI = Self(rawValue: 1 << 0)
    }

    public var flags: Flags
    public var idr0: SMMUv3IDR0
    public var idr1: SMMUv3IDR1
    /// `SMMU_IDR2` raw.
    public var idr2: UInt32
    public var idr3: SMMUv3IDR3
    /// `SMMU_IDR4` raw (implementation defined).
    public var idr4: UInt32
    public var idr5: SMMUv3IDR5
    public var iidr: SMMUv3IIDR
    public var aidr: SMMUv3AIDR

    /// From register values; missing `idr` entries read as 0, extra ones are ignored.
    public init(flags: Flags = [], idr: [UInt32], iidr: UInt32 = 0, aidr: UInt32 = 0) {
        func r(_ n: Int) -> UInt32 { n < idr.count ? idr[n] : 0 }
        self.flags = flags
        self.idr0 = SMMUv3IDR0(rawValue: r(0))
        self.idr1 = SMMUv3IDR1(rawValue: r(1))
        self.idr2 = r(2)
        self.idr3 = SMMUv3IDR3(rawValue: r(3))
        self.idr4 = r(4)
        self.idr5 = SMMUv3IDR5(rawValue: r(5))
        self.iidr = SMMUv3IIDR(rawValue: iidr)
        self.aidr = SMMUv3AIDR(rawValue: aidr)
    }

    /// The page and block sizes of a VMSAv8-64 table with `granule` (4 KiB: 4K/2M/1G,
    /// 16 KiB: 16K/32M, 64 KiB: 64K/512M, plus 4 TiB with a 52-bit OAS), or empty for a granule
    /// the SMMU lacks.
    public func pageSizes(granule: PageSize) -> PageSizeSet {
        guard idr5.granules.contains(granule) else { return [] }
        switch granule {
        case .size4K: return PageSizeSet([.size4K, .size2M, .size1G])
        case .size16K: return PageSizeSet([.size16K, .size32M])
        case .size64K: return PageSizeSet([.size64K, .size512M] + (outputAddressBits > 48 ? [PageSize(shift: 42)] : []))
        default: return []
        }
    }

    /// All page sizes over every supported granule.
    public var pageSizes: PageSizeSet {
        idr5.granules.reduce(into: PageSizeSet()) { $0.formUnion(pageSizes(granule: $1)) }
    }

    /// Stage-1 input (virtual address) width with `granule`: 52 with VAX and either the 64 KiB
    /// granule or DS, else 48.
    public func stage1InputBits(granule: PageSize) -> Int {
        let wide = idr5.virtualAddressExtension >= 1 && (granule == .size64K || idr5.largeAddressesSmallGranules)
        return wide ? 52 : 48
    }

    /// Stage-1 input width of the Linux driver's own stage-1 domains with `granule`: 52 with VAX
    /// and the 64 KiB granule, else 48 (io-pgtable-arm does not use DS). The driver also caps it
    /// at the host kernel's `VA_BITS`, which is not known here.
    public func kernelStage1InputBits(granule: PageSize) -> Int {
        idr5.virtualAddressExtension >= 1 && granule == .size64K ? 52 : 48
    }

    /// Output address width (OAS); the reserved encoding reads as 48, as the Linux driver takes it.
    public var outputAddressBits: Int { idr5.outputAddressBits ?? 48 }

    /// Stage-2 input (IPA) width of the Linux driver's stage-2 domains with `granule`: the output
    /// address size, at most 52 with the 64 KiB granule and 48 with the others (io-pgtable-arm).
    public func stage2InputBits(granule: PageSize) -> Int {
        min(outputAddressBits, granule == .size64K ? 52 : 48)
    }

    /// Hardware nesting: both stages and AArch64 tables.
    public var nestingCapable: Bool { idr0.stage1 && idr0.stage2 && idr0.tableFormats.contains(.aarch64) }

    /// Dirty tracking as the Linux driver allows it: HTTU dirty state and coherent access
    /// (COHACC), and only in stage-1 domains.
    public var dirtyTrackingCapable: Bool { idr0.hardwareTableUpdate.dirtyState && idr0.coherentAccess }

    /// PASID (SubstreamID) width in bits.
    public var pasidBits: Int { idr1.substreamIDBits }

    /// The granule the Linux io-pgtable code picks for a kernel with `hostPageSize` pages: that
    /// size if supported, else the largest supported granule below it, else the smallest above it.
    public func kernelGranule(hostPageSize: PageSize) -> PageSize? {
        let g = idr5.granules
        if g.contains(hostPageSize) { return hostPageSize }
        return g.last(where: { $0 < hostPageSize }) ?? g.first
    }
}

/// `struct iommu_hw_info_tegra241_cmdqv`: the CMDQV extension of an SMMUv3, 8 bytes.
///
/// A VMM copies these values into its emulated CMDQV PARAM register.
public struct Tegra241CMDQVHardwareInfo: Hashable, Sendable {
    /// Size of the structure in bytes.
    public static let size = 8

    /// Must be 0.
    public var flags: UInt32
    /// CMDQ-V version (PARAM bits 3:0).
    public var version: UInt8
    /// log2 of the number of virtual command queues (PARAM bits 7:4).
    public var log2VCMDQs: UInt8
    /// log2 of the number of StreamID replacements (PARAM bits 15:12).
    public var log2VSIDs: UInt8

    public init(flags: UInt32 = 0, version: UInt8, log2VCMDQs: UInt8, log2VSIDs: UInt8) {
        self.flags = flags
        self.version = version
        self.log2VCMDQs = log2VCMDQs
        self.log2VSIDs = log2VSIDs
    }

    /// Number of virtual command queues.
    public var vcmdqCount: Int { 1 << Int(log2VCMDQs) }
    /// Number of StreamID replacements.
    public var vsidCount: Int { 1 << Int(log2VSIDs) }
}
