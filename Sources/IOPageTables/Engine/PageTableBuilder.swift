/// Hands out guest-physical memory for new tables; supplied by the caller.
public protocol TablePageAllocator {
    /// `bytes` bytes aligned to `alignment` (both powers of two), or `nil` when exhausted.
    /// The builder zeroes the table itself.
    mutating func allocateTable(bytes: Int, alignment: Int) -> GuestPhysicalAddress?
}

/// A bump allocator over one guest-physical range; never frees.
public struct BumpTableAllocator: TablePageAllocator, Hashable, Sendable {
    public private(set) var next: UInt64
    public let limit: UInt64
    /// Set once the range's last byte is handed out (`next` cannot pass 2^64 - 1).
    private var exhausted = false

    /// Tables are carved from `[range.first, range.last]`.
    public init(range: GuestPhysicalRange) {
        self.next = range.first.rawValue
        self.limit = range.last.rawValue
    }

    public mutating func allocateTable(bytes: Int, alignment: Int) -> GuestPhysicalAddress? {
        guard !exhausted else { return nil }
        let a = UInt64(alignment)
        let (rounded, o1) = next.addingReportingOverflow(a - 1)
        guard !o1 else { return nil }
        let start = rounded & ~(a - 1)
        let (end, o2) = start.addingReportingOverflow(UInt64(bytes) - 1)
        guard !o2, end <= limit else { return nil }
        if end == limit { exhausted = true } else { next = end + 1 }
        return GuestPhysicalAddress(start)
    }
}

/// Why a map, unmap or translation into a table failed. Nothing is left half-done: a failed
/// map removes the leaves it installed.
public enum PageTableBuildError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The format installs no leaf of this size.
    case unsupportedLeafSize(PageSize)
    /// The input or output address is not aligned to the leaf size (or a range is not a multiple
    /// of the smallest leaf).
    case misaligned(input: IOVA, output: GuestPhysicalAddress, size: PageSize)
    /// The input is above the format's width or not canonical.
    case inputOutsideSpace(IOVA)
    /// The output would use bits at or above the format's output width.
    case outputBeyondWidth(GuestPhysicalAddress)
    /// The format cannot express these permissions (write-only on x86, none at all, ...).
    case permissionsNotExpressible(Permissions)
    /// Something already translates part of the range.
    case alreadyMapped(IOVA)
    /// The unmap range cuts a leaf: unmap never splits (remove the whole leaf and remap the rest).
    case wouldSplitLeaf(LeafExtent)
    /// The allocator returned no memory for a table.
    case outOfTableMemory
    /// A table lies outside the writable guest memory.
    case guestMemoryWrite(GuestPhysicalAddress)
    /// The existing table is malformed (or uses a layout the builder does not extend, such as
    /// an AMD v1 skipped level).
    case tableFault(PageTableFault)

    public var description: String {
        switch self {
        case .unsupportedLeafSize(let s): "the format has no \(s) leaf"
        case .misaligned(let i, let o, let s): "\(i) -> \(o) is not \(s)-aligned"
        case .inputOutsideSpace(let i): "\(i) is outside the format's input space"
        case .outputBeyondWidth(let o): "\(o) is beyond the format's output width"
        case .permissionsNotExpressible(let p): "the format cannot express permissions \(p)"
        case .alreadyMapped(let i): "\(i) is already mapped"
        case .wouldSplitLeaf(let e): "unmap would split leaf \(e)"
        case .outOfTableMemory: "no memory for a new table"
        case .guestMemoryWrite(let a): "cannot write guest memory at \(a)"
        case .tableFault(let f): "table fault: \(f)"
        }
    }
}

/// Builds and edits a table of one format in caller-provided guest memory.
///
/// `map` installs leaves (choosing the largest sizes that fit unless told one), refuses to
/// overwrite anything present, and may replace an *empty* subtree by a larger leaf (the old
/// tables are abandoned to the allocator's owner). `unmap` removes whole leaves only and never
/// splits: a range that cuts a leaf throws ``PageTableBuildError/wouldSplitLeaf(_:)`` before
/// changing anything, as Linux's generic page table and iommufd's IOAS do.
public struct PageTableBuilder<Format: PageTableFormat, Memory: WritableGuestMemory, Allocator: TablePageAllocator> {
    public let format: Format
    public let memory: Memory
    public var allocator: Allocator
    /// Guest-physical address of the root table.
    public let root: GuestPhysicalAddress
    /// The budget of the walks the builder does itself (unmap's, and map's check that a subtree
    /// it replaces by a leaf is empty) and the default of ``walker(budget:)``; raise it to unmap
    /// more than ``WalkBudget/default`` covers at once. ``mirror(_:range:)`` walks with the
    /// source walker's own budget.
    public var walkBudget: WalkBudget = .default

