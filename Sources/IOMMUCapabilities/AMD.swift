/// AMD IOMMU Extended Feature Register (`EFR`, MMIO offset 0030h; AMD IOMMU specification 48882).
public struct AMDExtendedFeatures: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// PreFSup (bit 0): prefetch IOMMU pages command.
    public var prefetch: Bool { bit(rawValue, 0) }
    /// PPRSup (bit 1): peripheral page requests (PCIe PRI).
    public var peripheralPageRequests: Bool { bit(rawValue, 1) }
    /// XTSup (bit 2): x2APIC interrupt remapping.
    public var x2APIC: Bool { bit(rawValue, 2) }
    /// NXSup (bit 3): no-execute protection.
    public var noExecute: Bool { bit(rawValue, 3) }
    /// GTSup (bit 4): guest translation (v2, x86-64-format tables per PASID).
    public var guestTranslation: Bool { bit(rawValue, 4) }
    /// IASup (bit 6): INVALIDATE_IOMMU_ALL command.
    public var invalidateAll: Bool { bit(rawValue, 6) }
    /// GASup (bit 7): guest virtual APIC.
    public var guestVirtualAPIC: Bool { bit(rawValue, 7) }
    /// HESup (bit 8): hardware error registers.
    public var hardwareErrors: Bool { bit(rawValue, 8) }
    /// PCSup (bit 9): performance counters.
    public var performanceCounters: Bool { bit(rawValue, 9) }
    /// HATS (bits 11:10): host (v1) table depth beyond 4 levels; 3 means host translation is unavailable.
    public var hostAddressTranslationSize: Int { Int(field(rawValue, 10, 11)) }
    /// GATS (bits 13:12): guest (v2) table depth; 0 is 4 levels, 1 is 5 levels.
    public var guestAddressTranslationSize: Int { Int(field(rawValue, 12, 13)) }
    /// GLXSup (bits 15:14): GCR3 table levels supported beyond one.
    public var guestCR3TableLevels: Int { Int(field(rawValue, 14, 15)) }
    /// GAMSup (bits 23:21): guest virtual APIC modes.
    public var guestAPICModes: Int { Int(field(rawValue, 21, 23)) }
    /// PASmax (bits 36:32): PASIDs have PASmax + 1 bits.
    public var pasidMaximum: Int { Int(field(rawValue, 32, 36)) }
    /// GIOSup (bit 48): guest I/O protection (v2 tables for DMA without PASID).
    public var guestIOProtection: Bool { bit(rawValue, 48) }
    /// HASup (bit 49): host access-bit updates.
    public var hostAccess: Bool { bit(rawValue, 49) }
    /// EPHSup (bit 50): enhanced PPR handling.
    public var enhancedPPRHandling: Bool { bit(rawValue, 50) }
    /// HDSup (bit 52): host dirty-bit updates (dirty tracking in v1 tables).
    public var hostDirty: Bool { bit(rawValue, 52) }
    /// SNPSup (bit 63): SEV-SNP.
    public var secureNestedPaging: Bool { bit(rawValue, 63) }
}

/// AMD IOMMU Extended Feature 2 Register (`EFR2`, MMIO offset 01A0h).
public struct AMDExtendedFeatures2: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// SEV-SNP I/O (bit 1).
    public var sevSNPIO: Bool { bit(rawValue, 1) }
    /// GCR3TRPMode (bit 3): GCR3 table root pointers are guest-physical (what nesting needs).
    public var gcr3TableRootPointerMode: Bool { bit(rawValue, 3) }
    /// SNPAVICSup (bits 7:5).
    public var snpAVIC: Int { Int(field(rawValue, 5, 7)) }
    /// NumIntRemapSup (bits 9:8): 1 means 2048 interrupt remapping entries.
    public var interruptRemapEntries: Int { Int(field(rawValue, 8, 9)) }
    /// HtRangeIgnore (bit 11).
    public var hyperTransportRangeIgnore: Bool { bit(rawValue, 11) }
}

/// `struct iommu_hw_info_amd`: the AMD extended feature registers behind one device, 16 bytes.
public struct AMDHardwareInfo: Hashable, Sendable {
    /// Size of the structure in bytes.
    public static let size = 16

    public var efr: AMDExtendedFeatures
    public var efr2: AMDExtendedFeatures2

    public init(efr: AMDExtendedFeatures, efr2: AMDExtendedFeatures2) {
        self.efr = efr
        self.efr2 = efr2
    }

    /// Direct from the two register values.
    public init(efr: UInt64, efr2: UInt64 = 0) {
        self.init(efr: AMDExtendedFeatures(rawValue: efr), efr2: AMDExtendedFeatures2(rawValue: efr2))
    }

    /// Host (v1) table depth, 4 + HATS; `nil` when HATS is 3 (host translation unavailable).
    public var hostLevels: Int? {
        efr.hostAddressTranslationSize == 3 ? nil : 4 + efr.hostAddressTranslationSize
    }

    /// Host (v1) input width in bits: (levels - 1) * 9 + 21, at most 64; 0 without host translation.
    public var hostAddressBits: Int { hostLevels.map { min(64, ($0 - 1) * 9 + 21) } ?? 0 }

    /// Page sizes of v1 tables: every power of two from 4 KiB to 2^51 below the address width,
    /// except 512 GiB (the kernel's `AMD_IOMMU_PGSIZES`, `GENMASK_ULL(51, 12) ^ SZ_512G`).
    public var hostPageSizes: PageSizeSet {
        let bits = hostAddressBits
        guard bits > 12 else { return [] }
        let below: UInt64 = bits >= 64 ? .max : (1 << UInt64(bits)) - 1
        let kernel: UInt64 = ((1 << 52) - 1) & ~0xfff & ~(1 << 39)
        return PageSizeSet(rawValue: below & kernel)
    }

    /// Guest (v2) table depths: 4, plus 5 when GATS is 1; empty without GTSup.
    public var guestLevels: [Int] {
        guard efr.guestTranslation else { return [] }
        return efr.guestAddressTranslationSize == 1 ? [4, 5] : [4]
    }

    /// Page sizes of v2 (x86-64 format) tables: 4 KiB, 2 MiB, 1 GiB.
    public var guestPageSizes: PageSizeSet { PageSizeSet([.size4K, .size2M, .size1G]) }

    /// PASID width: PASmax + 1 with guest translation, else 0.
    public var pasidBits: Int { efr.guestTranslation ? efr.pasidMaximum + 1 : 0 }

    /// Hardware nesting (v2 guest tables over a v1 parent): GTSup, GIOSup and GCR3TRPMode, as the
    /// Linux driver requires for a nest parent.
    public var nestingCapable: Bool {
        efr.guestTranslation && efr.guestIOProtection && efr2.gcr3TableRootPointerMode && hostLevels != nil
    }

    /// Dirty tracking in v1 tables: HDSup, and host translation available (the kernel refuses it
    /// when host translation is disabled).
    public var dirtyTrackingCapable: Bool { efr.hostDirty && hostLevels != nil }
}
