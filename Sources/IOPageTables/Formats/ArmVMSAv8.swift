/// Arm VMSAv8-64 long-descriptor tables (Arm ARM DDI 0487, "VMSAv8-64 translation table format
/// descriptors"), as an SMMUv3 walks them for stage 1 (context descriptor) and stage 2 (STE).
///
/// Granules 4K/16K/64K (9/11/13 index bits per level), start level from the input size,
/// stage-2 concatenated roots (up to 16 tables), the Contiguous bit (b52: 16/128/32 entries by
/// granule and level), 52-bit output (64K granule FEAT_LPA: OA[51:48] in b15:12; 4K/16K
/// FEAT_LPA2: OA[51:50] in b9:8). Stage-1 table bits APTable/XNTable restrict the subtree
/// unless hierarchical permissions are disabled (HPD / `CD.HAD`).
public struct ArmVMSAv8: PageTableFormat {
    public enum Stage: Hashable, Sendable { case stage1, stage2 }
    public enum Granule: Int, Hashable, Sendable {
        case size4K = 12, size16K = 14, size64K = 16
    }

    public let stage: Stage
    public let granule: Granule
    /// Input address bits (64 - TxSZ).
    public let inputBits: Int
    /// Output address size (OAS / IPS / PS): up to 48, or 52 with LPA (64K) or LPA2 (4K/16K).
    public let outputBits: Int
    /// log2 of the stage-2 tables concatenated at the initial level (0...4).
    public let concatenatedRootsLog2: Int
    /// A stage-1 TTBR1 table: inputs are the top `2^inputBits` bytes of the space.
    public let upperHalf: Bool
    /// APTable/UXNTable/PXNTable apply (false: HPD / `CD.HAD` set).
    public let hierarchicalPermissions: Bool
    /// The SMMU sets AF itself (`HA`, or `AFFD` / `S2AFFD`); otherwise an AF=0 leaf grants nothing.
    public let hardwareAccessFlag: Bool
    /// The SMMU manages dirty state (`CD.HD` / `STE.S2HD`): a leaf with DBM (bit 51) is writable
    /// while AP[2] (stage 1) or S2AP[1] (stage 2) still marks it clean.
    public let hardwareDirty: Bool

    @usableFromInline let levels: Int
    @usableFromInline let topIndexBits: Int
    /// Bits reserved in every valid descriptor of this layout.
    @usableFromInline let reservedBits: UInt64
    /// What ``tablePointerTest(level:)`` masks (0: no test, for the 52-bit layouts).
    @usableFromInline let plainTableMask: UInt64
    /// The top bit of ``leafRunField(level:)``.
    @usableFromInline let runFieldTop: Int

    public init(stage: Stage, granule: Granule = .size4K, inputBits: Int = 48, outputBits: Int = 48,
                concatenatedRootsLog2: Int = 0, upperHalf: Bool = false, hierarchicalPermissions: Bool = true,
                hardwareAccessFlag: Bool = false, hardwareDirty: Bool = false) throws(FormatConfigurationError) {
        let g = granule.rawValue
        let b = g - 3
        guard [32, 36, 40, 42, 44, 48, 52].contains(outputBits) else {
            throw FormatConfigurationError("Arm output size must be 32, 36, 40, 42, 44, 48 or 52 bits")
        }
        let maxInput = (granule == .size64K || outputBits == 52) ? 52 : 48
        guard inputBits > g, inputBits <= maxInput else {
            throw FormatConfigurationError("Arm input size must be \(g + 1)...\(maxInput) bits for this granule")
        }
        guard (0...4).contains(concatenatedRootsLog2), concatenatedRootsLog2 == 0 || stage == .stage2 else {
            throw FormatConfigurationError("only stage 2 concatenates 1...16 root tables")
        }
        guard !upperHalf || stage == .stage1 else { throw FormatConfigurationError("only stage 1 has a TTBR1 upper half") }
        let remaining = inputBits - g - concatenatedRootsLog2
        guard remaining > 0 else { throw FormatConfigurationError("input too small for the concatenation") }
        let levels = (remaining + b - 1) / b
        let top = inputBits - g - b * (levels - 1)
        let maxLevels = granule == .size64K ? 3 : (granule == .size4K && outputBits == 52 ? 5 : 4)
        guard levels <= maxLevels else { throw FormatConfigurationError("too many levels for the granule") }
        guard concatenatedRootsLog2 == 0 || top == b + concatenatedRootsLog2 else {
            throw FormatConfigurationError("concatenation must replace exactly one level")
        }
        self.stage = stage
        self.granule = granule
        self.inputBits = inputBits
        self.outputBits = outputBits
        self.concatenatedRootsLog2 = concatenatedRootsLog2
        self.upperHalf = upperHalf
        self.hierarchicalPermissions = hierarchicalPermissions
        self.hardwareAccessFlag = hardwareAccessFlag
        self.hardwareDirty = hardwareDirty
        self.levels = levels
        self.topIndexBits = top
        let lpa2 = outputBits == 52 && granule != .size64K, lpa64K = outputBits == 52 && granule == .size64K
        reservedBits = (lpa64K ? 0 : bitField(g - 1, 12)) | (lpa2 ? 0 : bitField(49, 48))
        var plain = Self.valid | Self.tableOrPage | reservedBits | bitField(47, outputBits)
        if stage == .stage1 && hierarchicalPermissions { plain |= Self.pxnTable | Self.uxnTable | Self.apTableNoUser | Self.apTableReadOnly }
        plainTableMask = lpa2 || lpa64K ? 0 : plain
        runFieldTop = min(lpa2 ? 49 : 47, outputBits - 1)
    }

