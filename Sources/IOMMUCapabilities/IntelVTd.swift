/// The Intel VT-d Capability Register (`CAP_REG`, VT-d specification section 11.4.2).
///
/// Each property reads one field of the 64-bit value; bit positions follow the VT-d 4.x/5.x
/// specification. Reserved and deprecated fields are not decoded.
public struct VTdCapability: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// ND (bits 2:0): the encoding of how many domain ids the hardware has.
    public var numberOfDomainsEncoding: Int { Int(field(rawValue, 0, 2)) }
    /// Domain-id width in bits (4 + 2 * ND).
    public var domainIDBits: Int { 4 + 2 * numberOfDomainsEncoding }
    /// Number of domain ids (2^(4 + 2 * ND)).
    public var domainCount: Int { 1 << domainIDBits }
    /// AFL (bit 3): advanced fault logging.
    public var advancedFaultLogging: Bool { bit(rawValue, 3) }
    /// RWBF (bit 4): software must flush the write buffer after changing translation structures.
    public var requiresWriteBufferFlush: Bool { bit(rawValue, 4) }
    /// PLMR (bit 5): protected low-memory region.
    public var protectedLowMemoryRegion: Bool { bit(rawValue, 5) }
    /// PHMR (bit 6): protected high-memory region.
    public var protectedHighMemoryRegion: Bool { bit(rawValue, 6) }
    /// CM (bit 7): caching mode; not-present entries may be cached, so every change must be invalidated.
    public var cachingMode: Bool { bit(rawValue, 7) }
    /// SAGAW (bits 12:8): the second-stage address widths (page-table depths) supported.
    public var secondStageAddressWidths: VTdAddressWidths { VTdAddressWidths(rawValue: UInt8(field(rawValue, 8, 12))) }
    /// MGAW (bits 21:16, plus one): the widest DMA address second-stage translation accepts.
    public var maximumGuestAddressWidth: Int { Int(field(rawValue, 16, 21)) + 1 }
    /// ZLR (bit 22): zero-length DMA reads to write-only pages are allowed.
    public var zeroLengthRead: Bool { bit(rawValue, 22) }
    /// FRO (bits 33:24): byte offset of the fault recording registers from the register base.
    public var faultRecordingOffset: Int { Int(field(rawValue, 24, 33)) * 16 }
    /// SSLPS (bits 37:34): second-stage large page support; bit 0 is 2 MiB, bit 1 is 1 GiB.
    public var secondStageLargePageSupport: UInt8 { UInt8(field(rawValue, 34, 37)) }
    /// PSI (bit 39): page-selective IOTLB invalidation.
    public var pageSelectiveInvalidation: Bool { bit(rawValue, 39) }
    /// NFR (bits 47:40, plus one): number of fault recording registers.
    public var faultRecordingRegisterCount: Int { Int(field(rawValue, 40, 47)) + 1 }
    /// MAMV (bits 53:48): the largest address mask a page-selective invalidation accepts.
    public var maximumAddressMaskValue: Int { Int(field(rawValue, 48, 53)) }
    /// DWD (bit 54): write draining.
    public var writeDraining: Bool { bit(rawValue, 54) }
    /// DRD (bit 55): read draining.
    public var readDraining: Bool { bit(rawValue, 55) }
    /// FS1GP (bit 56): first-stage translation supports 1 GiB pages.
    public var firstStage1GPages: Bool { bit(rawValue, 56) }
    /// PI (bit 59): posted interrupts.
    public var postedInterrupts: Bool { bit(rawValue, 59) }
    /// FS5LP (bit 60): first-stage translation supports 5-level paging.
    public var firstStage5LevelPaging: Bool { bit(rawValue, 60) }
    /// ECMDS (bit 61): enhanced command interface.
    public var enhancedCommands: Bool { bit(rawValue, 61) }
    /// ESIRTPS (bit 62): setting the interrupt remap table pointer also invalidates its caches.
    public var enhancedSetInterruptRemapTablePointer: Bool { bit(rawValue, 62) }
    /// ESRTPS (bit 63): setting the root table pointer also invalidates the caches.
    public var enhancedSetRootTablePointer: Bool { bit(rawValue, 63) }
}

