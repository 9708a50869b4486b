/// Limits on the work of one walk, so a hostile table cannot make it run long.
public struct WalkBudget: Hashable, Sendable {
    /// Entries read (every replica of a contiguous run counts).
    public var maxEntries: Int
    /// Tables entered, the root included.
    public var maxTables: Int

    public init(maxEntries: Int, maxTables: Int) {
        self.maxEntries = maxEntries
        self.maxTables = maxTables
    }

    /// 64 Mi entries and 256 Ki tables: a fully populated 4K-leaf table of 256 GiB.
    public static let `default` = WalkBudget(maxEntries: 1 << 26, maxTables: 1 << 18)
}

/// What one walk did.
public struct WalkStatistics: Hashable, Sendable {
    public var entriesRead = 0
    public var tablesVisited = 0
    public var leaves = 0
    public var faultsSkipped = 0
    public init() {}
}

/// Walks a guest's table of one format through a ``GuestMemory`` view.
///
/// The walk visits leaves in input order, one ``LeafExtent`` per leaf (contiguous and huge
/// leaves whole), allocates nothing per entry, and does at most ``budget`` work. A table on
/// the current path pointed to again is a ``PageTableFault/Reason/loop``.
public struct PageTableWalker<Format: PageTableFormat, Memory: GuestMemory> {
    public var format: Format
    public var memory: Memory
    /// Guest-physical address of the root table.
    public var root: GuestPhysicalAddress
    public var budget: WalkBudget

    /// Traps when `format` has more than 8 levels (a programmer error: no IOMMU format does).
    public init(format: Format, memory: Memory, root: GuestPhysicalAddress, budget: WalkBudget = .default) {
        precondition(format.topLevel < 8, "page-table formats have at most 8 levels")
        self.format = format
        self.memory = memory
        self.root = root
        self.budget = budget
    }

    /// Visits every leaf that intersects `range` (input addresses the table does not translate
    /// are skipped), stopping at the first malformed entry.
    /// - Throws: the first ``PageTableFault``; leaves before it were already visited.
    @inlinable @discardableResult
    public func walk(_ range: IOVARange = .all, visit: (LeafExtent) -> Void) throws(PageTableFault) -> WalkStatistics {
        try run(range, skip: false, onFault: { _ in }, visit: visit)
    }

    /// Like ``walk(_:visit:)`` but a malformed entry is passed to `onFault` and skipped (its
    /// input range translates nothing); only an exhausted budget stops the walk.
    /// - Throws: a ``PageTableFault`` with reason ``PageTableFault/Reason/budgetExceeded``.
    @inlinable @discardableResult
    public func walk(_ range: IOVARange = .all, skippingFaults onFault: (PageTableFault) -> Void,
                     visit: (LeafExtent) -> Void) throws(PageTableFault) -> WalkStatistics {
        try run(range, skip: true, onFault: onFault, visit: visit)
    }

    /// The leaf translating `iova`, or `nil` when nothing maps it.
    /// - Throws: ``PageTableFault/Reason/inputOutsideSpace`` for an address the format cannot
    ///   translate (above its width, non-canonical), or the fault met on the way.
    public func translate(_ iova: IOVA) throws(PageTableFault) -> LeafExtent? {
        guard format.spanAddress(of: iova) != nil else {
            throw PageTableFault(reason: .inputOutsideSpace, level: format.topLevel, table: root, index: 0, entry: iova.rawValue)
        }
        var found: LeafExtent?
        try walk(try! IOVARange(first: iova, last: iova)) { found = $0 }
        return found
    }

    /// All leaves intersecting `range`, collected into an array (convenience; allocates).
    public func extents(_ range: IOVARange = .all) throws(PageTableFault) -> [LeafExtent] {
        var out: [LeafExtent] = []
        try walk(range) { out.append($0) }
        return out
    }

    // MARK: Engine

    @usableFromInline
    struct State {
        @usableFromInline var entriesLeft: Int
        @usableFromInline var tablesLeft: Int
        @usableFromInline var stats = WalkStatistics()
        @usableFromInline var path = InlineArray<8, UInt64>(repeating: .max)
        @usableFromInline var depth = 0

