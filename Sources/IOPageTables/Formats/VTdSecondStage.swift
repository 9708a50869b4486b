/// Intel VT-d second-stage table (VT-d spec §3.7, entries §9.8).
///
/// No present bit: an entry is present iff R or W is set, and R/W are ANDed down the walk.
/// PS marks a 2M (PDE) or 1G (PDPE) leaf and is reserved in PML4E/PML5E. Reserved bits,
/// as the spec's per-level masks: address bits at or above the host address width, bit 11
/// (SNP) in every non-leaf entry and, without snoop control, in leaves too, bit 62 (TM), and
/// the low address bits of a large leaf.
public struct VTdSecondStage: PageTableFormat {
    /// 3, 4 or 5 levels (context `AW` = levels - 2): 39, 48 or 57 input bits.
    public let levels: Int
    /// Host address width (HAW): output address bits.
    public let outputBits: Int
    /// `CAP.SLLPS` bit 0 (2M) and bit 1 (1G).
    public let supports2M: Bool
    public let supports1G: Bool
    /// `ECAP.SC`: bit 11 (SNP) is allowed in leaves (never in entries that point to a table).
    public let snoopControl: Bool

    public init(levels: Int = 4, outputBits: Int = 48, supports2M: Bool = true, supports1G: Bool = true,
                snoopControl: Bool = false) throws(FormatConfigurationError) {
        guard (3...5).contains(levels) else { throw FormatConfigurationError("VT-d second stage has 3, 4 or 5 levels") }
        guard (32...52).contains(outputBits) else { throw FormatConfigurationError("VT-d address width must be 32...52 bits") }
        self.levels = levels
        self.outputBits = outputBits
        self.supports2M = supports2M
        self.supports1G = supports1G
        self.snoopControl = snoopControl
    }

    @inlinable static var read: UInt64 { 1 << 0 }
    @inlinable static var write: UInt64 { 1 << 1 }
    @inlinable static var pageSize: UInt64 { 1 << 7 }
    @inlinable static var snoop: UInt64 { 1 << 11 }
    @inlinable static var transientMapping: UInt64 { 1 << 62 }
    @inlinable static var address: UInt64 { bitField(51, 12) }

    @inlinable public var topLevel: Int { levels - 1 }
    @inlinable public var entryBytes: Int { 8 }
    @inlinable public var inputExtension: InputExtension { .zero }
    @inlinable public func itemShift(level: Int) -> Int { 12 &+ 9 &* level }
    @inlinable public func indexBits(level: Int) -> Int { 9 }

    @inlinable func largeAllowed(_ level: Int) -> Bool { (level == 1 && supports2M) || (level == 2 && supports1G) }

    @inlinable public func decode(_ e: UInt64, level: Int) -> DecodedEntry {
        guard e & (Self.read | Self.write) != 0 else { return .empty }
        let addr = e & Self.address
        guard addr >> UInt64(outputBits) == 0 else { return .fault(.outputBeyondWidth) }
        var reserved = Self.transientMapping | (snoopControl ? 0 : Self.snoop)
        let ps = e & Self.pageSize != 0
        if level >= 3 { reserved |= Self.pageSize }
        else if level > 0 && ps && !largeAllowed(level) { return .fault(.reservedBitsSet) }
        let leaf = level == 0 || ps
        if leaf && level > 0 { reserved |= bitField(itemShift(level: level) - 1, 12) }
        // SNP is a leaf attribute: VT-d §9.8 lists bit 11 as reserved in the SS-PML5E, SS-PML4E
        // and the SS-PDPE/SS-PDE that reference a table, whatever ECAP.SC says. QEMU's emulated
        // VT-d agrees: its non-leaf masks VTD_SPTE_PAGE_L2/L3/L4_RSVD_MASK always hold
        // VTD_SPTE_SNP (0x800), and snoop control clears it only from the leaf masks.
        if !leaf { reserved |= Self.snoop }
        guard e & reserved == 0 else { return .fault(.reservedBitsSet) }
        var p: Permissions = []
        if e & Self.read != 0 { p.insert(.read) }
        if e & Self.write != 0 { p.insert(.write) }
        if leaf {
            return .leaf(DecodedLeaf(output: addr, sizeShift: itemShift(level: level), permissions: p, replicasShareOutput: true))
        }
        return .table(GuestPhysicalAddress(addr), nextLevel: level - 1, allows: p)
    }

    public func leafSizes(level: Int) -> UInt64 {
        level == 0 || largeAllowed(level) ? bit(itemShift(level: level)) : 0
    }

    public func canExpress(_ p: Permissions) -> Bool {
        !p.intersection(.readWrite).isEmpty && p.subtracting(.readWrite).isEmpty
    }

    public func encodeLeaf(output: UInt64, sizeShift: Int, level: Int, permissions: Permissions, replica: Int) -> UInt64 {
        var e = output & Self.address
        if permissions.contains(.read) { e |= Self.read }
        if permissions.contains(.write) { e |= Self.write }
        if level > 0 { e |= Self.pageSize }
        return e
    }

    public func encodeTable(_ table: GuestPhysicalAddress, level: Int) -> UInt64 {
        (table.rawValue & Self.address) | Self.read | Self.write
    }

    /// Address bits from the leaf's own size (bit 12, 21 or 30) up to the width.
    @inlinable public func leafRunField(level: Int) -> UInt64 { level <= 2 ? bitField(outputBits - 1, itemShift(level: level)) : 0 }

    /// R and W set; PS, SNP, TM and the address bits at or above the width clear.
    @inlinable public func tablePointerTest(level: Int) -> TablePointerTest {
        guard level > 0, level <= topLevel else { return .none }
        return TablePointerTest(mask: Self.read | Self.write | Self.pageSize | Self.snoop | Self.transientMapping | bitField(51, outputBits),
                                value: Self.read | Self.write, address: Self.address, allows: .readWrite)
    }
}