/// The SAGAW field: second-stage address widths, one bit per page-table depth.
public struct VTdAddressWidths: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Bit 1: 39-bit addresses, 3-level tables.
    public static let bits39 = Self(rawValue: 1 << 1)
    /// Bit 2: 48-bit addresses, 4-level tables.
    public static let bits48 = Self(rawValue: 1 << 2)
    /// Bit 3: 57-bit addresses, 5-level tables.
    public static let bits57 = Self(rawValue: 1 << 3)

    /// The supported depths, ascending (SAGAW bit n means n + 2 levels).
    public var levels: [Int] { (1...3).filter { rawValue & (1 << $0) != 0 }.map { $0 + 2 } }
    /// The supported widths in bits, ascending (12 + 9 per level).
    public var widths: [Int] { levels.map { 12 + 9 * $0 } }
    public var description: String { "[" + widths.map { "\($0)-bit" }.joined(separator: ", ") + "]" }
}

/// The Intel VT-d Extended Capability Register (`ECAP_REG`, VT-d specification section 11.4.3).
public struct VTdExtendedCapability: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// C (bit 0): page-walk coherency; the hardware snoops the CPU caches when reading tables.
    public var coherent: Bool { bit(rawValue, 0) }
    /// QI (bit 1): queued invalidation.
    public var queuedInvalidation: Bool { bit(rawValue, 1) }
    /// DT (bit 2): device-TLB invalidation, i.e. PCIe ATS.
    public var deviceTLB: Bool { bit(rawValue, 2) }
    /// IR (bit 3): interrupt remapping.
    public var interruptRemapping: Bool { bit(rawValue, 3) }
    /// EIM (bit 4): extended (x2APIC, 32-bit destination) interrupt mode.
    public var extendedInterruptMode: Bool { bit(rawValue, 4) }
    /// PT (bit 6): pass-through translation type.
    public var passThrough: Bool { bit(rawValue, 6) }
    /// SC (bit 7): snoop control.
    public var snoopControl: Bool { bit(rawValue, 7) }
    /// IRO (bits 17:8): byte offset of the IOTLB registers from the register base.
    public var iotlbRegisterOffset: Int { Int(field(rawValue, 8, 17)) * 16 }
    /// MHMV (bits 23:20): the largest interrupt-entry handle mask.
    public var maximumHandleMaskValue: Int { Int(field(rawValue, 20, 23)) }
    /// MTS (bit 25): memory type support.
    public var memoryTypeSupport: Bool { bit(rawValue, 25) }
    /// NEST (bit 26): nested (first-stage over second-stage) translation.
    public var nested: Bool { bit(rawValue, 26) }
    /// PRS (bit 29): page requests (PCIe PRI).
    public var pageRequests: Bool { bit(rawValue, 29) }
    /// ERS (bit 30): execute requests.
    public var executeRequests: Bool { bit(rawValue, 30) }
    /// SRS (bit 31): supervisor requests.
    public var supervisorRequests: Bool { bit(rawValue, 31) }
    /// NWFS (bit 33): no-write flag.
    public var noWriteFlag: Bool { bit(rawValue, 33) }
    /// EAFS (bit 34): extended accessed flag in first-stage entries.
    public var extendedAccessedFlag: Bool { bit(rawValue, 34) }
    /// PSS (bits 39:35): PASID size encoding; PASIDs have PSS + 1 bits.
    public var pasidSizeEncoding: Int { Int(field(rawValue, 35, 39)) }
    /// PASID (bit 40): process address space ids.
    public var pasid: Bool { bit(rawValue, 40) }
    /// DIT (bit 41): device-TLB invalidation throttling.
    public var deviceTLBInvalidationThrottle: Bool { bit(rawValue, 41) }
    /// PDS (bit 42): page-request drain.
    public var pageRequestDrain: Bool { bit(rawValue, 42) }
    /// SMTS (bit 43): scalable-mode translation.
    public var scalableMode: Bool { bit(rawValue, 43) }
    /// VCS (bit 44): virtual command interface.
    public var virtualCommands: Bool { bit(rawValue, 44) }
    /// SSADS (bit 45): second-stage accessed/dirty bits (dirty tracking).
    public var secondStageAccessedDirty: Bool { bit(rawValue, 45) }
    /// SSTS (bit 46, "SLTS"): second-stage translation in scalable mode.
    public var secondStageTranslation: Bool { bit(rawValue, 46) }
    /// FSTS (bit 47, "FLTS"): first-stage translation in scalable mode.
    public var firstStageTranslation: Bool { bit(rawValue, 47) }
    /// SMPWC (bit 48): page-walk coherency for scalable-mode structures.
    public var scalableModePageWalkCoherency: Bool { bit(rawValue, 48) }
    /// RPS (bit 49): a RID_PASID other than 0 can be set.
    public var ridPASID: Bool { bit(rawValue, 49) }
    /// PMS (bit 51): performance monitoring.
    public var performanceMonitoring: Bool { bit(rawValue, 51) }
    /// ADMS (bit 52): abort DMA mode.
    public var abortDMAMode: Bool { bit(rawValue, 52) }
    /// RPRIVS (bit 53): RID_PRIV.
    public var ridPrivilege: Bool { bit(rawValue, 53) }
}

