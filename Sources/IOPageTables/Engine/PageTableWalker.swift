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
    /// Of ``entriesRead``, the entries the fast paths took: runs of leaves whose entries each
    /// add one item to the previous (decoded once per run), repeats of an empty entry, and the
    /// plain table pointers of a descent towards a range inside one entry (not decoded).
    /// A measure of how much of the walk ran fast; everything else in these statistics is the
    /// same with and without the fast path.
    public var fastPathEntries = 0
    @inlinable public init() {}

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
///
/// Dense tables of well-formed leaves are walked close to memory speed: when an entry decodes
/// as a leaf, the walk scans the following entries for ones that each add one item to the
/// previous without carrying out of the output field (``PageTableFormat/leafRunField(level:)``);
/// by the format's promise each of them is the same leaf moved on, so none is decoded.
/// Repeats of an empty entry are skipped the same way. A walk of a range inside one entry of
/// the upper tables (an invalidation) goes down through plain table pointers without decoding
/// them (``PageTableFormat/tablePointerTest(level:)``) and, when the range's entries in the
/// table it reaches are one such run, takes them in one pass with no closure between its steps,
/// without entering the table walk. Runs are scanned sixteen and eight entries per test.
/// Faults, budgets, leaves and statistics are exactly those of decoding every entry.
/// ``visitRuns(_:_:)`` hands out such runs merged into maximal ``TranslationRun``s, one call per
/// run instead of one per leaf.
public struct PageTableWalker<Format: PageTableFormat, Memory: GuestMemory> {
    public var format: Format
    public var memory: Memory
    /// Guest-physical address of the root table.
    public var root: GuestPhysicalAddress
    public var budget: WalkBudget
    /// Whether the walk takes runs of well-formed leaves (and repeated empty entries) at once,
    /// scanning a table in place when ``GuestMemory/readableBytes(of:)`` offers it. Off, every
    /// entry is decoded and checked one by one through ``GuestMemory/load64(at:)``: the reference
    /// the cross-path tests compare the fast path with. The results are the same either way.
    @usableFromInline var runFastPath = true

    /// ``runFastPath`` for the fuzz harness's cross-path check (not API).
    @_spi(Testing) public var usesRunFastPath: Bool {
        get { runFastPath }
        set { runFastPath = newValue }
    }

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

    // MARK: Runs

    /// Visits the translation of every leaf that intersects `range` as maximal runs: adjacent
    /// leaves (of any size, level or table) whose inputs and outputs both continue and whose
    /// permissions are equal, merged into one ``TranslationRun``, in input order. The runs are
    /// exactly ``TranslationRun/coalescing(_:)`` of the leaves ``visitLeaves(_:_:)`` visits (so
    /// the first and last run may reach past `range`, as whole leaves do). A run is handed out
    /// when the next one starts, before a fault is thrown or handed to a fault handler, and at
    /// the end; the visitor may throw or return ``WalkControl/stop``. Allocates nothing.
    ///
    /// Costs one call per run instead of one per leaf: the walk of a dense table of leaves is a
    /// scan of its entries. The budget and the statistics count entries and leaves as a leaf
    /// walk does (after a stop, they include the leaves of the run being merged).
    /// - Throws: ``PageTableWalkError/fault(_:)`` for the first malformed entry or an exhausted
    ///   budget (runs before it were visited), ``PageTableWalkError/visitor(_:)`` with the
    ///   visitor's own error.
    @inlinable @discardableResult
    public func visitRuns<E: Error>(_ range: IOVARange = .all,
                                    _ visitor: (TranslationRun) throws(E) -> WalkControl) throws(PageTableWalkError<E>) -> WalkStatistics {
        try runMerged(range, skip: false, onFault: { (_: PageTableFault) throws(E) in .continue }, visit: visitor)
    }

    /// Like ``visitRuns(_:_:)`` but a malformed entry is passed to `onFault` (after the run
    /// before it) and skipped; `onFault` may throw or stop the walk too.
    /// - Throws: ``PageTableWalkError/fault(_:)`` only for an exhausted budget,
    ///   ``PageTableWalkError/visitor(_:)`` with an error of `onFault` or the visitor.
    @inlinable @discardableResult
    public func visitRuns<E: Error>(_ range: IOVARange = .all,
                                    skippingFaults onFault: (PageTableFault) throws(E) -> WalkControl,
                                    _ visitor: (TranslationRun) throws(E) -> WalkControl) throws(PageTableWalkError<E>) -> WalkStatistics {
        try runMerged(range, skip: true, onFault: onFault, visit: visitor)
    }

    /// All maximal runs of the leaves intersecting `range` (``visitRuns(_:_:)``), collected
    /// into an array (convenience; allocates).
    /// - Throws: the first ``PageTableFault``.
    public func runs(_ range: IOVARange = .all) throws(PageTableFault) -> [TranslationRun] {
        var out: [TranslationRun] = []
        do {
            try visitRuns(range) { (r: TranslationRun) throws(Never) -> WalkControl in out.append(r); return .continue }
        } catch {
            switch error {
            case .fault(let f): throw f
            case .visitor(let never): switch never {}
            }
        }
        return out
    }