        @inlinable
        init(entriesLeft: Int, tablesLeft: Int) {
            self.entriesLeft = entriesLeft
            self.tablesLeft = tablesLeft
        }
    }

    @inlinable
    func run(_ range: IOVARange, skip: Bool, onFault: (PageTableFault) -> Void,
             visit: (LeafExtent) -> Void) throws(PageTableFault) -> WalkStatistics {
        var state = State(entriesLeft: budget.maxEntries, tablesLeft: budget.maxTables)
        let top = format.topLevel
        if root.rawValue & UInt64(format.tableBytes(level: top) - 1) != 0 {
            try report(.misalignedTable, top, root.rawValue, 0, 0, &state, skip, onFault)
            return state.stats
        }
        // At most two pieces (the halves of a sign-extended space), without an array.
        let (lower, upperHalf) = format.inputRangePair
        var pending: IOVARange? = lower
        var upper = upperHalf
        while let piece = pending {
            (pending, upper) = (upper, nil)
            guard let r = piece.intersection(range),
                  let first = format.spanAddress(of: r.first), let last = format.spanAddress(of: r.last) else { continue }
            guard state.tablesLeft > 0 else {
                throw PageTableFault(reason: .budgetExceeded, level: top, table: root, index: 0, entry: 0)
            }
            state.tablesLeft -= 1
            state.stats.tablesVisited += 1
            state.path[0] = root.rawValue
            state.depth = 1
            try walkTable(root.rawValue, level: top, tableBase: 0, first: first, last: last, allows: .all,
                          &state, skip, onFault, visit)
        }
        return state.stats
    }

    @inlinable @inline(__always)
    func load(_ address: UInt64) -> UInt64? {
        if format.entryBytes == 8 { return memory.load64(at: GuestPhysicalAddress(address)) }
        return memory.load32(at: GuestPhysicalAddress(address)).map { UInt64($0) }
    }

    @inlinable
    func report(_ reason: PageTableFault.Reason, _ level: Int, _ table: UInt64, _ index: Int, _ entry: UInt64,
                _ state: inout State, _ skip: Bool, _ onFault: (PageTableFault) -> Void) throws(PageTableFault) {
        let fault = PageTableFault(reason: reason, level: level, table: GuestPhysicalAddress(table), index: index, entry: entry)
        guard skip, reason != .budgetExceeded else { throw fault }
        state.stats.faultsSkipped += 1
        onFault(fault)
    }