    /// A new, empty table: allocates and zeroes the root.
    /// - Throws: ``PageTableBuildError/outOfTableMemory`` or ``PageTableBuildError/guestMemoryWrite(_:)``.
    public init(format: Format, memory: Memory, allocator: Allocator) throws(PageTableBuildError) {
        self.format = format
        self.memory = memory
        self.allocator = allocator
        let bytes = format.tableBytes(level: format.topLevel)
        guard let root = self.allocator.allocateTable(bytes: bytes, alignment: bytes) else { throw .outOfTableMemory }
        self.root = root
        try zero(root, bytes: bytes)
    }

    /// Edits the existing table at `root`.
    public init(format: Format, memory: Memory, allocator: Allocator, root: GuestPhysicalAddress) {
        self.format = format
        self.memory = memory
        self.allocator = allocator
        self.root = root
    }

    /// A walker over this table, with ``walkBudget`` unless told another budget.
    public func walker(budget: WalkBudget? = nil) -> PageTableWalker<Format, Memory> {
        PageTableWalker(format: format, memory: memory, root: root, budget: budget ?? walkBudget)
    }

    // MARK: Map

    /// Maps one leaf of `size` bytes from `input` to `output`.
    /// - Throws: ``PageTableBuildError`` for an unsupported size, misalignment, addresses outside
    ///   the format's widths, inexpressible permissions, an existing translation, or no memory.
    public mutating func map(_ input: IOVA, to output: GuestPhysicalAddress, size: PageSize,
                             permissions: Permissions) throws(PageTableBuildError) {
        guard let span = format.spanAddress(of: input) else { throw .inputOutsideSpace(input) }
        guard format.canExpress(permissions) else { throw .permissionsNotExpressible(permissions) }
        guard input.isAligned(to: size), output.isAligned(to: size) else {
            throw .misaligned(input: input, output: output, size: size)
        }
        let s = Int(size.shift)
        guard (output.rawValue | (size.bytes - 1)) <= lowMask(format.outputBits(leafShift: s)) else { throw .outputBeyondWidth(output) }
        guard let level = (0...format.topLevel).first(where: { format.leafSizes(level: $0) & bit(s) != 0 }) else {
            throw .unsupportedLeafSize(size)
        }
        guard (span | lowMask(s)) <= lowMask(format.inputBits) else { throw .inputOutsideSpace(input) }
        try install(span: span, output: output.rawValue, sizeShift: s, level: level, permissions: permissions, input: input)
    }

    /// Maps `range` to `output` with the largest leaves alignment allows (among `sizes`, when
    /// given); returns the leaves installed.
    ///
    /// Consecutive leaves of one size that share a table are installed together: one descent
    /// from the root and one pass over their slots per table (a dense range of 4K leaves costs
    /// about an entry write per leaf), with the same checks and errors as mapping each leaf.
    /// - Throws: as ``map(_:to:size:permissions:)``; on failure, leaves already installed by
    ///   this call are removed again.
    @discardableResult
    public mutating func map(_ range: IOVARange, to output: GuestPhysicalAddress, permissions: Permissions,
                             sizes allowed: PageSizeSet? = nil) throws(PageTableBuildError) -> Int {
        let sizes = format.allLeafSizes.rawValue & (allowed?.rawValue ?? .max)
        var v = range.first.rawValue
        var o = output.rawValue
        var leaves = 0
        do throws(PageTableBuildError) {
            while true {
                let remainingMinusOne = range.last.rawValue - v
                var best = -1
                for s in stride(from: 63, through: 0, by: -1) where sizes & bit(s) != 0 {
                    if v & lowMask(s) == 0, o & lowMask(s) == 0, lowMask(s) <= remainingMinusOne { best = s; break }
                }
                guard best >= 0 else {
                    throw .misaligned(input: IOVA(v), output: GuestPhysicalAddress(o),
                                      size: PageSize(shift: sizes == 0 ? 12 : sizes.trailingZeroBitCount))
                }
                let n = leavesInARow(input: v, output: o, shift: best, remainingMinusOne: remainingMinusOne, sizes: sizes,
                                     permissions: permissions)
                if n > 1 {
                    let level = (0...format.topLevel).first { format.leafSizes(level: $0) & bit(best) != 0 }!
                    try install(span: format.spanAddress(of: IOVA(v))!, output: o, sizeShift: best, level: level,
                                permissions: permissions, input: IOVA(v), leaves: n)
                } else {
                    try map(IOVA(v), to: GuestPhysicalAddress(o), size: PageSize(shift: best), permissions: permissions)
                }
                let bytes = UInt64(n) << UInt64(best)
                leaves += n
                if bytes &- 1 == remainingMinusOne { break }
                v &+= bytes
                o &+= bytes
            }
        } catch {
            // What this call installed is exactly range.first up to `v`, in order.
            if v > range.first.rawValue {
                _ = try? unmap(try! IOVARange(first: range.first, last: IOVA(v &- 1)))
            }
            throw error
        }
        return leaves
    }

