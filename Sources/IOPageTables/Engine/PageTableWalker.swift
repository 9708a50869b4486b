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

    /// 8 Mi entries and 16 Ki tables.
    ///
    /// Enough for a legitimate table mapping up to 31 GiB with 4K leaves (each 2 MiB of them
    /// costs 513 entries and one table), and for any table using larger leaves. A walk only
    /// reads entries whose input intersects the range asked, so a hostile table (one that
    /// shares its tables to look dense) gets at most 8 Mi leaf visits out of any walk, an
    /// eighth of the previous default's 64 Mi. Raise it for a larger guest.
    public static let `default` = WalkBudget(maxEntries: 1 << 23, maxTables: 1 << 14)
}

/// What one walk did.
public struct WalkStatistics: Hashable, Sendable, CustomStringConvertible {
    public var entriesRead = 0
    public var tablesVisited = 0
    public var leaves = 0
    public var faultsSkipped = 0
    public init() {}

    public var description: String {
        "\(entriesRead) entries, \(tablesVisited) tables, \(leaves) leaves, \(faultsSkipped) faults skipped"
    }
}

/// What a visitor tells the walk after each leaf or skipped fault.
public enum WalkControl: Hashable, Sendable {
    /// Go on to the next leaf.
    case `continue`
    /// End the walk now; it returns its statistics normally.
    case stop
}

/// Why a walk with a throwing visitor ended early: a malformed table, or the visitor's error.
public enum PageTableWalkError<VisitorError: Error>: Error, CustomStringConvertible {
    /// The table is malformed, or the walk ran out of budget.
    case fault(PageTableFault)
    /// The visitor (or the fault handler) threw; leaves before it were visited.
    case visitor(VisitorError)

    public var description: String {
        switch self {
        case .fault(let f): "\(f)"
        case .visitor(let e): "visitor error: \(e)"
        }
    }
}

extension PageTableWalkError: Equatable where VisitorError: Equatable {}
extension PageTableWalkError: Hashable where VisitorError: Hashable {}