    // MARK: Engine

    /// Most items in one contiguous or replicated run (AMD NextLevel 7 has up to 256).
    @usableFromInline static var maxRunLog2: Int { 8 }

    /// The walk with one visit per leaf.
    @inlinable
    func run<E: Error>(_ range: IOVARange, skip: Bool, onFault: (PageTableFault) throws(E) -> WalkControl,
                       visit: (LeafExtent) throws(E) -> WalkControl) throws(PageTableWalkError<E>) -> WalkStatistics {
        /// Hands out a group's leaves one by one, charging each as it goes.
        func leaves(_ g: WalkLeafGroup, _ state: inout WalkState) throws(E) -> WalkControl {
            let size = UInt64(1) << UInt64(g.leafShift)
            let pageSize = PageSize(shift: g.leafShift)
            var input = g.inputFirst
            var output = g.output
            var charge = g.firstCharge
            for _ in 0..<g.count {
                state.entriesLeft -= charge
                state.stats.entriesRead += charge
                state.stats.leaves += 1
                charge = g.entriesPerLeaf
                let control = try visit(LeafExtent(inputFirst: IOVA(input), inputLast: IOVA(input &+ (size &- 1)),
                                                   output: GuestPhysicalAddress(output), size: pageSize,
                                                   permissions: g.permissions, level: g.level))
                if control == .stop { return .stop }
                input &+= size
                output &+= size
            }
            return .continue
        }
        if let (g, depth) = invalidationGroup(range) {
            var state = WalkState(budget: budget, afterDescentOf: depth, to: g)
            do { _ = try leaves(g, &state) } catch { throw .visitor(error) }
            return state.stats
        }
        return try runGroups(range, skip: skip, onFault: onFault, group: leaves, flush: { () throws(E) -> WalkControl in .continue })
    }

    /// The walk with one visit per maximal run (``TranslationRun/coalescing(_:)``'s rule).
    @inlinable
    func runMerged<E: Error>(_ range: IOVARange, skip: Bool, onFault: (PageTableFault) throws(E) -> WalkControl,
                             visit: (TranslationRun) throws(E) -> WalkControl) throws(PageTableWalkError<E>) -> WalkStatistics {
        if let (run, stats) = invalidationRun(range) {
            do { _ = try visit(run) } catch { throw .visitor(error) }
            return stats
        }
        var pending = false
        var first: UInt64 = 0
        var last: UInt64 = 0
        var output: UInt64 = 0
        var permissions: Permissions = []
        return try runGroups(range, skip: skip, onFault: onFault, group: { (g: WalkLeafGroup, state: inout WalkState) throws(E) -> WalkControl in
            state.charge(g)
            let gFirst = g.inputFirst
            let gLast = g.inputLast
            if pending, permissions == g.permissions, last != .max, last &+ 1 == gFirst,
               g.output &- output == gFirst &- first, g.output > output {
                last = gLast
                return .continue
            }
            var control = WalkControl.continue
            if pending {
                control = try visit(TranslationRun(input: try! IOVARange(first: IOVA(first), last: IOVA(last)),
                                                   output: GuestPhysicalAddress(output), permissions: permissions))
            }
            pending = true
            (first, last, output, permissions) = (gFirst, gLast, g.output, g.permissions)
            return control
        }, flush: { () throws(E) -> WalkControl in
            guard pending else { return .continue }
            pending = false
            return try visit(TranslationRun(input: try! IOVARange(first: IOVA(first), last: IOVA(last)),
                                            output: GuestPhysicalAddress(output), permissions: permissions))
        })
    }

    /// ``invalidationGroup(_:)`` as ``runMerged`` hands it out: the one run and the walk's statistics.
    @inlinable
    func invalidationRun(_ range: IOVARange) -> (TranslationRun, WalkStatistics)? {
        guard let (g, depth) = invalidationGroup(range) else { return nil }
        var state = WalkState(budget: budget, afterDescentOf: depth, to: g)
        state.charge(g)
        return (TranslationRun(input: try! IOVARange(first: IOVA(g.inputFirst), last: IOVA(g.inputLast)),
                               output: GuestPhysicalAddress(g.output), permissions: g.permissions), state.stats)
    }