/// `struct iommu_hw_info_vtd`: the VT-d registers behind one device, 24 bytes.
public struct VTdHardwareInfo: Hashable, Sendable {
    /// Size of the structure in bytes.
    public static let size = 24

    /// Driver flags (`enum iommu_hw_info_vtd_flags`).
    public struct Flags: OptionSet, Hashable, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// Erratum 772415 (SPR17): no read-only mappings in a nesting parent.
        public static let erratum772415 = Self(rawValue: 1 << 0)
    }

    public var flags: Flags
    public var capability: VTdCapability
    public var extendedCapability: VTdExtendedCapability

    public init(flags: Flags = [], capability: VTdCapability, extendedCapability: VTdExtendedCapability) {
        self.flags = flags
        self.capability = capability
        self.extendedCapability = extendedCapability
    }

    /// Direct from the two register values.
    public init(cap: UInt64, ecap: UInt64, flags: Flags = []) {
        self.init(flags: flags, capability: VTdCapability(rawValue: cap),
                  extendedCapability: VTdExtendedCapability(rawValue: ecap))
    }

    /// Page sizes of second-stage tables: 4 KiB, plus 2 MiB and 1 GiB per SSLPS.
    public var secondStagePageSizes: PageSizeSet {
        let sslps = capability.secondStageLargePageSupport
        return PageSizeSet([.size4K] + (sslps & 1 != 0 ? [.size2M] : []) + (sslps & 2 != 0 ? [.size1G] : []))
    }

    /// Page sizes of first-stage tables: 4 KiB and 2 MiB, plus 1 GiB with FS1GP.
    public var firstStagePageSizes: PageSizeSet {
        PageSizeSet([.size4K, .size2M] + (capability.firstStage1GPages ? [.size1G] : []))
    }

    /// Second-stage depths from SAGAW, ascending.
    public var secondStageLevels: [Int] { capability.secondStageAddressWidths.levels }

    /// The widest input address of second-stage translation: the widest SAGAW width, capped at MGAW.
    /// Zero when SAGAW names no depth.
    public var secondStageAddressWidth: Int {
        guard let widest = capability.secondStageAddressWidths.widths.last else { return 0 }
        return min(widest, capability.maximumGuestAddressWidth)
    }

    /// First-stage depths: 4, plus 5 with FS5LP.
    public var firstStageLevels: [Int] { capability.firstStage5LevelPaging ? [4, 5] : [4] }

    /// The depth of the first-stage tables the Linux driver builds for its own domains: 5 with
    /// FS5LP and MGAW above 48, else 4.
    public var kernelFirstStageLevels: Int {
        capability.maximumGuestAddressWidth > 48 && capability.firstStage5LevelPaging ? 5 : 4
    }

    /// The virtual-address width of the driver's first-stage tables: min(48 or 57, MGAW) (VT-d
    /// specification 3.6). The tables are sign-extended, so only the lower half, one bit less, is
    /// usable as zero-extended IOVA.
    public var kernelFirstStageAddressWidth: Int {
        min(12 + 9 * kernelFirstStageLevels, capability.maximumGuestAddressWidth)
    }

    /// Whether the hardware's page walks snoop CPU caches, as the driver decides it: SMPWC in
    /// scalable mode, ECAP.C otherwise.
    public var pageWalkCoherent: Bool {
        scalableMode ? extendedCapability.scalableModePageWalkCoherency : extendedCapability.coherent
    }

    /// The guest address width a software-emulated or nested VT-d can be given (MGAW).
    public var guestAddressWidth: Int { capability.maximumGuestAddressWidth }

    /// PASID width in bits from the registers: PSS + 1 when PASID is set, else 0.
    public var pasidBits: Int { extendedCapability.pasid ? extendedCapability.pasidSizeEncoding + 1 : 0 }

    /// Scalable mode (SMTS).
    public var scalableMode: Bool { extendedCapability.scalableMode }

    /// Hardware nesting: scalable mode, NEST, and both first- and second-stage translation.
    public var nestingCapable: Bool {
        let e = extendedCapability
        return e.scalableMode && e.nested && e.firstStageTranslation && e.secondStageTranslation
    }

    /// Second-stage dirty tracking: scalable mode, SSADS and SMPWC (what the Linux driver requires).
    public var dirtyTrackingCapable: Bool {
        let e = extendedCapability
        return e.scalableMode && e.secondStageAccessedDirty && e.scalableModePageWalkCoherency
    }
}