    @inlinable static var valid: UInt64 { 1 << 0 }
    @inlinable static var tableOrPage: UInt64 { 1 << 1 }
    @inlinable static var accessFlag: UInt64 { 1 << 10 }
    @inlinable static var dirtyBitModifier: UInt64 { 1 << 51 }
    @inlinable static var contiguous: UInt64 { 1 << 52 }
    @inlinable static var pxn: UInt64 { 1 << 53 }
    @inlinable static var uxn: UInt64 { 1 << 54 }
    @inlinable static var pxnTable: UInt64 { 1 << 59 }
    @inlinable static var uxnTable: UInt64 { 1 << 60 }
    @inlinable static var apTableNoUser: UInt64 { 1 << 61 }
    @inlinable static var apTableReadOnly: UInt64 { 1 << 62 }

    /// FEAT_LPA2 descriptor layout (TCR.DS = 1).
    @inlinable var lpa2: Bool { outputBits == 52 && granule != .size64K }
    /// FEAT_LPA 64K layout.
    @inlinable var lpa64K: Bool { outputBits == 52 && granule == .size64K }

    @inlinable public var topLevel: Int { levels - 1 }
    @inlinable public var entryBytes: Int { 8 }
    @inlinable public var inputExtension: InputExtension { upperHalf ? .ones : .zero }
    @inlinable public func itemShift(level: Int) -> Int { granule.rawValue &+ (granule.rawValue &- 3) &* level }
    @inlinable public func indexBits(level: Int) -> Int { level == topLevel ? topIndexBits : granule.rawValue - 3 }

    /// Levels (0 = last) that may hold a block.
    @inlinable func blockAllowed(_ level: Int) -> Bool {
        switch granule {
        case .size4K: level == 1 || level == 2 || (level == 3 && lpa2)
        case .size16K: level == 1 || (level == 2 && lpa2)
        case .size64K: level == 1 || (level == 2 && lpa64K)
        }
    }

    /// log2 of the entries in a contiguous run at `level` ("The Contiguous bit").
    @inlinable func contiguousLog2(_ level: Int) -> Int {
        let n: Int = switch (granule, level) {
        case (.size4K, 0), (.size4K, 1), (.size4K, 2): 4
        case (.size16K, 0): 7
        case (.size16K, 1): 5
        case (.size64K, 0), (.size64K, 1): 5
        default: 0
        }
        return n <= indexBits(level: level) ? n : 0
    }

    @inlinable func outputAddress(_ e: UInt64) -> UInt64 {
        if lpa2 { return (e & bitField(49, 12)) | ((e >> 8) & 3) << 50 }
        if lpa64K { return (e & bitField(47, 16)) | ((e >> 12) & 0xF) << 48 }
        return e & bitField(47, 12)
    }

    func packOutput(_ a: UInt64) -> UInt64 {
        if lpa2 { return (a & bitField(49, 12)) | ((a >> 50) & 3) << 8 }
        if lpa64K { return (a & bitField(47, 16)) | ((a >> 48) & 0xF) << 12 }
        return a & bitField(47, 12)
    }