    /// How many leaves of `2^shift` bytes from `input` to map together: those sharing the leaf
    /// table of the first, inside the range, before a larger size would fit, and all passing
    /// ``map(_:to:size:permissions:)``'s checks (judged on the last); 1 when in doubt.
    func leavesInARow(input v: UInt64, output o: UInt64, shift s: Int, remainingMinusOne: UInt64, sizes: UInt64,
                      permissions: Permissions) -> Int {
        guard format.canExpress(permissions),
              let level = (0...format.topLevel).first(where: { format.leafSizes(level: $0) & bit(s) != 0 }) else { return 1 }
        let tableShift = format.itemShift(level: level) + format.indexBits(level: level)
        // Whole leaves in the rest of the range (`remainingMinusOne + 1` bytes, which may be 2^64).
        let inRange = (remainingMinusOne >> UInt64(s)) &+ (remainingMinusOne & lowMask(s) == lowMask(s) ? 1 : 0)
        var n = min(inRange, (((v | lowMask(tableShift)) &- v) >> UInt64(s)) &+ 1)
        // Stop where a larger size becomes possible (the input and output align to it together).
        for larger in (s + 1)..<64 where sizes & bit(larger) != 0 && (v ^ o) & lowMask(larger) == 0 {
            let boundary = (v | lowMask(larger)) &+ 1
            guard boundary > v else { continue }
            let before = boundary &- v
            if before <= remainingMinusOne, remainingMinusOne - before >= lowMask(larger) {
                n = min(n, before >> UInt64(s))
            }
        }
        guard n > 1, n <= UInt64(1) << UInt64(format.indexBits(level: level)) else { return 1 }
        let bytes = n << UInt64(s)
        let lastInput = v &+ (bytes &- 1)
        let lastOutput = o &+ (bytes &- bit(s))
        guard let first = format.spanAddress(of: IOVA(v)), let last = format.spanAddress(of: IOVA(lastInput)),
              last &- first == bytes &- 1, last <= lowMask(format.inputBits),
              (lastOutput | lowMask(s)) <= lowMask(format.outputBits(leafShift: s)) else { return 1 }
        return Int(n)
    }

