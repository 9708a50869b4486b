/// Arm short-descriptor (v7s) tables: SMMUv1/v2 AArch32 contexts (ARMv7-A ARM,
/// "Short-descriptor translation table format").
///
/// Two levels of 32-bit entries over a 32-bit input: L1 has 4096 entries of 1M (16 KiB
/// table), L2 has 256 entries of 4K (1 KiB table). L1: 0b01 table (b31:10), 0b1x section
/// (b31:20) or supersection (b18; b31:24, PA[35:32] in b23:20, PA[39:36] in b8:5). L2: 0b01
/// large page (b31:16, XN b15), 0b1x small page (b31:12, XN b0). Supersections and large pages
/// are one entry written 16 times with the same base. Access permissions use the simplified
/// model with the access flag: AP0 = AF, AP1 = unprivileged, AP2 = read-only, in an 8-bit
/// attribute block at b17:10 (L1) or b11:4 (L2).
public struct ArmV7Short: PageTableFormat {
    /// 32, or up to 40 with supersections' extended base address.
    public let outputBits: Int

    public init(outputBits: Int = 32) throws(FormatConfigurationError) {
        guard (32...40).contains(outputBits) else { throw FormatConfigurationError("v7s output is 32...40 bits") }
        self.outputBits = outputBits
    }

    @inlinable public func outputBits(leafShift sizeShift: Int) -> Int { sizeShift == 24 ? outputBits : 32 }

    @inlinable public var topLevel: Int { 1 }
    @inlinable public var entryBytes: Int { 4 }
    @inlinable public var inputExtension: InputExtension { .zero }
    @inlinable public func itemShift(level: Int) -> Int { level == 1 ? 20 : 12 }
    @inlinable public func indexBits(level: Int) -> Int { level == 1 ? 12 : 8 }

    /// Attribute block position: b10 at L1, b4 at L2.
    @inlinable func attributeShift(_ level: Int) -> Int { 16 - 6 * (2 - level) }

    @inlinable func permissions(_ e: UInt64, level: Int, executeNever: Bool) -> Permissions {
        let a = attributeShift(level)
        guard isSet(e, a) else { return [] }  // AP0: access flag clear
        var p: Permissions = .read
        if isSet(e, a + 1) { p.insert(.user) }
        if !isSet(e, a + 5) { p.insert(.write) }
        if !executeNever { p.insert(.execute) }
        return p
    }

    @inlinable public func decode(_ e: UInt64, level: Int) -> DecodedEntry {
        let type = e & 3
        guard type != 0 else { return .empty }
        if level == 1 {
            if type == 1 { return .table(GuestPhysicalAddress(e & 0xFFFF_FC00), nextLevel: 0, allows: .all) }
            // Type 0b11 is a section with PXN.
            let xn = isSet(e, 4) || type == 3
            if isSet(e, 18) {
                let oa = (e & 0xFF00_0000) | ((e >> 20) & 0xF) << 32 | ((e >> 5) & 0xF) << 36
                guard oa >> UInt64(outputBits) == 0 else { return .fault(.outputBeyondWidth) }
                return .leaf(DecodedLeaf(output: oa, sizeShift: 24, permissions: permissions(e, level: 1, executeNever: xn),
                                         replicasShareOutput: true))
            }
            return .leaf(DecodedLeaf(output: e & 0xFFF0_0000, sizeShift: 20, permissions: permissions(e, level: 1, executeNever: xn),
                                     replicasShareOutput: true))
        }
        if type == 1 {
            // Large page: b8:6 should be zero (TEX moved to b14:12).
            guard e & 0x1C0 == 0 else { return .fault(.reservedBitsSet) }
            return .leaf(DecodedLeaf(output: e & 0xFFFF_0000, sizeShift: 16,
                                     permissions: permissions(e, level: 0, executeNever: isSet(e, 15)), replicasShareOutput: true))
        }
        return .leaf(DecodedLeaf(output: e & 0xFFFF_F000, sizeShift: 12,
                                 permissions: permissions(e, level: 0, executeNever: isSet(e, 0)), replicasShareOutput: true))
    }

    public func leafSizes(level: Int) -> UInt64 { level == 1 ? bit(20) | bit(24) : bit(12) | bit(16) }

    public func canExpress(_ p: Permissions) -> Bool { p.contains(.read) }

    public func encodeLeaf(output: UInt64, sizeShift: Int, level: Int, permissions p: Permissions, replica: Int) -> UInt64 {
        let a = attributeShift(level)
        var e = bit(a)  // AF
        if p.contains(.user) { e |= bit(a + 1) }
        if !p.contains(.write) { e |= bit(a + 5) }
        switch sizeShift {
        case 24:
            e |= 2 | bit(18) | (output & 0xFF00_0000) | ((output >> 32) & 0xF) << 20 | ((output >> 36) & 0xF) << 5
            if !p.contains(.execute) { e |= bit(4) }
        case 20:
            e |= 2 | (output & 0xFFF0_0000)
            if !p.contains(.execute) { e |= bit(4) }
        case 16:
            e |= 1 | (output & 0xFFFF_0000)
            if !p.contains(.execute) { e |= bit(15) }
        default:
            e |= 2 | (output & 0xFFFF_F000)
            if !p.contains(.execute) { e |= 1 }
        }
        return e
    }

    public func encodeTable(_ table: GuestPhysicalAddress, level: Int) -> UInt64 {
        (table.rawValue & 0xFFFF_FC00) | 1
    }

    /// Small pages (b31:12) and sections (b31:20); large pages and supersections are
    /// replicated, so the walker takes them one by one.
    @inlinable public func leafRunField(level: Int) -> UInt64 { bitField(31, itemShift(level: level)) }

    /// An L1 entry of type 0b01.
    @inlinable public func tablePointerTest(level: Int) -> TablePointerTest {
        level == 1 ? TablePointerTest(mask: 3, value: 1, address: 0xFFFF_FC00, allows: .all) : .none
    }
}
