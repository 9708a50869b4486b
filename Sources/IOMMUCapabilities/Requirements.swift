/// The IOMMU a VMM shows its guest.
public enum VirtualIOMMUKind: String, Hashable, Sendable, CustomStringConvertible {
    /// No vIOMMU: the guest programs DMA with guest-physical addresses.
    case none
    case intelVTd
    case armSMMUv3
    case amd
    /// virtio-iommu: map/unmap requests, no guest page table.
    case virtio

    /// The host kind that can walk this vIOMMU's guest tables in hardware; `nil` for none and virtio.
    public var hostKind: IOMMUKind? {
        switch self {
        case .intelVTd: .intelVTd
        case .armSMMUv3: .armSMMUv3
        case .amd: .amd
        case .none, .virtio: nil
        }
    }

    public var description: String { rawValue }
}

/// Whether the VMM wants the host to walk the guest's tables (hardware nesting).
public enum NestingPolicy: String, Hashable, Sendable {
    /// Hardware nesting or nothing.
    case required
    /// Hardware nesting when possible, else software mirroring.
    case preferred
    /// Software mirroring only.
    case forbidden
}

/// What the VMM promised the guest about one device's IOMMU. Guest-visible, so it never follows
/// the host implicitly: the host either supplies it or the device is refused.
public struct GuestRequirements: Hashable, Sendable {
    public var viommu: VirtualIOMMUKind
    /// The format of the guest's IO page tables; `nil` for no vIOMMU and virtio-iommu.
    public var format: PageTableFormatKind?
    /// The guest IOVA width the vIOMMU advertises (VT-d MGAW / levels, SMMUv3 stage-1 VA size, ...).
    /// Without a vIOMMU, ignored (``guestPhysicalAddressBits`` is what devices use).
    public var addressBits: Int
    /// Width of guest-physical addresses (the vIOMMU's output, the host's nested input).
    public var guestPhysicalAddressBits: Int
    /// Page sizes the guest may use in its tables (or, for virtio-iommu, its page-size mask).
    public var pageSizes: PageSizeSet
    /// PASID width shown to the guest; 0 for none.
    public var pasidBits: Int
    public var pri: Bool
    public var ats: Bool
    /// The vIOMMU tells the guest table walks are coherent (VT-d ECAP.C, SMMUv3 COHACC).
    public var coherentWalks: Bool
    public var nesting: NestingPolicy
    /// Dirty tracking of DMA, needed for live migration with the device running.
    public var dirtyTracking: Bool

    public init(
        viommu: VirtualIOMMUKind, format: PageTableFormatKind?, addressBits: Int, guestPhysicalAddressBits: Int,
        pageSizes: PageSizeSet, pasidBits: Int = 0, pri: Bool = false, ats: Bool = false,
        coherentWalks: Bool = false, nesting: NestingPolicy = .preferred, dirtyTracking: Bool = false
    ) {
        self.viommu = viommu
        self.format = format
        self.addressBits = addressBits
        self.guestPhysicalAddressBits = guestPhysicalAddressBits
        self.pageSizes = pageSizes
        self.pasidBits = pasidBits
        self.pri = pri
        self.ats = ats
        self.coherentWalks = coherentWalks
        self.nesting = nesting
        self.dirtyTracking = dirtyTracking
    }

    /// A VT-d guest in scalable mode using x86-64 first-stage tables of `levels` (4 or 5) levels;
    /// 4 KiB and 2 MiB pages, plus 1 GiB when `pages1G` (the guest's FS1GP).
    public static func intelVTdFirstStage(
        levels: Int = 4, pages1G: Bool = true, guestPhysicalAddressBits: Int = 39, nesting: NestingPolicy = .preferred
    ) -> Self {
        Self(viommu: .intelVTd, format: .x86_64(levels: levels), addressBits: 12 + 9 * levels,
             guestPhysicalAddressBits: guestPhysicalAddressBits,
             pageSizes: PageSizeSet([.size4K, .size2M] + (pages1G ? [.size1G] : [])), nesting: nesting)
    }

    /// A VT-d guest in legacy mode using second-stage tables of `levels` levels (4 KiB and 2 MiB pages).
    public static func intelVTdSecondStage(
        levels: Int = 4, guestPhysicalAddressBits: Int = 39, nesting: NestingPolicy = .preferred
    ) -> Self {
        Self(viommu: .intelVTd, format: .vtdSecondStage(levels: levels), addressBits: 12 + 9 * levels,
             guestPhysicalAddressBits: guestPhysicalAddressBits, pageSizes: PageSizeSet([.size4K, .size2M]),
             nesting: nesting)
    }

