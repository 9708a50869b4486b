/// AMD IOMMU v1 host page table (AMD IOMMU spec #48882 §2.2.3, Tables 14 and 15).
///
/// PR b0, NextLevel b11:9, address b51:12, IR b61 / IW b62 (ANDed down the walk). Reserved:
/// bits 60:52 in a PDE, 58:52 in a PTE (where b59 is U and b60 FC). A PDE's NextLevel names the next table's level and may skip levels (the skipped
/// input bits must then be zero, so the walk reports nothing there). NextLevel 0 is a leaf of
/// the level's default size; 7 encodes the size in the address (bits n-2...12 one, bit n-1
/// zero for 2^n bytes) and the entry is replicated across the naturally aligned run. The
/// 6-level root decodes bits 63:57 (128 entries) and holds no leaves.
public struct AMDv1: PageTableFormat {
    /// `DTE.Mode`: 1...6 levels.
    public let levels: Int
    public let outputBits: Int

    public init(levels: Int = 4, outputBits: Int = 52) throws(FormatConfigurationError) {
        guard (1...6).contains(levels) else { throw FormatConfigurationError("AMD v1 has 1...6 levels (DTE.Mode)") }
        guard (32...52).contains(outputBits) else { throw FormatConfigurationError("AMD v1 output must be 32...52 bits") }
        self.levels = levels
        self.outputBits = outputBits
    }

    @inlinable static var present: UInt64 { 1 << 0 }
    @inlinable static var address: UInt64 { bitField(51, 12) }
    /// Reserved in every entry; a PDE also reserves 60:59 (a PTE's U and FC).
    @inlinable static var reserved: UInt64 { bitField(58, 52) }
    @inlinable static var pdeReserved: UInt64 { bitField(60, 52) }
    @inlinable static var readable: UInt64 { 1 << 61 }
    @inlinable static var writable: UInt64 { 1 << 62 }
    @inlinable static var nextLevelSize: UInt64 { 7 }

    @inlinable public var topLevel: Int { levels - 1 }
    @inlinable public var entryBytes: Int { 8 }
    @inlinable public var inputExtension: InputExtension { .zero }
    @inlinable public func itemShift(level: Int) -> Int { 12 &+ 9 &* level }
    @inlinable public func indexBits(level: Int) -> Int { level == 5 ? 7 : 9 }

    @inlinable public func decode(_ e: UInt64, level: Int) -> DecodedEntry {
        guard e & Self.present != 0 else { return .empty }
        guard e & Self.reserved == 0 else { return .fault(.reservedBitsSet) }
        let field = e & Self.address
        guard field >> UInt64(outputBits) == 0 else { return .fault(.outputBeyondWidth) }
        var p: Permissions = []
        if e & Self.readable != 0 { p.insert(.read) }
        if e & Self.writable != 0 { p.insert(.write) }
        let nextLevel = (e >> 9) & 7
        if nextLevel != 0 && nextLevel != Self.nextLevelSize {
            guard e & Self.pdeReserved == 0 else { return .fault(.reservedBitsSet) }
            guard level > 0 else { return .fault(.invalidNextLevel) }
            return .table(GuestPhysicalAddress(field), nextLevel: Int(nextLevel) - 1, allows: p)
        }
        guard level < 5 else { return .fault(.leafNotAllowedAtLevel) }
        let shift = itemShift(level: level)
        if nextLevel == 0 {
            guard field & lowMask(shift) == 0 else { return .fault(.misalignedOutput) }
            return .leaf(DecodedLeaf(output: field, sizeShift: shift, permissions: p, replicasShareOutput: true))
        }
        // NL=7: the first zero address bit (from 12) is bit n-1 for a 2^n-byte page.
        let sizeShift = (~(field | 0xFFF)).trailingZeroBitCount + 1
        guard sizeShift >= shift, sizeShift <= shift + 8, sizeShift <= 52 else { return .fault(.invalidPageSizeEncoding) }
        return .leaf(DecodedLeaf(output: field & ~lowMask(sizeShift), sizeShift: sizeShift, permissions: p,
                                 replicasShareOutput: true))
    }

    /// Leaves of 2^12 ... 2^51 bytes below the top level, except 512 GiB, which the kernel
    /// never installs because of a hardware erratum (`amdv1pt_possible_sizes`).
    public func leafSizes(level: Int) -> UInt64 {
        guard level < 5 else { return 0 }
        let s = itemShift(level: level)
        return bitField(min(s + 8, outputBits - 1), s) & ~bit(39)
    }

    public func canExpress(_ p: Permissions) -> Bool {
        !p.intersection(.readWrite).isEmpty && p.subtracting(.readWrite).isEmpty
    }

    public func encodeLeaf(output: UInt64, sizeShift: Int, level: Int, permissions: Permissions, replica: Int) -> UInt64 {
        var e = (output & Self.address) | Self.present
        if permissions.contains(.read) { e |= Self.readable }
        if permissions.contains(.write) { e |= Self.writable }
        if sizeShift > itemShift(level: level) {
            e |= Self.nextLevelSize << 9 | (lowMask(sizeShift - 1) & ~0xFFF)
        }
        return e
    }

    public func encodeTable(_ table: GuestPhysicalAddress, level: Int) -> UInt64 {
        (table.rawValue & Self.address) | Self.present | Self.readable | Self.writable | UInt64(level) << 9
    }

    /// Address bits from the level's size up to the width: NextLevel-0 leaves, and NL=7 leaves
    /// of one item (their size pattern lies below the field; longer NL=7 runs are replicated,
    /// so the walker takes them one by one).
    @inlinable public func leafRunField(level: Int) -> UInt64 {
        level < 5 ? bitField(outputBits - 1, itemShift(level: level)) : 0
    }

    /// PR, IR and IW set, NextLevel the next level down (no skipping); bits 60:52 and the
    /// address bits at or above the width clear.
    @inlinable public func tablePointerTest(level: Int) -> TablePointerTest {
        guard level > 0, level <= topLevel else { return .none }
        return TablePointerTest(mask: Self.present | Self.readable | Self.writable | bitField(11, 9) | Self.pdeReserved | bitField(51, outputBits),
                                value: Self.present | Self.readable | Self.writable | UInt64(level) << 9, address: Self.address,
                                allows: .readWrite)
    }
}
