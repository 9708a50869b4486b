/// How input addresses above a table's input width are formed.
public enum InputExtension: Hashable, Sendable {
    /// Upper bits are zero (VT-d second stage, AMD v1, Arm TTBR0 and stage 2, RISC-V G-stage).
    case zero
    /// Upper bits copy the top input bit: two canonical halves (x86 first stage, RISC-V Sv*).
    case signExtended
    /// Upper bits are all one (an Arm stage-1 TTBR1 table: the top of the space).
    case ones
}

/// What one table entry means, as a format decodes it.
public enum DecodedEntry: Hashable, Sendable {
    /// Not present: translates nothing.
    case empty
    /// A pointer to the table of `nextLevel` (normally `level - 1`; AMD v1 may skip levels).
    /// `allows` is what the subtree may grant: hierarchical permissions (x86, VT-d, AMD
    /// AND them; Arm table bits restrict).
    case table(GuestPhysicalAddress, nextLevel: Int, allows: Permissions)
    /// A translation.
    case leaf(DecodedLeaf)
    /// The entry itself is malformed.
    case fault(PageTableFault.Reason)
}

/// A leaf entry as decoded: one item of a possibly contiguous run.
public struct DecodedLeaf: Hashable, Sendable {
    /// The output address this entry holds (for a run with per-item outputs, this item's).
    public var output: UInt64
    /// log2 of the whole leaf's bytes: the item size, or more for a contiguous run (of at
    /// most 256 items, aligned to its size; the walker faults a longer one).
    public var sizeShift: Int
    public var permissions: Permissions
    /// Every item of a run holds the run's base output (AMD NL=7, v7s, Svnapot) rather than
    /// its own (Arm contiguous hint).
    public var replicasShareOutput: Bool

    @inlinable
    public init(output: UInt64, sizeShift: Int, permissions: Permissions, replicasShareOutput: Bool) {
        self.output = output
        self.sizeShift = sizeShift
        self.permissions = permissions
        self.replicasShareOutput = replicasShareOutput
    }
}

/// A description of one IO page-table format: the generic engine does the rest.
///
/// Levels are numbered like Linux's generic page table: level 0 is the leaf-most table and
/// ``topLevel`` the root. An entry at `level` translates `2^itemShift(level)` input bytes and
/// a table at `level` has `2^indexBits(level)` entries. Descriptions are small value types.
public protocol PageTableFormat: Sendable, Hashable {
    /// The root table's level.
    var topLevel: Int { get }
    /// Bytes per entry: 8, or 4 (Arm v7s).
    var entryBytes: Int { get }
    /// Bits of output address the format (as configured) can produce.
    var outputBits: Int { get }
    var inputExtension: InputExtension { get }

    /// log2 of the input bytes one entry at `level` translates.
    func itemShift(level: Int) -> Int
    /// log2 of the number of entries in a table at `level`.
    func indexBits(level: Int) -> Int
    /// Decodes a raw entry (4-byte entries are zero-extended) found at `level`.
    func decode(_ entry: UInt64, level: Int) -> DecodedEntry

    /// Output bits a leaf of `2^sizeShift` bytes can hold (v7s: only supersections pass 32 bits).
    func outputBits(leafShift sizeShift: Int) -> Int
    /// Leaf sizes a map may install at `level`, as a bitmap (bit n: 2^n bytes).
    func leafSizes(level: Int) -> UInt64
    /// Whether a leaf can carry exactly `permissions`.
    func canExpress(_ permissions: Permissions) -> Bool
    /// The raw entry for item `replica` of a leaf of `2^sizeShift` bytes at output `output`.
    func encodeLeaf(output: UInt64, sizeShift: Int, level: Int, permissions: Permissions, replica: Int) -> UInt64
    /// The raw entry pointing at a table (of level `level - 1`).
    func encodeTable(_ table: GuestPhysicalAddress, level: Int) -> UInt64