    @inlinable public func decode(_ e: UInt64, level: Int) -> DecodedEntry {
        guard e & Self.valid != 0 else { return .empty }
        guard e & reservedBits == 0 else { return .fault(.reservedBitsSet) }
        let oa = outputAddress(e)
        guard oa >> UInt64(outputBits) == 0 else { return .fault(.outputBeyondWidth) }
        let isTable = level > 0 && e & Self.tableOrPage != 0
        if isTable {
            var allows = Permissions.all
            if stage == .stage1 && hierarchicalPermissions {
                if e & Self.apTableReadOnly != 0 { allows.remove(.write) }
                if e & Self.apTableNoUser != 0 { allows.remove(.user) }
                if e & (Self.uxnTable | Self.pxnTable) != 0 { allows.remove(.execute) }
            }
            return .table(GuestPhysicalAddress(oa), nextLevel: level - 1, allows: allows)
        }
        // A page at the last level is 0b11; 0b01 there, or a block where none is allowed, is invalid.
        guard level == 0 ? e & Self.tableOrPage != 0 : blockAllowed(level) else { return .fault(.leafNotAllowedAtLevel) }
        let shift = itemShift(level: level)
        guard oa & lowMask(shift) == 0 else { return .fault(.reservedBitsSet) }
        var p: Permissions
        switch stage {
        case .stage1:
            p = .read
            if !isSet(e, 7) { p.insert(.write) }
            if isSet(e, 6) { p.insert(.user) }
            if e & (Self.pxn | Self.uxn) == 0 { p.insert(.execute) }
        case .stage2:
            p = []
            if isSet(e, 6) { p.insert(.read) }
            if isSet(e, 7) { p.insert(.write) }
            if e & (Self.pxn | Self.uxn) == 0 { p.insert(.execute) }
        }
        if hardwareDirty && e & Self.dirtyBitModifier != 0 { p.insert(.write) }
        if e & Self.accessFlag == 0 && !hardwareAccessFlag { p = [] }
        let contig = e & Self.contiguous != 0 ? contiguousLog2(level) : 0
        return .leaf(DecodedLeaf(output: oa, sizeShift: shift + contig, permissions: p, replicasShareOutput: false))
    }

    public func leafSizes(level: Int) -> UInt64 {
        guard level == 0 || blockAllowed(level) else { return 0 }
        let s = itemShift(level: level)
        let c = contiguousLog2(level)
        return bit(s) | (c > 0 ? bit(s + c) : 0)
    }

    public func canExpress(_ p: Permissions) -> Bool {
        switch stage {
        case .stage1: p.contains(.read)
        case .stage2: !p.intersection(.readWrite).isEmpty && !p.contains(.user)
        }
    }

    public func encodeLeaf(output: UInt64, sizeShift: Int, level: Int, permissions: Permissions, replica: Int) -> UInt64 {
        let shift = itemShift(level: level)
        var e = packOutput(output &+ (UInt64(replica) << UInt64(shift))) | Self.valid | Self.accessFlag
        if level == 0 { e |= Self.tableOrPage }
        if !lpa2 { e |= 3 << 8 }  // inner shareable
        if sizeShift > shift { e |= Self.contiguous }
        switch stage {
        case .stage1:
            if !permissions.contains(.write) { e |= bit(7) }
            if permissions.contains(.user) { e |= bit(6) }
            if !permissions.contains(.execute) { e |= Self.pxn | Self.uxn }
        case .stage2:
            e |= 0xF << 2  // MemAttr: normal, write-back
            if permissions.contains(.read) { e |= bit(6) }
            if permissions.contains(.write) { e |= bit(7) }
            if !permissions.contains(.execute) { e |= Self.uxn }
        }
        return e
    }

    public func encodeTable(_ table: GuestPhysicalAddress, level: Int) -> UInt64 {
        packOutput(table.rawValue) | Self.valid | Self.tableOrPage
    }

    /// OA[47:g] up to the width (LPA2: OA[49:12], 64K LPA: OA[47:16]; the address bits kept
    /// elsewhere lie outside); pages and blocks, contiguous or not (each item holds its own
    /// output).
    @inlinable @inline(__always) public func leafRunField(level: Int) -> UInt64 {
        level <= topLevel ? bitField(runFieldTop, itemShift(level: level)) : 0
    }

    /// Valid and table set; the reserved bits, the address bits at or above the width and
    /// (stage 1 with hierarchical permissions) APTable/UXNTable/PXNTable clear. Not for the
    /// 52-bit layouts, whose address is split.
    @inlinable public func tablePointerTest(level: Int) -> TablePointerTest {
        guard level > 0, level <= topLevel, plainTableMask != 0 else { return .none }
        return TablePointerTest(mask: plainTableMask, value: Self.valid | Self.tableOrPage, address: bitField(47, 12), allows: .all)
    }
}
