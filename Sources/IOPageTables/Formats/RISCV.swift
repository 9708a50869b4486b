/// RISC-V Sv39/Sv48/Sv57 tables (Privileged ISA "Sv39/Sv48/Sv57", Svnapot, Svpbmt) as the
/// RISC-V IOMMU walks them: first stage (`iosatp`, sign-extended inputs) or second stage
/// (`iohgatp` Sv39x4/48x4/57x4: a 16 KiB root with 2 more index bits, zero-extended inputs).
///
/// V b0, R/W/X b3:1 (000 = pointer; 010 and 110 reserved), U b4, A b6, D b7, PPN b53:10,
/// reserved b60:54, PBMT b62:61, N b63. Leaves may sit at any level; a superpage with
/// non-zero low PPN bits faults. Svnapot: a 4K-level leaf with N=1 and ppn[3:0]=1000 is one
/// 64K page written 16 times. Without hardware A/D updates, A=0 grants nothing and D=0 no write.
public struct RISCVPageTable: PageTableFormat {
    public enum Mode: Int, Hashable, Sendable { case sv39 = 3, sv48 = 4, sv57 = 5 }
    public enum Stage: Hashable, Sendable { case first, second }

    public let mode: Mode
    public let stage: Stage
    public let outputBits: Int
    public let svnapot: Bool
    public let svpbmt: Bool
    /// `DC.tc.SADE` / `GADE`: the IOMMU sets A/D itself.
    public let hardwareAccessedDirty: Bool

    public init(mode: Mode = .sv48, stage: Stage = .first, outputBits: Int = 56, svnapot: Bool = true, svpbmt: Bool = true,
                hardwareAccessedDirty: Bool = false) throws(FormatConfigurationError) {
        guard (32...56).contains(outputBits) else { throw FormatConfigurationError("RISC-V output is 32...56 bits") }
        self.mode = mode
        self.stage = stage
        self.outputBits = outputBits
        self.svnapot = svnapot
        self.svpbmt = svpbmt
        self.hardwareAccessedDirty = hardwareAccessedDirty
    }

    @inlinable static var valid: UInt64 { 1 << 0 }
    @inlinable static var read: UInt64 { 1 << 1 }
    @inlinable static var write: UInt64 { 1 << 2 }
    @inlinable static var execute: UInt64 { 1 << 3 }
    @inlinable static var user: UInt64 { 1 << 4 }
    @inlinable static var accessed: UInt64 { 1 << 6 }
    @inlinable static var dirty: UInt64 { 1 << 7 }
    @inlinable static var napot: UInt64 { 1 << 63 }
    @inlinable static var pbmt: UInt64 { bitField(62, 61) }
    @inlinable static var reserved: UInt64 { bitField(60, 54) }
    /// PPN, b53:10.
    @inlinable static var ppn: UInt64 { bitField(53, 10) }

    @inlinable public var topLevel: Int { mode.rawValue - 1 }
    @inlinable public var entryBytes: Int { 8 }
    @inlinable public var inputExtension: InputExtension { stage == .first ? .signExtended : .zero }
    @inlinable public func itemShift(level: Int) -> Int { 12 &+ 9 &* level }
    @inlinable public func indexBits(level: Int) -> Int { stage == .second && level == topLevel ? 11 : 9 }

    @inlinable public func decode(_ e: UInt64, level: Int) -> DecodedEntry {
        guard e & Self.valid != 0 else { return .empty }
        var reserved = Self.reserved
        if !svpbmt || e & Self.pbmt == Self.pbmt { reserved |= Self.pbmt }
        if !svnapot { reserved |= Self.napot }
        guard e & reserved == 0 else { return .fault(.reservedBitsSet) }
        let pa = ((e >> 10) & lowMask(44)) << 12
        guard pa >> UInt64(outputBits) == 0 else { return .fault(.outputBeyondWidth) }
        let xwr = (e >> 1) & 7
        if xwr == 0 {
            guard level > 0 else { return .fault(.leafNotAllowedAtLevel) }
            // Non-leaf: A, D, U, N and PBMT are reserved.
            guard e & (Self.accessed | Self.dirty | Self.user | Self.napot | Self.pbmt) == 0 else { return .fault(.reservedBitsSet) }
            return .table(GuestPhysicalAddress(pa), nextLevel: level - 1, allows: .all)
        }
        guard xwr != 2, xwr != 6 else { return .fault(.reservedBitsSet) }
        var p: Permissions = []
        if e & Self.read != 0 { p.insert(.read) }
        if e & Self.write != 0 { p.insert(.write) }
        if e & Self.execute != 0 { p.insert(.execute) }
        if e & Self.user != 0 { p.insert(.user) }
        if stage == .second {
            // G-stage accesses are U-mode accesses: U=0 grants nothing.
            p = p.contains(.user) ? p.subtracting(.user) : []
        }
        if !hardwareAccessedDirty {
            if e & Self.accessed == 0 { p = [] }
            if e & Self.dirty == 0 { p.remove(.write) }
        }
        var shift = itemShift(level: level)
        var oa = pa
        if e & Self.napot != 0 {
            guard level == 0, (pa >> 12) & 0xF == 0b1000 else { return .fault(.invalidPageSizeEncoding) }
            shift = 16
            oa = pa & ~lowMask(16)
        } else {
            guard pa & lowMask(shift) == 0 else { return .fault(.misalignedOutput) }
        }
        return .leaf(DecodedLeaf(output: oa, sizeShift: shift, permissions: p, replicasShareOutput: true))
    }

    public func leafSizes(level: Int) -> UInt64 {
        bit(itemShift(level: level)) | (level == 0 && svnapot ? bit(16) : 0)
    }

    public func canExpress(_ p: Permissions) -> Bool {
        guard !p.intersection([.read, .execute]).isEmpty else { return false }
        if p.contains(.write) && !p.contains(.read) { return false }
        return stage == .first || !p.contains(.user)
    }

    public func encodeLeaf(output: UInt64, sizeShift: Int, level: Int, permissions p: Permissions, replica: Int) -> UInt64 {
        var e = Self.valid | Self.accessed
        if p.contains(.read) { e |= Self.read }
        if p.contains(.write) { e |= Self.write | Self.dirty }
        if p.contains(.execute) { e |= Self.execute }
        if p.contains(.user) || stage == .second { e |= Self.user }
        var ppn = output >> 12
        if sizeShift == 16 && level == 0 {
            ppn = (ppn & ~0xF) | 0b1000
            e |= Self.napot
        }
        return e | (ppn & lowMask(44)) << 10
    }

    public func encodeTable(_ table: GuestPhysicalAddress, level: Int) -> UInt64 {
        Self.valid | ((table.rawValue >> 12) & lowMask(44)) << 10
    }

    /// The PPN bits (output bit n sits at bit n - 2) from the level's size up to the width
    /// (Svnapot runs are replicated, so the walker takes them one by one).
    @inlinable public func leafRunField(level: Int) -> UInt64 { bitField(outputBits - 3, itemShift(level: level) - 2) }

    /// V set; R/W/X, U, A, D, N, PBMT, bits 60:54 and the PPN bits at or above the width clear.
    @inlinable public func tablePointerTest(level: Int) -> TablePointerTest {
        guard level > 0, level <= topLevel else { return .none }
        let mask = Self.valid | Self.read | Self.write | Self.execute | Self.user | Self.accessed | Self.dirty | Self.napot | Self.pbmt
            | Self.reserved | bitField(53, 10 + outputBits - 12)
        return TablePointerTest(mask: mask, value: Self.valid, address: Self.ppn, addressShift: 2, allows: .all)
    }
}