    /// The bits of a raw leaf entry at `level` that hold its output address from one item
    /// (`2^itemShift(level)` bytes) up to the output width: one contiguous field, whose lowest
    /// bit is the step that moves the output on by one item. `0` (the default) turns the
    /// walker's run fast path off at this level.
    ///
    /// The walker takes a run of leaves, each entry the previous one plus the step, after
    /// decoding only the run's first entry. A format giving a field promises, for every raw
    /// entry `e` that ``decode(_:level:)`` reads as a leaf `L` with one item or with per-item
    /// outputs (`replicasShareOutput == false`), and every `k` for which `e &+ k &* step`
    /// differs from `e` only inside the field: `decode(e &+ k &* step)` is `L` with output
    /// `L.output + k << itemShift(level)` (the same size, permissions and replica kind). That
    /// holds when the decoder reads those bits only as the output address and the field stops
    /// below the width. The format tests check the promise on encoded leaves of every format and
    /// on the same with random attribute bits flipped.
    func leafRunField(level: Int) -> UInt64

    /// A mask test for the common pointer to the next table at `level` (> 0): the walker's
    /// descent takes an entry that passes it without decoding it. A format giving a test
    /// promises that every raw entry `e` with ``TablePointerTest/matches(_:)`` decodes (by
    /// ``decode(_:level:)``) as `.table(GuestPhysicalAddress(test.table(e)), nextLevel: level - 1,
    /// allows: test.allows)`. ``TablePointerTest/none`` (the default) matches nothing. The
    /// tests check the promise on random entries of every format.
    func tablePointerTest(level: Int) -> TablePointerTest
}

/// Which raw entries are plain table pointers (``PageTableFormat/tablePointerTest(level:)``):
/// those with `raw & mask == value`; the table's address is `(raw & address) << addressShift`.
public struct TablePointerTest: Hashable, Sendable {
    public var mask: UInt64
    public var value: UInt64
    public var address: UInt64
    public var addressShift: Int
    /// What the subtree may grant (hierarchical permissions).
    public var allows: Permissions

    @inlinable
    public init(mask: UInt64, value: UInt64, address: UInt64, addressShift: Int = 0, allows: Permissions) {
        self.mask = mask
        self.value = value
        self.address = address
        self.addressShift = addressShift
        self.allows = allows
    }

    /// Matches no entry.
    @inlinable public static var none: TablePointerTest { TablePointerTest(mask: 0, value: 1, address: 0, allows: []) }

    @inlinable @inline(__always)
    public func matches(_ raw: UInt64) -> Bool { raw & mask == value }

    /// The table an entry that matches points to.
    @inlinable @inline(__always)
    public func table(_ raw: UInt64) -> UInt64 { (raw & address) << UInt64(addressShift) }
}

extension PageTableFormat {
    @inlinable
    public func outputBits(leafShift sizeShift: Int) -> Int { outputBits }

    /// No run fast path.
    @inlinable
    public func leafRunField(level: Int) -> UInt64 { 0 }

    /// No descent fast path.
    @inlinable
    public func tablePointerTest(level: Int) -> TablePointerTest { .none }

    /// Input bits the whole table translates (up to 64).
    @inlinable
    public var inputBits: Int { itemShift(level: topLevel) + indexBits(level: topLevel) }

    /// Bytes of a table at `level` (also its required alignment).
    @inlinable @inline(__always)
    public func tableBytes(level: Int) -> Int { entryBytes << indexBits(level: level) }

    /// Every leaf size the format can install, as a bitmap (bit n: 2^n bytes).
    public var allLeafSizes: PageSizeSet {
        var all: UInt64 = 0
        for l in 0...topLevel { all |= leafSizes(level: l) }
        return PageSizeSet(rawValue: all)
    }