    @inlinable
    func walkTable(_ table: UInt64, level: Int, tableBase: UInt64, first: UInt64, last: UInt64, allows: Permissions,
                   _ state: inout State, _ skip: Bool, _ onFault: (PageTableFault) -> Void,
                   _ visit: (LeafExtent) -> Void) throws(PageTableFault) {
        let shift = format.itemShift(level: level)
        let indexBits = format.indexBits(level: level)
        let entryBytes = UInt64(format.entryBytes)
        let endIndex = Int(truncatingIfNeeded: (last &- tableBase) >> UInt64(shift))
        var i = Int(truncatingIfNeeded: (first &- tableBase) >> UInt64(shift))
        while i <= endIndex {
            guard state.entriesLeft > 0 else {
                throw PageTableFault(reason: .budgetExceeded, level: level, table: GuestPhysicalAddress(table), index: i, entry: 0)
            }
            state.entriesLeft -= 1
            state.stats.entriesRead += 1
            guard let raw = load(table &+ UInt64(i) &* entryBytes) else {
                try report(.outsideGuestMemory, level, table, i, 0, &state, skip, onFault)
                return  // the rest of this table is unreadable too
            }
            switch format.decode(raw, level: level) {
            case .empty:
                i += 1
            case .fault(let reason):
                try report(reason, level, table, i, raw, &state, skip, onFault)
                i += 1
            case .table(let next, let nextLevel, let nextAllows):
                let entryBase = tableBase &+ (UInt64(i) << UInt64(shift))
                i += 1
                guard nextLevel >= 0, nextLevel < level else {
                    try report(.invalidNextLevel, level, table, i - 1, raw, &state, skip, onFault)
                    continue
                }
                guard next.rawValue & UInt64(format.tableBytes(level: nextLevel) - 1) == 0 else {
                    try report(.misalignedTable, level, table, i - 1, raw, &state, skip, onFault)
                    continue
                }
                var onPath = false
                for d in 0..<state.depth where state.path[d] == next.rawValue { onPath = true }
                guard !onPath else {
                    try report(.loop, level, table, i - 1, raw, &state, skip, onFault)
                    continue
                }
                guard state.tablesLeft > 0 else {
                    throw PageTableFault(reason: .budgetExceeded, level: level, table: GuestPhysicalAddress(table), index: i - 1, entry: raw)
                }
                state.tablesLeft -= 1
                state.stats.tablesVisited += 1
                // With level skipping (AMD v1) the child covers only the low part of the entry.
                let childLast = entryBase &+ lowMask(format.itemShift(level: nextLevel) + format.indexBits(level: nextLevel))
                let lo = max(first, entryBase)
                let hi = min(last, childLast)
                if lo <= hi {
                    state.path[state.depth] = next.rawValue
                    state.depth += 1
                    try walkTable(next.rawValue, level: nextLevel, tableBase: entryBase, first: lo, last: hi,
                                  allows: allows.intersection(nextAllows), &state, skip, onFault, visit)
                    state.depth -= 1
                }
            case .leaf(let leaf):
                let runShift = leaf.sizeShift - shift
                guard runShift >= 0, runShift <= indexBits, leaf.sizeShift < 64 else {
                    try report(.invalidPageSizeEncoding, level, table, i, raw, &state, skip, onFault)
                    i += 1
                    continue
                }
                let count = 1 << runShift
                let runStart = i & ~(count - 1)
                let runEnd = runStart + count
                let base = leaf.replicasShareOutput ? leaf.output : leaf.output &- (UInt64(i - runStart) << UInt64(shift))
                guard base & lowMask(leaf.sizeShift) == 0 else {
                    try report(.misalignedOutput, level, table, i, raw, &state, skip, onFault)
                    i = runEnd
                    continue
                }
                guard (base | lowMask(leaf.sizeShift)) <= lowMask(format.outputBits) else {
                    try report(.outputBeyondWidth, level, table, i, raw, &state, skip, onFault)
                    i = runEnd
                    continue
                }
                var consistent = true
                if count > 1 {
                    for k in runStart..<runEnd where k != i {
                        guard state.entriesLeft > 0 else {
                            throw PageTableFault(reason: .budgetExceeded, level: level, table: GuestPhysicalAddress(table), index: k, entry: 0)
                        }
                        state.entriesLeft -= 1
                        state.stats.entriesRead += 1
                        guard let other = load(table &+ UInt64(k) &* entryBytes) else {
                            try report(.outsideGuestMemory, level, table, k, 0, &state, skip, onFault)
                            return
                        }
                        let expected = leaf.replicasShareOutput ? base : base &+ (UInt64(k - runStart) << UInt64(shift))
                        guard case .leaf(let o) = format.decode(other, level: level), o.sizeShift == leaf.sizeShift,
                              o.permissions == leaf.permissions, o.replicasShareOutput == leaf.replicasShareOutput,
                              o.output == expected else {
                            try report(.inconsistentContiguousRun, level, table, k, other, &state, skip, onFault)
                            consistent = false
                            break
                        }
                    }
                }
                if consistent {
                    let spanFirst = tableBase &+ (UInt64(runStart) << UInt64(shift))
                    let spanLast = spanFirst &+ lowMask(leaf.sizeShift)
                    state.stats.leaves += 1
                    visit(LeafExtent(
                        inputFirst: format.inputAddress(ofSpan: spanFirst), inputLast: format.inputAddress(ofSpan: spanLast),
                        output: GuestPhysicalAddress(base),
                        size: PageSize(shift: leaf.sizeShift),
                        permissions: leaf.permissions.intersection(allows),
                        level: level))
                }
                i = runEnd
            }
        }
    }
}

extension PageTableWalker: Sendable where Format: Sendable, Memory: Sendable {}