    /// Installs `leaves` consecutive leaves of `2^sizeShift` bytes from `span` (all in one table).
    mutating func install(span: UInt64, output: UInt64, sizeShift: Int, level target: Int, permissions: Permissions,
                          input: IOVA, leaves: Int = 1) throws(PageTableBuildError) {
        var table = root.rawValue
        var level = format.topLevel
        while level > target {
            let index = self.index(span, level)
            let slot = table &+ UInt64(index * format.entryBytes)
            let raw = try load(slot)
            switch format.decode(raw, level: level) {
            case .empty:
                let bytes = format.tableBytes(level: level - 1)
                guard let t = allocator.allocateTable(bytes: bytes, alignment: bytes) else { throw .outOfTableMemory }
                try zero(t, bytes: bytes)
                try store(format.encodeTable(t, level: level), at: slot)
                table = t.rawValue
            case .table(let next, let nextLevel, _):
                guard nextLevel == level - 1 else {
                    throw .tableFault(PageTableFault(reason: .invalidNextLevel, level: level, table: GuestPhysicalAddress(table), index: index,
                                                     entry: raw, input: entryInput(span, level)))
                }
                table = next.rawValue
            case .leaf:
                throw .alreadyMapped(input)
            case .fault(let r):
                throw .tableFault(PageTableFault(reason: r, level: level, table: GuestPhysicalAddress(table), index: index, entry: raw,
                                                 input: entryInput(span, level)))
            }
            level -= 1
        }
        let shift = format.itemShift(level: target)
        let count = 1 << (sizeShift - shift)
        let first = index(span, target)
        /// The input of the leaf holding slot `k`.
        func leafInput(_ k: Int) -> IOVA {
            IOVA(input.rawValue &+ (UInt64((k - first) / count) << UInt64(sizeShift)))
        }
        for k in first..<(first + count * leaves) {
            let raw = try load(table &+ UInt64(k * format.entryBytes))
            switch format.decode(raw, level: target) {
            case .empty: continue
            case .table:
                // An empty subtree may be replaced by a leaf.
                let itemSpan = (span & ~lowMask(sizeShift)) &+ (UInt64(k - first) << UInt64(shift))
                let r = try! IOVARange(first: format.inputAddress(ofSpan: itemSpan), last: format.inputAddress(ofSpan: itemSpan | lowMask(shift)))
                var any = false
                do {
                    try walker().visitLeaves(r) { (_: LeafExtent) throws(Never) -> WalkControl in any = true; return .stop }
                } catch {
                    switch error {
                    case .fault(let f): throw .tableFault(f)
                    case .visitor(let never): switch never {}
                    }
                }
                if any { throw .alreadyMapped(leafInput(k)) }
            case .leaf: throw .alreadyMapped(leafInput(k))
            case .fault(let r):
                let itemSpan = (span & ~lowMask(sizeShift)) &+ (UInt64(k - first) << UInt64(shift))
                throw .tableFault(PageTableFault(reason: r, level: target, table: GuestPhysicalAddress(table), index: k, entry: raw,
                                                 input: format.inputAddress(ofSpan: itemSpan)))
            }
        }
        for j in 0..<leaves {
            let leafOutput = output &+ (UInt64(j) << UInt64(sizeShift))
            for k in 0..<count {
                let e = format.encodeLeaf(output: leafOutput, sizeShift: sizeShift, level: target, permissions: permissions, replica: k)
                try store(e, at: table &+ UInt64((first + j * count + k) * format.entryBytes))
            }
        }
    }

    // MARK: Unmap

    /// Removes every leaf inside `range`; returns the bytes unmapped (0 when nothing was mapped).
    /// - Throws: ``PageTableBuildError/wouldSplitLeaf(_:)`` (and removes nothing) when a leaf
    ///   is only partly inside `range`; ``PageTableBuildError/tableFault(_:)`` for a malformed table.
    @discardableResult
    public mutating func unmap(_ range: IOVARange) throws(PageTableBuildError) -> UInt64 {
        // Two walks and no list of leaves, so an unmap allocates nothing: the first finds a
        // leaf the range would cut, the second clears each leaf once it is visited.
        let walker = walker()
        var cut: LeafExtent?
        do {
            try walker.visitLeaves(range) { (leaf: LeafExtent) throws(Never) -> WalkControl in
                guard range.contains(leaf.input) else { cut = leaf; return .stop }
                return .continue
            }
        } catch {
            switch error {
            case .fault(let f): throw .tableFault(f)
            case .visitor(let never): switch never {}
            }
        }
        if let cut { throw .wouldSplitLeaf(cut) }
        var bytes: UInt64 = 0
        do {
            try walker.visitLeaves(range) { (leaf: LeafExtent) throws(PageTableBuildError) -> WalkControl in
                try clear(leaf)
                bytes &+= leaf.size.bytes
                return .continue
            }
        } catch {
            switch error {
            case .fault(let f): throw .tableFault(f)
            case .visitor(let e): throw e
            }
        }
        return bytes
    }