    /// An SMMUv3 guest using VMSAv8-64 stage-1 tables with `granule`, its page and block sizes
    /// (4K: 4K/2M/1G, 16K: 16K/32M, 64K: 64K/512M) and `addressBits` (48, or 52 with VAX).
    public static func armSMMUv3(
        granule: PageSize = .size4K, addressBits: Int = 48, guestPhysicalAddressBits: Int = 44,
        nesting: NestingPolicy = .preferred
    ) -> Self {
        let sizes: [PageSize] = switch granule {
        case .size16K: [.size16K, .size32M]
        case .size64K: [.size64K, .size512M]
        default: [.size4K, .size2M, .size1G]
        }
        return Self(viommu: .armSMMUv3, format: .armStage1(granule: granule), addressBits: addressBits,
                    guestPhysicalAddressBits: guestPhysicalAddressBits, pageSizes: PageSizeSet(sizes),
                    coherentWalks: true, nesting: nesting)
    }

    /// An AMD guest using v2 (x86-64 format) tables of `levels` levels.
    public static func amdV2(
        levels: Int = 4, guestPhysicalAddressBits: Int = 48, nesting: NestingPolicy = .preferred
    ) -> Self {
        Self(viommu: .amd, format: .x86_64(levels: levels), addressBits: 12 + 9 * levels,
             guestPhysicalAddressBits: guestPhysicalAddressBits,
             pageSizes: PageSizeSet([.size4K, .size2M, .size1G]), nesting: nesting)
    }

    /// A virtio-iommu guest: `pageSizes` is its page-size mask, `addressBits` its input range.
    public static func virtio(
        addressBits: Int = 48, guestPhysicalAddressBits: Int = 48, pageSizes: PageSizeSet = PageSizeSet([.size4K])
    ) -> Self {
        Self(viommu: .virtio, format: nil, addressBits: addressBits, guestPhysicalAddressBits: guestPhysicalAddressBits,
             pageSizes: pageSizes, nesting: .forbidden)
    }

    /// No vIOMMU: the device sees guest-physical addresses of `guestPhysicalAddressBits` bits.
    public static func noIOMMU(guestPhysicalAddressBits: Int, pageSizes: PageSizeSet = PageSizeSet([.size4K])) -> Self {
        Self(viommu: .none, format: nil, addressBits: guestPhysicalAddressBits,
             guestPhysicalAddressBits: guestPhysicalAddressBits, pageSizes: pageSizes, nesting: .forbidden)
    }

    /// The IOVA width a software mirror must hold: IOVAs `0 ..< 2^mirroredAddressBits`.
    ///
    /// A mirror IOAS is zero-extended, so only the lower half of a sign-extended guest table can
    /// sit at the same IOVA there. VT-d first-stage (x86-64) tables are sign-extended and the guest
    /// may only use their lower canonical half (VT-d specification 3.6): ``addressBits`` - 1.
    /// Other formats are zero-extended and use the full ``addressBits``. Arm stage-1 tables are
    /// the TTBR0 (lower) range here: a guest's TTBR1 (upper half) mappings are not mirrored, and
    /// an SMMUv3 guest whose devices use them is not served by software mirroring. AMD v2 tables
    /// for DMA without PASID are not sign-extended.
    public var mirroredAddressBits: Int {
        switch (viommu, format) {
        case (.intelVTd, .x86_64?): addressBits - 1
        default: addressBits
        }
    }

    /// Contradictions inside the requirements themselves, e.g. an SMMUv3 guest with x86 tables.
    public var inconsistencies: [String] {
        var out: [String] = []
        switch (viommu, format) {
        case (.none, nil), (.virtio, nil): break
        case (.intelVTd, .x86_64(let l)?) where l == 4 || l == 5: break
        case (.intelVTd, .vtdSecondStage(let l)?) where (3...5).contains(l): break
        case (.armSMMUv3, .armStage1(let g)?) where [.size4K, .size16K, .size64K].contains(g): break
        case (.amd, .x86_64(let l)?) where l == 4 || l == 5: break
        case (.amd, .amdV1(let l)?) where (1...6).contains(l): break
        default: out.append("a \(viommu) vIOMMU cannot use \(format.map(String.init(describing:)) ?? "no page table")")
        }
        if format == nil && nesting == .required { out.append("hardware nesting required without a guest page table") }
        if !(1...64).contains(addressBits) { out.append("address width \(addressBits) outside 1...64") }
        if !(1...64).contains(guestPhysicalAddressBits) {
            out.append("guest-physical width \(guestPhysicalAddressBits) outside 1...64")
        }
        if pageSizes.rawValue == 0 { out.append("no page size") }
        if !(0...20).contains(pasidBits) { out.append("PASID width \(pasidBits) outside 0...20") }
        return out
    }
}
