/// x86-64 first-stage table: VT-d first stage (§3.6, entries §9.7) and AMD v2 / GCR3 guest
/// tables (AMD IOMMU spec §2.2.6); the CPU's IA-32e paging layout.
///
/// P b0, R/W b1, U/S b2 (ANDed down the walk), PS b7 in PDE/PDPE (reserved above), PAT b12
/// in large leaves (not an address bit), XD b63 (ORed) when ``noExecuteEnabled``, reserved
/// otherwise. Inputs are canonical (sign-extended) unless `signExtended` is false (AMD v2
/// PASID 0 without sign extension).
public struct X86FirstStage: PageTableFormat {
    /// 4 (48-bit) or 5 (57-bit) levels.
    public let levels: Int
    /// MAXPHYADDR: output address bits (bits above are reserved).
    public let outputBits: Int
    public let signExtended: Bool
    /// `CAP.FS1GP`: 1G leaves.
    public let supports1G: Bool
    /// Bit 63 is XD (execute-disable), as with the CPU's `EFER.NXE` = 1; when false it is a
    /// reserved bit (a fault in any entry) and every leaf is executable. Default true: Linux
    /// runs with NX on and its IO tables may set XD.
    public let noExecuteEnabled: Bool

    public init(levels: Int = 4, outputBits: Int = 52, signExtended: Bool = true, supports1G: Bool = true,
                noExecuteEnabled: Bool = true) throws(FormatConfigurationError) {
        guard levels == 4 || levels == 5 else { throw FormatConfigurationError("x86 first stage has 4 or 5 levels") }
        guard (32...52).contains(outputBits) else { throw FormatConfigurationError("x86 physical address width must be 32...52 bits") }
        self.levels = levels
        self.outputBits = outputBits
        self.signExtended = signExtended
        self.supports1G = supports1G
        self.noExecuteEnabled = noExecuteEnabled
    }

    @inlinable static var present: UInt64 { 1 << 0 }
    @inlinable static var writable: UInt64 { 1 << 1 }
    @inlinable static var user: UInt64 { 1 << 2 }
    @inlinable static var accessed: UInt64 { 1 << 5 }
    @inlinable static var dirty: UInt64 { 1 << 6 }
    @inlinable static var pageSize: UInt64 { 1 << 7 }
    @inlinable static var executeDisable: UInt64 { 1 << 63 }
    @inlinable static var address: UInt64 { bitField(51, 12) }

    @inlinable public var topLevel: Int { levels - 1 }
    @inlinable public var entryBytes: Int { 8 }
    @inlinable public var inputExtension: InputExtension { signExtended ? .signExtended : .zero }
    @inlinable public func itemShift(level: Int) -> Int { 12 &+ 9 &* level }
    @inlinable public func indexBits(level: Int) -> Int { 9 }

    @inlinable public func decode(_ e: UInt64, level: Int) -> DecodedEntry {
        guard e & Self.present != 0 else { return .empty }
        var addr = e & Self.address
        guard addr >> UInt64(outputBits) == 0 else { return .fault(.outputBeyondWidth) }
        guard noExecuteEnabled || e & Self.executeDisable == 0 else { return .fault(.reservedBitsSet) }
        let ps = level > 0 && e & Self.pageSize != 0
        if ps && (level >= 3 || (level == 2 && !supports1G)) { return .fault(.reservedBitsSet) }
        var p: Permissions = .read
        if e & Self.writable != 0 { p.insert(.write) }
        if e & Self.user != 0 { p.insert(.user) }
        if e & Self.executeDisable == 0 { p.insert(.execute) }
        if level == 0 || ps {
            if ps {
                // Bit 12 is PAT; bits itemShift-1 ... 13 are reserved.
                guard e & bitField(itemShift(level: level) - 1, 13) == 0 else { return .fault(.reservedBitsSet) }
                addr &= ~bit(12)
            }
            return .leaf(DecodedLeaf(output: addr, sizeShift: itemShift(level: level), permissions: p, replicasShareOutput: true))
        }
        return .table(GuestPhysicalAddress(addr), nextLevel: level - 1, allows: p)
    }

    public func leafSizes(level: Int) -> UInt64 {
        level == 0 || level == 1 || (level == 2 && supports1G) ? bit(itemShift(level: level)) : 0
    }

    /// Present implies readable; without NX every leaf is executable too.
    public func canExpress(_ p: Permissions) -> Bool { p.contains(.read) && (noExecuteEnabled || p.contains(.execute)) }

    public func encodeLeaf(output: UInt64, sizeShift: Int, level: Int, permissions: Permissions, replica: Int) -> UInt64 {
        var e = (output & Self.address) | Self.present | Self.accessed
        if permissions.contains(.write) { e |= Self.writable | Self.dirty }
        if permissions.contains(.user) { e |= Self.user }
        if !permissions.contains(.execute) && noExecuteEnabled { e |= Self.executeDisable }
        if level > 0 { e |= Self.pageSize }
        return e
    }

    public func encodeTable(_ table: GuestPhysicalAddress, level: Int) -> UInt64 {
        (table.rawValue & Self.address) | Self.present | Self.writable | Self.user | Self.accessed
    }

    /// Address bits from the leaf's own size (a large leaf's PAT bit 12 lies below) up to the width.
    @inlinable public func leafRunField(level: Int) -> UInt64 { level <= 2 ? bitField(outputBits - 1, itemShift(level: level)) : 0 }

    /// P, R/W and U/S set; PS, XD and the address bits at or above the width clear.
    @inlinable public func tablePointerTest(level: Int) -> TablePointerTest {
        guard level > 0, level <= topLevel else { return .none }
        return TablePointerTest(mask: Self.present | Self.writable | Self.user | Self.pageSize | Self.executeDisable | bitField(51, outputBits),
                                value: Self.present | Self.writable | Self.user, address: Self.address, allows: .all)
    }
}