    func clear(_ leaf: LeafExtent) throws(PageTableBuildError) {
        let span = format.spanAddress(of: leaf.input.first)!
        var table = root.rawValue
        var level = format.topLevel
        while level > leaf.level {
            let index = self.index(span, level)
            let raw = try load(table &+ UInt64(index * format.entryBytes))
            // The walk just found this leaf; a table changed since then is not followed blindly.
            guard case .table(let next, let nextLevel, _) = format.decode(raw, level: level),
                  nextLevel < level, nextLevel >= leaf.level
            else {
                throw .tableFault(PageTableFault(reason: .invalidNextLevel, level: level, table: GuestPhysicalAddress(table),
                                                 index: index, entry: raw, input: entryInput(span, level)))
            }
            // Skipped levels (AMD v1): follow the pointer to whichever level it names.
            table = next.rawValue
            level = nextLevel
        }
        let shift = format.itemShift(level: leaf.level)
        let count = 1 << (Int(leaf.size.shift) - shift)
        let first = index(span, leaf.level)
        for k in first..<(first + count) { try store(0, at: table &+ UInt64(k * format.entryBytes)) }
    }

    // MARK: Translate

    /// Maps into this table every leaf `source` has in `range` (input and output kept; leaf
    /// sizes re-chosen for this format); leaves granting nothing are skipped. Rights this format
    /// has no bits for (execute and user in VT-d second stage and AMD v1, which guest tables
    /// built by Linux grant) are dropped; read and write are never dropped or added.
    /// Returns the number of source leaves mirrored.
    /// - Throws: ``PageTableBuildError/tableFault(_:)`` for a malformed source,
    ///   ``PageTableBuildError/permissionsNotExpressible(_:)`` when read and write alone cannot be
    ///   expressed (write-only where the format has no such leaf), or any map error (already
    ///   mapped, sizes below this format's granule, ...).
    @discardableResult
    public mutating func mirror<F: PageTableFormat, M: GuestMemory>(_ source: PageTableWalker<F, M>,
                                                                    range: IOVARange = .all) throws(PageTableBuildError) -> Int {
        var leaves: [LeafExtent] = []
        do { try source.walk(range) { leaves.append($0) } } catch { throw .tableFault(error) }
        var n = 0
        for leaf in leaves where !leaf.permissions.isEmpty {
            guard let permissions = expressible(leaf.permissions) else {
                throw .permissionsNotExpressible(leaf.permissions)
            }
            try map(leaf.input, to: leaf.output, permissions: permissions)
            n += 1
        }
        return n
    }

    /// `p` without the rights this format cannot express, keeping read and write as they are;
    /// `nil` when even that cannot be expressed.
    func expressible(_ p: Permissions) -> Permissions? {
        for candidate in [p, p.subtracting(.user), p.subtracting(.execute), p.intersection(.readWrite)]
        where format.canExpress(candidate) {
            return candidate
        }
        return nil
    }

    // MARK: Memory

    /// The first input address of the entry translating span address `span` at `level`.
    func entryInput(_ span: UInt64, _ level: Int) -> IOVA {
        format.inputAddress(ofSpan: span & ~lowMask(format.itemShift(level: level)))
    }

    @inline(__always)
    func index(_ span: UInt64, _ level: Int) -> Int {
        Int(truncatingIfNeeded: (span >> UInt64(format.itemShift(level: level))) & lowMask(format.indexBits(level: level)))
    }

    func load(_ address: UInt64) throws(PageTableBuildError) -> UInt64 {
        let a = GuestPhysicalAddress(address)
        let v: UInt64? = format.entryBytes == 8 ? memory.load64(at: a) : memory.load32(at: a).map { UInt64($0) }
        guard let v else { throw .guestMemoryWrite(a) }
        return v
    }

    func store(_ value: UInt64, at address: UInt64) throws(PageTableBuildError) {
        let a = GuestPhysicalAddress(address)
        let ok = format.entryBytes == 8 ? memory.store64(value, at: a) : memory.store32(UInt32(truncatingIfNeeded: value), at: a)
        guard ok else { throw .guestMemoryWrite(a) }
    }

    func zero(_ table: GuestPhysicalAddress, bytes: Int) throws(PageTableBuildError) {
        var off = 0
        while off < bytes {
            guard memory.store32(0, at: GuestPhysicalAddress(table.rawValue &+ UInt64(off))) else { throw .guestMemoryWrite(table) }
            off += 4
        }
    }
}