/// Walks a guest's table of one format through a ``GuestMemory`` view.
///
/// The walk visits leaves in input order, one ``LeafExtent`` per leaf (contiguous and huge
/// leaves whole), allocates nothing per entry, and does at most ``budget`` work.
///
/// Tables are refused whole (fail closed): a table that is not wholly inside guest memory is
/// one ``PageTableFault/Reason/outsideGuestMemory`` fault before any of its entries is read,
/// and a table whose bytes overlap a table on the current path (itself, an ancestor, or the
/// middle of one) is a ``PageTableFault/Reason/loop``.
///
/// Contiguous and replicated runs (Arm contiguous hint, AMD NextLevel 7, v7s large pages and
/// supersections, Svnapot) yield one leaf only when every item of the run's span agrees.
/// Otherwise the walk yields nothing for the run's members and names the bad entries with
/// ``PageTableFault/Reason/inconsistentContiguousRun``: when most of the
/// span agrees with the run, each slot that disagrees (a missing or different replica), and
/// the walk goes on after the span; when it does not, each entry claiming the run (a lone or
/// minority claim), while the span's other entries are walked as themselves. A slot before
/// the run's first member has already been walked as itself when the walk learns of the run
/// (so a one-item leaf there may be both visited and then named).
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
    /// - Throws: the first ``PageTableFault``; leaves before it were already visited. A
    ///   ``PageTableFault/Reason/budgetExceeded`` fault carries the walk's statistics.
    @inlinable @discardableResult
    public func walk(_ range: IOVARange = .all, visit: (LeafExtent) -> Void) throws(PageTableFault) -> WalkStatistics {
        do {
            return try run(range, skip: false, onFault: { (_: PageTableFault) throws(Never) in .continue },
                           visit: { (e: LeafExtent) throws(Never) in visit(e); return .continue })
        } catch {
            switch error {
            case .fault(let f): throw f
            case .visitor(let never): switch never {}
            }
        }
    }

    /// Like ``walk(_:visit:)`` but a malformed entry is passed to `onFault` and skipped (its
    /// input range translates nothing); only an exhausted budget stops the walk.
    /// - Throws: a ``PageTableFault`` with reason ``PageTableFault/Reason/budgetExceeded``,
    ///   carrying the walk's statistics.
    @inlinable @discardableResult
    public func walk(_ range: IOVARange = .all, skippingFaults onFault: (PageTableFault) -> Void,
                     visit: (LeafExtent) -> Void) throws(PageTableFault) -> WalkStatistics {
        do {
            return try run(range, skip: true, onFault: { (f: PageTableFault) throws(Never) in onFault(f); return .continue },
                           visit: { (e: LeafExtent) throws(Never) in visit(e); return .continue })
        } catch {
            switch error {
            case .fault(let f): throw f
            case .visitor(let never): switch never {}
            }
        }
    }

    /// Visits every leaf that intersects `range` with a visitor that may throw or return
    /// ``WalkControl/stop`` to end the walk early (the statistics are then returned normally).
    /// Allocates nothing per entry.
    /// - Throws: ``PageTableWalkError/fault(_:)`` for the first malformed entry or an exhausted
    ///   budget, ``PageTableWalkError/visitor(_:)`` with the visitor's own error.
    @inlinable @discardableResult
    public func visitLeaves<E: Error>(_ range: IOVARange = .all,
                                      _ visitor: (LeafExtent) throws(E) -> WalkControl) throws(PageTableWalkError<E>) -> WalkStatistics {
        try run(range, skip: false, onFault: { (_: PageTableFault) throws(E) in .continue }, visit: visitor)
    }

    /// Like ``visitLeaves(_:_:)`` but a malformed entry is passed to `onFault` and skipped;
    /// `onFault` may throw or stop the walk too.
    /// - Throws: ``PageTableWalkError/fault(_:)`` only for an exhausted budget,
    ///   ``PageTableWalkError/visitor(_:)`` with an error of `onFault` or the visitor.
    @inlinable @discardableResult
    public func visitLeaves<E: Error>(_ range: IOVARange = .all,
                                      skippingFaults onFault: (PageTableFault) throws(E) -> WalkControl,
                                      _ visitor: (LeafExtent) throws(E) -> WalkControl) throws(PageTableWalkError<E>) -> WalkStatistics {
        try run(range, skip: true, onFault: onFault, visit: visitor)
    }

    /// The leaf translating `iova`, or `nil` when nothing maps it.
    /// - Throws: ``PageTableFault/Reason/inputOutsideSpace`` for an address the format cannot
    ///   translate (above its width, non-canonical), or the fault met on the way.
    public func translate(_ iova: IOVA) throws(PageTableFault) -> LeafExtent? {
        guard format.spanAddress(of: iova) != nil else {
            throw PageTableFault(reason: .inputOutsideSpace, level: format.topLevel, table: root, index: 0, entry: iova.rawValue,
                                 input: iova)
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

    /// Most items in one contiguous or replicated run (AMD NextLevel 7 has up to 256).
    @usableFromInline static var maxRunLog2: Int { 8 }

    @usableFromInline
    struct State {
        @usableFromInline var entriesLeft: Int
        @usableFromInline var tablesLeft: Int
        @usableFromInline var stats = WalkStatistics()
        /// First and last byte of each table on the current path.
        @usableFromInline var pathFirst = InlineArray<8, UInt64>(repeating: .max)
        @usableFromInline var pathLast = InlineArray<8, UInt64>(repeating: 0)
        @usableFromInline var depth = 0

        @inlinable
        init(entriesLeft: Int, tablesLeft: Int) {
            self.entriesLeft = entriesLeft
            self.tablesLeft = tablesLeft
        }
    }

    @inlinable
    func run<E: Error>(_ range: IOVARange, skip: Bool, onFault: (PageTableFault) throws(E) -> WalkControl,
                       visit: (LeafExtent) throws(E) -> WalkControl) throws(PageTableWalkError<E>) -> WalkStatistics {
        var state = State(entriesLeft: budget.maxEntries, tablesLeft: budget.maxTables)
        let top = format.topLevel
        if root.rawValue & UInt64(format.tableBytes(level: top) - 1) != 0 {
            _ = try report(.misalignedTable, top, root.rawValue, 0, 0, format.inputAddress(ofSpan: 0), &state, skip, onFault)
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
                throw .fault(budgetFault(top, root.rawValue, 0, 0, format.inputAddress(ofSpan: first), state))
            }
            state.tablesLeft -= 1
            state.stats.tablesVisited += 1
            state.pathFirst[0] = root.rawValue
            state.pathLast[0] = root.rawValue &+ UInt64(format.tableBytes(level: top) - 1)
            state.depth = 1
            let control = try walkTable(root.rawValue, level: top, tableBase: 0, first: first, last: last, allows: .all,
                                        &state, skip, onFault, visit)
            if control == .stop { break }
        }
        return state.stats
    }

    @inlinable @inline(__always)
    func load(_ address: UInt64) -> UInt64? {
        if format.entryBytes == 8 { return memory.load64(at: GuestPhysicalAddress(address)) }
        return memory.load32(at: GuestPhysicalAddress(address)).map { UInt64($0) }
    }

    @inlinable
    func budgetFault(_ level: Int, _ table: UInt64, _ index: Int, _ entry: UInt64, _ input: IOVA,
                     _ state: State) -> PageTableFault {
        PageTableFault(reason: .budgetExceeded, level: level, table: GuestPhysicalAddress(table), index: index, entry: entry,
                       input: input, statistics: state.stats)
    }

    /// Throws the fault (not skipping), or hands it to `onFault` and returns what it says.
    @inlinable
    func report<E: Error>(_ reason: PageTableFault.Reason, _ level: Int, _ table: UInt64, _ index: Int, _ entry: UInt64,
                          _ input: IOVA, _ state: inout State, _ skip: Bool,
                          _ onFault: (PageTableFault) throws(E) -> WalkControl) throws(PageTableWalkError<E>) -> WalkControl {
        let fault = PageTableFault(reason: reason, level: level, table: GuestPhysicalAddress(table), index: index, entry: entry,
                                   input: input)
        guard skip else { throw .fault(fault) }
        state.stats.faultsSkipped += 1
        do { return try onFault(fault) } catch { throw .visitor(error) }
    }

    @inlinable
    func walkTable<E: Error>(_ table: UInt64, level: Int, tableBase: UInt64, first: UInt64, last: UInt64, allows: Permissions,
                             _ state: inout State, _ skip: Bool, _ onFault: (PageTableFault) throws(E) -> WalkControl,
                             _ visit: (LeafExtent) throws(E) -> WalkControl) throws(PageTableWalkError<E>) -> WalkControl {
        let shift = format.itemShift(level: level)
        let indexBits = format.indexBits(level: level)
        let entryBytes = UInt64(format.entryBytes)
        let endIndex = Int(truncatingIfNeeded: (last &- tableBase) >> UInt64(shift))
        var i = Int(truncatingIfNeeded: (first &- tableBase) >> UInt64(shift))
        let startIndex = i
        /// The first input address entry `k` of this table translates.
        func input(_ k: Int) -> IOVA { format.inputAddress(ofSpan: tableBase &+ (UInt64(k) << UInt64(shift))) }

        // The whole table must be guest memory before any entry of it is read.
        let tableBytes = UInt64(format.tableBytes(level: level))
        let (tableLast, wraps) = table.addingReportingOverflow(tableBytes - 1)
        guard !wraps, memory.contains(try! GuestPhysicalRange(first: GuestPhysicalAddress(table), last: GuestPhysicalAddress(tableLast))) else {
            return try report(.outsideGuestMemory, level, table, i, 0, input(i), &state, skip, onFault)
        }
        while i <= endIndex {
            guard state.entriesLeft > 0 else { throw .fault(budgetFault(level, table, i, 0, input(i), state)) }
            state.entriesLeft -= 1
            state.stats.entriesRead += 1
            guard let raw = load(table &+ UInt64(i) &* entryBytes) else {
                // The memory shrank under the walk: refuse the rest of the table.
                return try report(.outsideGuestMemory, level, table, i, 0, input(i), &state, skip, onFault)
            }
            switch format.decode(raw, level: level) {
            case .empty:
                i += 1
            case .fault(let reason):
                if try report(reason, level, table, i, raw, input(i), &state, skip, onFault) == .stop { return .stop }
                i += 1
            case .table(let next, let nextLevel, let nextAllows):
                let k = i
                i += 1
                guard nextLevel >= 0, nextLevel < level else {
                    if try report(.invalidNextLevel, level, table, k, raw, input(k), &state, skip, onFault) == .stop { return .stop }
                    continue
                }
                let nextBytes = UInt64(format.tableBytes(level: nextLevel))
                guard next.rawValue & (nextBytes - 1) == 0 else {
                    if try report(.misalignedTable, level, table, k, raw, input(k), &state, skip, onFault) == .stop { return .stop }
                    continue
                }
                // Aligned to its power-of-two size, the next table cannot wrap past 2^64.
                let nextFirst = next.rawValue
                let nextLast = nextFirst &+ (nextBytes - 1)
                var overlapsPath = false
                for d in 0..<state.depth where nextFirst <= state.pathLast[d] && state.pathFirst[d] <= nextLast {
                    overlapsPath = true
                }
                guard !overlapsPath else {
                    if try report(.loop, level, table, k, raw, input(k), &state, skip, onFault) == .stop { return .stop }
                    continue
                }
                guard state.tablesLeft > 0 else { throw .fault(budgetFault(level, table, k, raw, input(k), state)) }
                state.tablesLeft -= 1
                state.stats.tablesVisited += 1
                // With level skipping (AMD v1) the child covers only the low part of the entry.
                let entryBase = tableBase &+ (UInt64(k) << UInt64(shift))
                let childLast = entryBase &+ lowMask(format.itemShift(level: nextLevel) + format.indexBits(level: nextLevel))
                let lo = max(first, entryBase)
                let hi = min(last, childLast)
                if lo <= hi {
                    state.pathFirst[state.depth] = nextFirst
                    state.pathLast[state.depth] = nextLast
                    state.depth += 1
                    let control = try walkTable(nextFirst, level: nextLevel, tableBase: entryBase, first: lo, last: hi,
                                                allows: allows.intersection(nextAllows), &state, skip, onFault, visit)
                    state.depth -= 1
                    if control == .stop { return .stop }
                }
            case .leaf(let leaf):
                let runShift = leaf.sizeShift - shift
                guard runShift >= 0, runShift <= min(indexBits, Self.maxRunLog2), leaf.sizeShift < 64 else {
                    if try report(.invalidPageSizeEncoding, level, table, i, raw, input(i), &state, skip, onFault) == .stop { return .stop }
                    i += 1
                    continue
                }
                let count = 1 << runShift
                let runStart = i & ~(count - 1)
                let runEnd = runStart + count
                let base = leaf.replicasShareOutput ? leaf.output : leaf.output &- (UInt64(i - runStart) << UInt64(shift))
                // A member whose run is misaligned or too wide is bad itself; its neighbours are
                // judged on their own.
                guard base & lowMask(leaf.sizeShift) == 0 else {
                    if try report(.misalignedOutput, level, table, i, raw, input(i), &state, skip, onFault) == .stop { return .stop }
                    i += 1
                    continue
                }
                guard (base | lowMask(leaf.sizeShift)) <= lowMask(format.outputBits) else {
                    if try report(.outputBeyondWidth, level, table, i, raw, input(i), &state, skip, onFault) == .stop { return .stop }
                    i += 1
                    continue
                }
                if count > 1 {
                    // Vote: which slots of the span hold this run's replica. `disagreeing` has a
                    // bit per slot (at most 256), so no allocation.
                    var agreeing = 1
                    var disagreeing = InlineArray<4, UInt64>(repeating: 0)
                    for k in runStart..<runEnd where k != i {
                        guard state.entriesLeft > 0 else { throw .fault(budgetFault(level, table, k, 0, input(k), state)) }
                        state.entriesLeft -= 1
                        state.stats.entriesRead += 1
                        guard let other = load(table &+ UInt64(k) &* entryBytes) else {
                            return try report(.outsideGuestMemory, level, table, k, 0, input(k), &state, skip, onFault)
                        }
                        let expected = leaf.replicasShareOutput ? base : base &+ (UInt64(k - runStart) << UInt64(shift))
                        if case .leaf(let o) = format.decode(other, level: level), o.sizeShift == leaf.sizeShift,
                           o.permissions == leaf.permissions, o.replicasShareOutput == leaf.replicasShareOutput,
                           o.output == expected {
                            agreeing += 1
                        } else {
                            disagreeing[(k - runStart) >> 6] |= bit((k - runStart) & 63)
                        }
                    }
                    if agreeing < count {
                        if 2 * agreeing > count {
                            // Most of the span holds the run: the slots that do not are the bad ones.
                            // A slot this walk already passed is named only if it passed without a
                            // complaint (empty, a table, a one-item leaf); a fault, or an item of a
                            // run at least this large, was already named. If nothing names the
                            // failure (only a smaller, well-formed run's items disagree), the run's
                            // first member met here does.
                            var named = false
                            for k in runStart..<runEnd where disagreeing[(k - runStart) >> 6] & bit((k - runStart) & 63) != 0 {
                                let other = load(table &+ UInt64(k) &* entryBytes) ?? 0
                                if k > i || k < startIndex {
                                    // Not walked yet (or before the range): name it.
                                } else if case .leaf(let o) = format.decode(other, level: level), o.sizeShift != shift {
                                    if o.sizeShift >= leaf.sizeShift { named = true }
                                    continue
                                } else if case .fault = format.decode(other, level: level) {
                                    named = true
                                    continue
                                }
                                named = true
                                if try report(.inconsistentContiguousRun, level, table, k, other, input(k), &state, skip, onFault) == .stop {
                                    return .stop
                                }
                            }
                            if !named,
                               try report(.inconsistentContiguousRun, level, table, i, raw, input(i), &state, skip, onFault) == .stop {
                                return .stop
                            }
                            i = runEnd
                        } else {
                            // A lone or minority claim: this entry is the bad one.
                            if try report(.inconsistentContiguousRun, level, table, i, raw, input(i), &state, skip, onFault) == .stop {
                                return .stop
                            }
                            i += 1
                        }
                        continue
                    }
                }
                let spanFirst = tableBase &+ (UInt64(runStart) << UInt64(shift))
                let spanLast = spanFirst &+ lowMask(leaf.sizeShift)
                state.stats.leaves += 1
                let control: WalkControl
                do {
                    control = try visit(LeafExtent(
                        inputFirst: format.inputAddress(ofSpan: spanFirst), inputLast: format.inputAddress(ofSpan: spanLast),
                        output: GuestPhysicalAddress(base),
                        size: PageSize(shift: leaf.sizeShift),
                        permissions: leaf.permissions.intersection(allows),
                        level: level))
                } catch {
                    throw .visitor(error)
                }
                if control == .stop { return .stop }
                i = runEnd
            }
        }
        return .continue
    }
}

extension PageTableWalker: Sendable where Format: Sendable, Memory: Sendable {}