    /// The invalidation fast path of both walks, in one pass with no closure between its
    /// steps: when `range` lies within one entry of each upper table, each a plain
    /// pointer (``PageTableFormat/tablePointerTest(level:)``) to an aligned table readable in
    /// place that overlaps none on its path, down to a table where `range`'s entries are one
    /// run of one-item leaves (each the first plus one item inside
    /// ``PageTableFormat/leafRunField(level:)``), and the budget covers it all: that run as
    /// one group and the number of tables descended through (the walk's state after it is
    /// ``WalkState/init(budget:afterDescentOf:to:)``). `nil` for anything else, having
    /// changed nothing: the general walk (``descend``, then the table walk) then does it all,
    /// faults, budget and all.
    @inlinable
    func invalidationGroup(_ range: IOVARange) -> (group: WalkLeafGroup, depth: Int)? {
        // Shifts and sizes below are those of a valid format (< 64 bits, tables < 2^63 bytes).
        guard runFastPath, format.entryBytes == 8, let first = format.spanAddress(of: range.first),
              let last = format.spanAddress(of: range.last), first <= last else { return nil }
        // Within one half of a sign-extended space: its span addresses share the top input bit.
        if format.inputExtension == .signExtended && (first ^ last) &>> UInt64(truncatingIfNeeded: format.inputBits &- 1) != 0 { return nil }
        var level = format.topLevel
        var table = root.rawValue
        var tableMask = (UInt64(8) &<< UInt64(truncatingIfNeeded: format.indexBits(level: level))) &- 1
        guard table & tableMask == 0 else { return nil }
        var pathFirst = InlineArray<8, UInt64>(repeating: 0)
        var pathLast = InlineArray<8, UInt64>(repeating: 0)
        var depth = 0
        var tableBase: UInt64 = 0
        var allows = Permissions.all
        while true {
            let (tableLast, wraps) = table.addingReportingOverflow(tableMask)
            guard !wraps, let bytes = memory.readableBytes(of: try! GuestPhysicalRange(first: GuestPhysicalAddress(table),
                                                                                       last: GuestPhysicalAddress(tableLast))) else { return nil }
            let shift = UInt64(truncatingIfNeeded: format.itemShift(level: level))
            let i = (first &- tableBase) &>> shift
            let end = (last &- tableBase) &>> shift
            let raw = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: Int(truncatingIfNeeded: i &<< 3), as: UInt64.self))
            if i == end && level > 0 {
                let test = format.tablePointerTest(level: level)
                if test.matches(raw) {
                    // A plain pointer: the next table, if aligned and off the path.
                    let next = test.table(raw)
                    let nextMask = (UInt64(8) &<< UInt64(truncatingIfNeeded: format.indexBits(level: level &- 1))) &- 1
                    guard next & nextMask == 0, depth < 7 else { return nil }
                    pathFirst[unchecked: depth] = table
                    pathLast[unchecked: depth] = tableLast
                    depth &+= 1
                    for d in 0..<depth where next <= pathLast[unchecked: d] && pathFirst[unchecked: d] <= next | nextMask { return nil }
                    (table, tableMask, level, tableBase) = (next, nextMask, level &- 1, tableBase &+ (i &<< shift))
                    allows = allows.intersection(test.allows)
                    continue
                }
            }
            // The table of the range's leaves: one run of one-item leaves, or nothing.
            let field = format.leafRunField(level: level)
            let count = end &- i &+ 1
            // Entries: one per table descended through, then the run's; tables: those and the root.
            guard field != 0, UInt64(truncatingIfNeeded: budget.maxEntries) > UInt64(truncatingIfNeeded: depth) &+ end &- i,
                  budget.maxEntries > 0, budget.maxTables > depth,
                  case .leaf(let leaf) = format.decode(raw, level: level), leaf.sizeShift == Int(truncatingIfNeeded: shift),
                  leaf.output & ((1 &<< shift) &- 1) == 0, (leaf.output | ((1 &<< shift) &- 1)) <= lowMask(format.outputBits) else {
                return nil
            }
            let step = field & (0 &- field)
            guard (field &- (raw & field)) &>> UInt64(truncatingIfNeeded: step.trailingZeroBitCount) >= end &- i,
                  // From the first entry (equal to itself), so that a run of a power of two entries is whole blocks of the scan.
                  i == end || scanEntries(bytes, Int(truncatingIfNeeded: i), Int(truncatingIfNeeded: end), raw, step)
                    == Int(truncatingIfNeeded: end) &+ 1 else { return nil }
            let start = tableBase &+ (i &<< shift)
            return (WalkLeafGroup(spanFirst: start, inputFirst: format.inputAddress(ofSpan: start).rawValue,
                                  leafShift: Int(truncatingIfNeeded: shift), count: Int(truncatingIfNeeded: count), output: leaf.output,
                                  permissions: leaf.permissions.intersection(allows), level: level, firstCharge: 0, entriesPerLeaf: 1),
                    depth)
        }
    }

    /// The walk itself: hands each group of leaves to `group` and calls `flush` before every
    /// fault it reports and at the end.
    @inlinable
    func runGroups<E: Error>(_ range: IOVARange, skip: Bool, onFault: (PageTableFault) throws(E) -> WalkControl,
                             group: (WalkLeafGroup, inout WalkState) throws(E) -> WalkControl,
                             flush: () throws(E) -> WalkControl) throws(PageTableWalkError<E>) -> WalkStatistics {
        var state = WalkState(entriesLeft: budget.maxEntries, tablesLeft: budget.maxTables)
        let top = format.topLevel
        if root.rawValue & UInt64(format.tableBytes(level: top) - 1) != 0 {
            _ = try report(.misalignedTable, top, root.rawValue, 0, 0, format.inputAddress(ofSpan: 0), &state, skip, onFault, flush)
            return state.stats
        }
        /// Walks the span addresses `first...last` (within one half); `false` when the walk stops.
        func piece(_ first: UInt64, _ last: UInt64, _ state: inout WalkState) throws(PageTableWalkError<E>) -> Bool {
            guard state.tablesLeft > 0 else {
                _ = try exhausted(top, root.rawValue, 0, 0, format.inputAddress(ofSpan: first), state, flush)
                return false
            }
            state.tablesLeft &-= 1
            state.stats.tablesVisited &+= 1
            state.pathFirst[0] = root.rawValue
            state.pathLast[0] = root.rawValue &+ UInt64(format.tableBytes(level: top) &- 1)
            state.depth = 1
            var (table, level, tableBase, allows) = (root.rawValue, top, UInt64(0), Permissions.all)
            if runFastPath { descend(first, last, &table, &level, &tableBase, &allows, &state) }
            return try walkTable(table, level: level, tableBase: tableBase, first: first, last: last, allows: allows,
                                 &state, skip, onFault, group, flush) == .continue
        }
        if let (first, last) = format.spanRange(of: range) {
            // The common case: a range the table translates whole, in one piece.
            guard try piece(first, last, &state) else { return state.stats }
        } else {
            // At most two pieces (the halves of a sign-extended space), without an array.
            let (lower, upperHalf) = format.inputRangePair
            var pending: IOVARange? = lower
            var upper = upperHalf
            while let p = pending {
                (pending, upper) = (upper, nil)
                guard let r = p.intersection(range),
                      let first = format.spanAddress(of: r.first), let last = format.spanAddress(of: r.last) else { continue }
                guard try piece(first, last, &state) else { return state.stats }
            }
        }
        do { _ = try flush() } catch { throw .visitor(error) }
        return state.stats
    }

    /// The descent fast path: while `first...last` lies within one entry of the current table
    /// and that entry is a plain pointer to the next table (``PageTableFormat/tablePointerTest(level:)``),
    /// moves down to that table without decoding the entry, doing the checks and the
    /// accounting ``walkTable`` would do for it. It stops, leaving the rest to ``walkTable``, at
    /// the first entry that needs more: not plain, a table out of memory or misaligned, a loop,
    /// an exhausted budget. Only whole tables readable in place are descended through.
    @inlinable
    func descend(_ first: UInt64, _ last: UInt64, _ table: inout UInt64, _ level: inout Int, _ tableBase: inout UInt64,
                 _ allows: inout Permissions, _ state: inout WalkState) {
        // Shifts and sizes below are those of a valid format (< 64 bits, tables < 2^63 bytes).
        let entryLog2: UInt64 = format.entryBytes == 8 ? 3 : 2
        // Each level takes one entry and one table from the budget, charged after the loop.
        let most = min(state.entriesLeft, state.tablesLeft)
        var taken = 0
        var depth = state.depth
        while level > 0 && taken < most {
            let shift = UInt64(truncatingIfNeeded: format.itemShift(level: level))
            let k = (first &- tableBase) &>> shift
            guard k == (last &- tableBase) &>> shift else { break }
            let tableMask = (UInt64(1) &<< (entryLog2 &+ UInt64(truncatingIfNeeded: format.indexBits(level: level)))) &- 1
            let (tableLast, wraps) = table.addingReportingOverflow(tableMask)
            guard !wraps, let bytes = memory.readableBytes(of: try! GuestPhysicalRange(first: GuestPhysicalAddress(table), last: GuestPhysicalAddress(tableLast))) else { break }
            let raw = entryLog2 == 3
                ? UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: Int(truncatingIfNeeded: k &<< 3), as: UInt64.self))
                : UInt64(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: Int(truncatingIfNeeded: k &<< 2), as: UInt32.self)))
            let test = format.tablePointerTest(level: level)
            guard test.matches(raw) else { break }
            let next = test.table(raw)
            let nextMask = (UInt64(1) &<< (entryLog2 &+ UInt64(truncatingIfNeeded: format.indexBits(level: level &- 1)))) &- 1
            let nextLast = next | nextMask
            guard next & nextMask == 0 else { break }
            var loops = false
            for d in 0..<depth where next <= state.pathLast[d] && state.pathFirst[d] <= nextLast { loops = true }
            guard !loops else { break }
            state.pathFirst[depth] = next
            state.pathLast[depth] = nextLast
            depth &+= 1
            taken &+= 1
            (table, level, tableBase) = (next, level &- 1, tableBase &+ (k &<< shift))
            allows = allows.intersection(test.allows)
        }
        state.depth = depth
        state.entriesLeft &-= taken
        state.stats.entriesRead &+= taken
        state.stats.fastPathEntries &+= taken
        state.tablesLeft &-= taken
        state.stats.tablesVisited &+= taken
    }

    @inlinable @inline(__always)
    func load(_ address: UInt64) -> UInt64? {
        if format.entryBytes == 8 { return memory.load64(at: GuestPhysicalAddress(address)) }
        return memory.load32(at: GuestPhysicalAddress(address)).map { UInt64($0) }
    }

    @inlinable
    func budgetFault(_ level: Int, _ table: UInt64, _ index: Int, _ entry: UInt64, _ input: IOVA,
                     _ state: WalkState) -> PageTableFault {
        PageTableFault(reason: .budgetExceeded, level: level, table: GuestPhysicalAddress(table), index: index, entry: entry,
                       input: input, statistics: state.stats)
    }

    /// Hands out the pending run, then throws the budget fault (or stops, if the visitor
    /// stops at that run).
    @inlinable
    func exhausted<E: Error>(_ level: Int, _ table: UInt64, _ index: Int, _ entry: UInt64, _ input: IOVA, _ state: WalkState,
                             _ flush: () throws(E) -> WalkControl) throws(PageTableWalkError<E>) -> WalkControl {
        do { if try flush() == .stop { return .stop } } catch { throw .visitor(error) }
        throw .fault(budgetFault(level, table, index, entry, input, state))
    }

    /// Hands out the pending run, then throws the fault (not skipping), or hands it to
    /// `onFault` and returns what it says.
    @inlinable
    func report<E: Error>(_ reason: PageTableFault.Reason, _ level: Int, _ table: UInt64, _ index: Int, _ entry: UInt64,
                          _ input: IOVA, _ state: inout WalkState, _ skip: Bool,
                          _ onFault: (PageTableFault) throws(E) -> WalkControl,
                          _ flush: () throws(E) -> WalkControl) throws(PageTableWalkError<E>) -> WalkControl {
        let fault = PageTableFault(reason: reason, level: level, table: GuestPhysicalAddress(table), index: index, entry: entry,
                                   input: input)
        do { if try flush() == .stop { return .stop } } catch { throw .visitor(error) }
        guard skip else { throw .fault(fault) }
        state.stats.faultsSkipped += 1
        do { return try onFault(fault) } catch { throw .visitor(error) }
    }

    /// Entry `k` of `table` (at `level`) points at the table `next`: checks it as ``walkTable``
    /// promises (level, alignment, loops, budget) and walks the part of `first...last` it
    /// translates. Kept out of ``walkTable`` so that the leaf path there stays lean.
    @inlinable @inline(never)
    func enterTable<E: Error>(_ next: UInt64, _ nextLevel: Int, _ nextAllows: Permissions, from table: UInt64, level: Int, index k: Int,
                              _ raw: UInt64, tableBase: UInt64, first: UInt64, last: UInt64, allows: Permissions,
                              _ state: inout WalkState, _ skip: Bool, _ onFault: (PageTableFault) throws(E) -> WalkControl,
                              _ group: (WalkLeafGroup, inout WalkState) throws(E) -> WalkControl,
                              _ flush: () throws(E) -> WalkControl) throws(PageTableWalkError<E>) -> WalkControl {
        let entryBase = tableBase &+ (UInt64(truncatingIfNeeded: k) &<< UInt64(truncatingIfNeeded: format.itemShift(level: level)))
        let input = format.inputAddress(ofSpan: entryBase)
        guard nextLevel >= 0, nextLevel < level else {
            return try report(.invalidNextLevel, level, table, k, raw, input, &state, skip, onFault, flush)
        }
        let nextBytes = UInt64(format.tableBytes(level: nextLevel))
        guard next & (nextBytes - 1) == 0 else {
            return try report(.misalignedTable, level, table, k, raw, input, &state, skip, onFault, flush)
        }
        // Aligned to its power-of-two size, the next table cannot wrap past 2^64.
        let nextLast = next &+ (nextBytes - 1)
        for d in 0..<state.depth where next <= state.pathLast[d] && state.pathFirst[d] <= nextLast {
            return try report(.loop, level, table, k, raw, input, &state, skip, onFault, flush)
        }
        guard state.tablesLeft > 0 else { return try exhausted(level, table, k, raw, input, state, flush) }
        state.tablesLeft -= 1
        state.stats.tablesVisited += 1
        // With level skipping (AMD v1) the child covers only the low part of the entry.
        let childLast = entryBase &+ lowMask(format.itemShift(level: nextLevel) + format.indexBits(level: nextLevel))
        let lo = max(first, entryBase)
        let hi = min(last, childLast)
        guard lo <= hi else { return .continue }
        state.pathFirst[state.depth] = next
        state.pathLast[state.depth] = nextLast
        state.depth += 1
        let control = try walkTable(next, level: nextLevel, tableBase: entryBase, first: lo, last: hi,
                                    allows: allows.intersection(nextAllows), &state, skip, onFault, group, flush)
        state.depth -= 1
        return control
    }

    @inlinable
    func walkTable<E: Error>(_ table: UInt64, level: Int, tableBase: UInt64, first: UInt64, last: UInt64, allows: Permissions,
                             _ state: inout WalkState, _ skip: Bool, _ onFault: (PageTableFault) throws(E) -> WalkControl,
                             _ group: (WalkLeafGroup, inout WalkState) throws(E) -> WalkControl,
                             _ flush: () throws(E) -> WalkControl) throws(PageTableWalkError<E>) -> WalkControl {
        // Shifts below are those of a valid format (item shifts < 64).
        let shift = format.itemShift(level: level)
        let shiftBits = UInt64(truncatingIfNeeded: shift)
        let indexBits = format.indexBits(level: level)
        let entryBytes = UInt64(format.entryBytes)
        let endIndex = Int(truncatingIfNeeded: (last &- tableBase) &>> shiftBits)
        var i = Int(truncatingIfNeeded: (first &- tableBase) &>> shiftBits)
        let startIndex = i
        /// The first input address entry `k` of this table translates.
        func input(_ k: Int) -> IOVA { format.inputAddress(ofSpan: tableBase &+ (UInt64(truncatingIfNeeded: k) &<< shiftBits)) }

        // The whole table must be guest memory before any entry of it is read.
        let tableBytes = UInt64(format.tableBytes(level: level))
        let (tableLast, wraps) = table.addingReportingOverflow(tableBytes - 1)
        guard !wraps else { return try report(.outsideGuestMemory, level, table, i, 0, input(i), &state, skip, onFault, flush) }
        let tableRange = try! GuestPhysicalRange(first: GuestPhysicalAddress(table), last: GuestPhysicalAddress(tableLast))
        // The fast path reads the table in place when the memory offers it.
        let bytes = runFastPath ? memory.readableBytes(of: tableRange) : nil
        guard bytes != nil || memory.contains(tableRange) else {
            return try report(.outsideGuestMemory, level, table, i, 0, input(i), &state, skip, onFault, flush)
        }
        let field = runFastPath ? format.leafRunField(level: level) : 0
        let step = field & (0 &- field)
        let stepShift = UInt64(truncatingIfNeeded: step.trailingZeroBitCount & 63)
        /// Entry `k` (`nil`: the memory shrank under the walk).
        func entry(_ k: Int) -> UInt64? {
            if let bytes {
                return entryBytes == 8 ? UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: k &* 8, as: UInt64.self))
                    : UInt64(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: k &* 4, as: UInt32.self)))
            }
            return load(table &+ UInt64(k) &* entryBytes)
        }
        /// The first index from `from` through `through` whose entry is not `expected` plus
        /// `delta` per index after `from` (`through + 1` when all are). Reads each entry once.
        func scan(_ from: Int, _ through: Int, _ expected: UInt64, _ delta: UInt64) -> Int {
            var k = from
            var e = expected
            if let bytes, entryBytes == 8 { return scanEntries(bytes, from, through, expected, delta) }
            while k <= through {
                guard entry(k) == e else { return k }
                e &+= delta
                k &+= 1
            }
            return k
        }

        while i <= endIndex {
            guard state.entriesLeft > 0 else { return try exhausted(level, table, i, 0, input(i), state, flush) }
            state.entriesLeft -= 1
            state.stats.entriesRead += 1
            guard let raw = entry(i) else {
                // The memory shrank under the walk: refuse the rest of the table.
                return try report(.outsideGuestMemory, level, table, i, 0, input(i), &state, skip, onFault, flush)
            }
            switch format.decode(raw, level: level) {
            case .empty:
                i += 1
                if runFastPath && i <= endIndex {
                    // An entry equal to an empty one is empty too: take the repeats at once.
                    let next = scan(i, i - 1 + min(state.entriesLeft, endIndex - i + 1), raw, 0)
                    state.entriesLeft -= next - i
                    state.stats.entriesRead += next - i
                    state.stats.fastPathEntries += next - i
                    i = next
                }
            case .fault(let reason):
                if try report(reason, level, table, i, raw, input(i), &state, skip, onFault, flush) == .stop { return .stop }
                i += 1
            case .table(let next, let nextLevel, let nextAllows):
                i += 1
                if try enterTable(next.rawValue, nextLevel, nextAllows, from: table, level: level, index: i - 1, raw, tableBase: tableBase,
                                  first: first, last: last, allows: allows, &state, skip, onFault, group, flush) == .stop {
                    return .stop
                }
            case .leaf(let leaf):
                let runShift = leaf.sizeShift - shift
                guard runShift >= 0, runShift <= min(indexBits, Self.maxRunLog2), leaf.sizeShift < 64 else {
                    if try report(.invalidPageSizeEncoding, level, table, i, raw, input(i), &state, skip, onFault, flush) == .stop { return .stop }
                    i += 1
                    continue
                }
                let count = 1 << runShift
                let runStart = i & ~(count - 1)
                let runEnd = runStart + count
                let base = leaf.replicasShareOutput ? leaf.output : leaf.output &- (UInt64(truncatingIfNeeded: i &- runStart) &<< shiftBits)
                // A member whose run is misaligned or too wide is bad itself; its neighbours are
                // judged on their own.
                guard base & lowMask(leaf.sizeShift) == 0 else {
                    if try report(.misalignedOutput, level, table, i, raw, input(i), &state, skip, onFault, flush) == .stop { return .stop }
                    i += 1
                    continue
                }
                guard (base | lowMask(leaf.sizeShift)) <= lowMask(format.outputBits) else {
                    if try report(.outputBeyondWidth, level, table, i, raw, input(i), &state, skip, onFault, flush) == .stop { return .stop }
                    i += 1
                    continue
                }
                // The fast path: from a leaf's first entry, the entries that each add one item
                // to the previous without carrying out of the output field (by the format's
                // promise, each the same leaf moved on), as whole leaves within the range and
                // the budget.
                if field != 0 && i == runStart && (count == 1 || !leaf.replicasShareOutput) && i < endIndex {
                    let room = Int(truncatingIfNeeded: (field &- (raw & field)) &>> stepShift)
                    let scanned = scan(i + 1, i + min(min(state.entriesLeft, endIndex &- i), room), raw &+ step, step) - i
                    let leaves = scanned >> runShift
                    if leaves > 1 || (leaves == 1 && count > 1) {
                        state.stats.fastPathEntries += leaves << runShift
                        let g = WalkLeafGroup(spanFirst: tableBase &+ (UInt64(truncatingIfNeeded: i) &<< shiftBits), inputFirst: input(i).rawValue,
                                              leafShift: leaf.sizeShift, count: leaves,
                                          output: base, permissions: leaf.permissions.intersection(allows), level: level,
                                          firstCharge: count - 1, entriesPerLeaf: count)
                        let control: WalkControl
                        do { control = try group(g, &state) } catch { throw .visitor(error) }
                        if control == .stop { return .stop }
                        i += leaves << runShift
                        continue
                    }
                }
                if count > 1 {
                    // Vote: which slots of the span hold this run's replica. `disagreeing` has a
                    // bit per slot (at most 256), so no allocation.
                    var agreeing = 1
                    var disagreeing = InlineArray<4, UInt64>(repeating: 0)
                    for k in runStart..<runEnd where k != i {
                        guard state.entriesLeft > 0 else { return try exhausted(level, table, k, 0, input(k), state, flush) }
                        state.entriesLeft -= 1
                        state.stats.entriesRead += 1
                        guard let other = entry(k) else {
                            return try report(.outsideGuestMemory, level, table, k, 0, input(k), &state, skip, onFault, flush)
                        }
                        let expected = leaf.replicasShareOutput ? base : base &+ (UInt64(truncatingIfNeeded: k &- runStart) &<< shiftBits)
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
                                let other = entry(k) ?? 0
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
                                if try report(.inconsistentContiguousRun, level, table, k, other, input(k), &state, skip, onFault,
                                              flush) == .stop {
                                    return .stop
                                }
                            }
                            if !named,
                               try report(.inconsistentContiguousRun, level, table, i, raw, input(i), &state, skip, onFault,
                                          flush) == .stop {
                                return .stop
                            }
                            i = runEnd
                        } else {
                            // A lone or minority claim: this entry is the bad one.
                            if try report(.inconsistentContiguousRun, level, table, i, raw, input(i), &state, skip, onFault,
                                          flush) == .stop {
                                return .stop
                            }
                            i += 1
                        }
                        continue
                    }
                }
                let control: WalkControl
                do {
                    control = try group(WalkLeafGroup(spanFirst: tableBase &+ (UInt64(truncatingIfNeeded: runStart) &<< shiftBits),
                                                      inputFirst: input(runStart).rawValue, leafShift: leaf.sizeShift,
                                                  count: 1, output: base, permissions: leaf.permissions.intersection(allows),
                                                  level: level, firstCharge: 0, entriesPerLeaf: count), &state)
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

// The walk's state and groups are not generic, so a walk instantiates no type metadata for them.

/// What one walk has left and has done, and the tables on its current path.
@usableFromInline
struct WalkState {
    @usableFromInline var entriesLeft: Int
    @usableFromInline var tablesLeft: Int
    @usableFromInline var stats: WalkStatistics
    /// First and last byte of each table on the current path (the first `depth` are set).
    @usableFromInline var pathFirst: InlineArray<8, UInt64>
    @usableFromInline var pathLast: InlineArray<8, UInt64>
    @usableFromInline var depth: Int

    @inlinable
    init(entriesLeft: Int, tablesLeft: Int) {
        self.entriesLeft = entriesLeft
        self.tablesLeft = tablesLeft
        stats = WalkStatistics()
        pathFirst = InlineArray(repeating: 0)
        pathLast = InlineArray(repeating: 0)
        depth = 0
    }

    /// The state after ``PageTableWalker/invalidationGroup(_:)``: `depth` plain pointers and
    /// the group's first entry charged, and the root and the `depth` tables below it entered.
    @inlinable
    init(budget: WalkBudget, afterDescentOf depth: Int, to group: WalkLeafGroup) {
        self.init(entriesLeft: budget.maxEntries &- depth &- 1, tablesLeft: budget.maxTables &- depth &- 1)
        stats.entriesRead = depth &+ 1
        stats.tablesVisited = depth &+ 1
        stats.fastPathEntries = depth &+ (group.count > 1 ? group.count : 0)
    }

    /// Charges all of `group`'s leaves at once.
    @inlinable
    mutating func charge(_ group: WalkLeafGroup) {
        let entries = group.firstCharge + (group.count - 1) * group.entriesPerLeaf
        entriesLeft -= entries
        stats.entriesRead += entries
        stats.leaves += group.count
    }
}

/// `count` consecutive leaves of one table, size and permissions whose inputs and outputs
/// both continue: one leaf of the entry-by-entry path, or a run the fast path took. The
/// group's consumer charges its entries to the budget as it hands the leaves out.
@usableFromInline
struct WalkLeafGroup {
    @usableFromInline var spanFirst: UInt64
    /// The first input address of the first leaf (the group never crosses the halves of a
    /// sign-extended space, so the others follow).
    @usableFromInline var inputFirst: UInt64
    @usableFromInline var leafShift: Int
    @usableFromInline var count: Int
    /// The output of the first leaf.
    @usableFromInline var output: UInt64
    @usableFromInline var permissions: Permissions
    @usableFromInline var level: Int
    /// Entries still to charge for the first leaf, and for each later one.
    @usableFromInline var firstCharge: Int
    @usableFromInline var entriesPerLeaf: Int

    @inlinable
    init(spanFirst: UInt64, inputFirst: UInt64, leafShift: Int, count: Int, output: UInt64, permissions: Permissions, level: Int,
         firstCharge: Int, entriesPerLeaf: Int) {
        self.spanFirst = spanFirst
        self.inputFirst = inputFirst
        self.leafShift = leafShift
        self.count = count
        self.output = output
        self.permissions = permissions
        self.level = level
        self.firstCharge = firstCharge
        self.entriesPerLeaf = entriesPerLeaf
    }

    /// The last input address of the last leaf.
    @inlinable var inputLast: UInt64 { inputFirst &+ ((UInt64(count) &<< UInt64(leafShift)) &- 1) }
}

/// The first index from `from` through `through` of the 8-byte entries at `bytes` whose entry
/// is not `expected` plus `delta` per index after `from` (`through + 1` when all are). Compares
/// sixteen, then eight, entries per test as two-lane vectors (on a little-endian host), then
/// one by one from the block holding the first difference (read a second time).
@inlinable
func scanEntries(_ bytes: UnsafeRawPointer, _ from: Int, _ through: Int, _ expected: UInt64, _ delta: UInt64) -> Int {
    var k = from
    var e = expected
    #if _endian(little)
    if through &- from >= 7 {
        let d2 = delta &* 2
        var e0 = SIMD2<UInt64>(expected, expected &+ delta)
        var e1 = e0 &+ SIMD2(repeating: d2)
        var e2 = e1 &+ SIMD2(repeating: d2)
        var e3 = e2 &+ SIMD2(repeating: d2)
        let d8 = SIMD2<UInt64>(repeating: delta &* 8)
        if through &- from >= 15 {
            // Sixteen per test: the second eight compared against the first's expectation plus eight.
            var f0 = e0 &+ d8, f1 = e1 &+ d8, f2 = e2 &+ d8, f3 = e3 &+ d8
            let d16 = d8 &+ d8
            while k &+ 15 <= through {
                let p = bytes + k &* 8
                let x: SIMD2<UInt64> = (p.loadUnaligned(as: SIMD2<UInt64>.self) ^ e0) | (p.loadUnaligned(fromByteOffset: 16, as: SIMD2<UInt64>.self) ^ e1)
                    | (p.loadUnaligned(fromByteOffset: 32, as: SIMD2<UInt64>.self) ^ e2)
                    | (p.loadUnaligned(fromByteOffset: 48, as: SIMD2<UInt64>.self) ^ e3)
                let y: SIMD2<UInt64> = (p.loadUnaligned(fromByteOffset: 64, as: SIMD2<UInt64>.self) ^ f0)
                    | (p.loadUnaligned(fromByteOffset: 80, as: SIMD2<UInt64>.self) ^ f1)
                    | (p.loadUnaligned(fromByteOffset: 96, as: SIMD2<UInt64>.self) ^ f2)
                    | (p.loadUnaligned(fromByteOffset: 112, as: SIMD2<UInt64>.self) ^ f3)
                let z = x | y
                guard z[0] | z[1] == 0 else { break }
                e0 &+= d16; e1 &+= d16; e2 &+= d16; e3 &+= d16
                f0 &+= d16; f1 &+= d16; f2 &+= d16; f3 &+= d16
                k &+= 16
            }
        }
        while k &+ 7 <= through {
            let p = bytes + k &* 8
            let x = (p.loadUnaligned(as: SIMD2<UInt64>.self) ^ e0) | (p.loadUnaligned(fromByteOffset: 16, as: SIMD2<UInt64>.self) ^ e1)
                | (p.loadUnaligned(fromByteOffset: 32, as: SIMD2<UInt64>.self) ^ e2)
                | (p.loadUnaligned(fromByteOffset: 48, as: SIMD2<UInt64>.self) ^ e3)
            guard x[0] | x[1] == 0 else { break }
            e0 &+= d8
            e1 &+= d8
            e2 &+= d8
            e3 &+= d8
            k &+= 8
        }
        e = e0[0]
    }
    #endif
    while k <= through {
        guard UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: k &* 8, as: UInt64.self)) == e else { return k }
        e &+= delta
        k &+= 1
    }
    return k
}