    /// The span address (table-relative, `inputBits` wide) of an input address, or `nil` when the
    /// address is not one the table translates (above the width, or non-canonical).
    @inlinable @inline(__always)
    public func spanAddress(of iova: IOVA) -> UInt64? {
        let bits = inputBits
        let v = iova.rawValue
        if bits >= 64 { return v }
        let m = lowMask(bits)
        switch inputExtension {
        case .zero: return v <= m ? v : nil
        case .ones: return v & ~m == ~m ? v & m : nil
        case .signExtended:
            let high = v >> UInt64(bits - 1)
            let ones = UInt64.max >> UInt64(bits - 1)
            return (high == 0 || high == ones) ? v & m : nil
        }
    }

    /// The span addresses of `range` when the table translates all of it in one piece (within
    /// one half of a sign-extended space), or `nil`.
    @inlinable @inline(__always)
    public func spanRange(of range: IOVARange) -> (first: UInt64, last: UInt64)? {
        guard let first = spanAddress(of: range.first), let last = spanAddress(of: range.last), first <= last else { return nil }
        let bits = inputBits
        if inputExtension == .signExtended && bits < 64 && (first ^ last) >> UInt64(bits - 1) != 0 { return nil }
        return (first, last)
    }

    /// The input address of a span address (the inverse of ``spanAddress(of:)``).
    @inlinable @inline(__always)
    public func inputAddress(ofSpan s: UInt64) -> IOVA {
        let bits = inputBits
        if bits >= 64 { return IOVA(s) }
        switch inputExtension {
        case .zero: return IOVA(s)
        case .ones: return IOVA(s | ~lowMask(bits))
        case .signExtended: return IOVA(isSet(s, bits - 1) ? s | ~lowMask(bits) : s)
        }
    }

    /// The input ranges the table translates, in span order (two for sign extension).
    public var inputRanges: [IOVARange] {
        let (low, high) = inputRangePair
        return high.map { [low, $0] } ?? [low]
    }

    /// ``inputRanges`` without an array: the lower range, and the upper half when the input is
    /// sign-extended.
    @inlinable
    public var inputRangePair: (IOVARange, IOVARange?) {
        let bits = inputBits
        if inputExtension == .signExtended && bits < 64 {
            let half = lowMask(bits - 1)
            return (try! IOVARange(first: IOVA(0), last: IOVA(half)), try! IOVARange(first: IOVA(~half), last: IOVA(.max)))
        }
        return (try! IOVARange(first: inputAddress(ofSpan: 0), last: inputAddress(ofSpan: lowMask(bits))), nil)
    }
}

/// One translation found by a walk: a whole leaf, huge and contiguous ones kept whole.
public struct LeafExtent: Hashable, Sendable, CustomStringConvertible {
    /// The first input address the leaf translates (canonical form for sign-extended formats).
    public var inputFirst: IOVA
    /// The last input address the leaf translates.
    public var inputLast: IOVA
    /// The output address of `inputFirst`.
    public var output: GuestPhysicalAddress
    /// The leaf size (the whole contiguous run for contiguous/replicated entries).
    public var size: PageSize
    /// Effective permissions after hierarchical rules.
    public var permissions: Permissions
    /// The level of the entry (0 = leaf-most table).
    public var level: Int

    public init(input: IOVARange, output: GuestPhysicalAddress, size: PageSize, permissions: Permissions, level: Int) {
        self.init(inputFirst: input.first, inputLast: input.last, output: output, size: size, permissions: permissions, level: level)
    }

    @inlinable
    init(inputFirst: IOVA, inputLast: IOVA, output: GuestPhysicalAddress, size: PageSize, permissions: Permissions, level: Int) {
        self.inputFirst = inputFirst
        self.inputLast = inputLast
        self.output = output
        self.size = size
        self.permissions = permissions
        self.level = level
    }

    /// The input addresses the leaf translates.
    public var input: IOVARange { try! IOVARange(first: inputFirst, last: inputLast) }

    public var description: String { "\(input) -> \(output) \(size) \(permissions) L\(level)" }
}
