@_spi(Testing) public import IOPageTables

/// Guest memory made of the fuzz input: a 16 MiB guest-physical window that repeats the input,
/// so any table pointer in the window reads fuzzer-controlled bytes; beyond it, nothing.
public struct FuzzMemory: GuestMemory {
    let bytes: UnsafeRawBufferPointer
    public static let window: UInt64 = 1 << 24

    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    func byte(_ a: UInt64) -> UInt64 { UInt64(bytes[Int(a % UInt64(bytes.count))]) }

    public func load32(at address: GuestPhysicalAddress) -> UInt32? {
        let a = address.rawValue
        guard !bytes.isEmpty, a < Self.window - 3 else { return nil }
        var v: UInt64 = 0
        for i in 0..<4 { v |= byte(a + UInt64(i)) << UInt64(8 * i) }
        return UInt32(v)
    }

    /// Every byte below the window reads; nothing above it (one comparison instead of the
    /// protocol's word-by-word probe).
    public func contains(_ range: GuestPhysicalRange) -> Bool {
        !bytes.isEmpty && range.last.rawValue < Self.window
    }

    public func load64(at address: GuestPhysicalAddress) -> UInt64? {
        let a = address.rawValue
        guard !bytes.isEmpty, a < Self.window - 7 else { return nil }
        var v: UInt64 = 0
        for i in 0..<8 { v |= byte(a + UInt64(i)) << UInt64(8 * i) }
        return v
    }
}

/// Reads parameters from the front of the input.
public struct InputCursor {
    let bytes: UnsafeRawBufferPointer
    var offset = 0
    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }
    public mutating func next() -> UInt8 {
        guard offset < bytes.count else { return 0 }
        defer { offset += 1 }
        return bytes[offset]
    }
    public mutating func next64() -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(next()) << UInt64(8 * i) }
        return v
    }
}

/// Walks the table the input describes (root and range from the first bytes, the whole input
/// as guest memory) three ways and traps if any walker invariant breaks: extents in order,
/// disjoint, aligned, inside the range asked and the format's widths, work within budget.
public func fuzzWalk<F: PageTableFormat>(_ format: F, _ data: UnsafeRawBufferPointer) {
    var c = InputCursor(data)
    let root = (c.next64() % FuzzMemory.window) & ~UInt64(format.entryBytes - 1)
    let a = c.next64()
    let b = c.next64()
    let memory = FuzzMemory(data)
    let budget = WalkBudget(maxEntries: 20_000, maxTables: 200)
    let walker = PageTableWalker(format: format, memory: memory, root: GuestPhysicalAddress(root), budget: budget)
    let range = try! IOVARange(first: IOVA(min(a, b)), last: IOVA(max(a, b)))
    // An invalidation: the 2 MiB around `a` (one leaf table of the 4K formats).
    let window = try! IOVARange(first: IOVA(a & ~0x1F_FFFF), last: IOVA(a | 0x1F_FFFF))

    var previous: LeafExtent?
    func check(_ e: LeafExtent, in r: IOVARange) {
        precondition(e.input.overlaps(r), "extent outside the walked range")
        precondition(e.input.length == e.size.bytes, "extent length is not its size")
        precondition(e.input.first.isAligned(to: e.size) && e.output.isAligned(to: e.size), "misaligned extent")
        precondition(e.output.rawValue | (e.size.bytes - 1) <= (format.outputBits >= 64 ? .max : (1 << UInt64(format.outputBits)) - 1),
                     "output past the format's width")
        precondition(format.spanAddress(of: e.input.first) != nil && format.spanAddress(of: e.input.last) != nil, "input outside space")
        if let p = previous { precondition(p.input.last < e.input.first, "extents out of order or overlapping") }
        previous = e
    }
    for r in [IOVARange.all, range, window] {
        previous = nil
        do {
            let s = try walker.walk(r) { check($0, in: r) }
            precondition(s.entriesRead <= budget.maxEntries && s.tablesVisited <= budget.maxTables)
        } catch {
            precondition(error.reason != .inputOutsideSpace)
        }
        previous = nil
        do {
            try walker.walk(r, skippingFaults: { _ in }) { check($0, in: r) }
        } catch {
            precondition(error.reason == .budgetExceeded, "only the budget stops a skipping walk")
        }
    }
    // The run fast path and the entry-by-entry walk agree on everything (leaves, faults,
    // statistics, budget stops), and runs are the coalesced leaves.
    var slow = walker
    slow.usesRunFastPath = false
    for r in [IOVARange.all, range, window] {
        for skipping in [false, true] {
            let fast = record(walker, r, skipping: skipping)
            let reference = record(slow, r, skipping: skipping)
            precondition(fast == reference, "fast and entry-by-entry walks differ: \(fast) vs \(reference)")
            var runs: [TranslationRun] = []
            var faults: [PageTableFault] = []
            let visit = { (x: TranslationRun) throws(Never) -> WalkControl in runs.append(x); return .continue }
            var thrown: PageTableFault?
            var stats: WalkStatistics?
            do {
                if skipping {
                    stats = try walker.visitRuns(r, skippingFaults: { (f: PageTableFault) throws(Never) -> WalkControl in
                        faults.append(f)
                        return .continue
                    }, visit)
                } else {
                    stats = try walker.visitRuns(r, visit)
                }
                stats?.fastPathEntries = 0
            } catch {
                if case .fault(let f) = error { thrown = f }
            }
            precondition(runs == TranslationRun.coalescing(reference.leaves), "runs are not the coalesced leaves")
            precondition(faults == reference.faults && thrown.map(pathFree) == reference.error, "runs' faults differ")
            precondition(stats == reference.statistics, "runs' statistics differ")
        }
    }
    if let t = try? walker.translate(range.first) {
        precondition(t.input.contains(range.first), "translate returned a leaf not covering the address")
    }
}

/// What one walk did, without the statistic that says which path ran.
struct WalkRecord: Equatable, CustomStringConvertible {
    var leaves: [LeafExtent] = []
    var faults: [PageTableFault] = []
    var statistics: WalkStatistics?
    var error: PageTableFault?
    var description: String { "\(leaves.count) leaves, \(faults.count) faults, \(statistics.map { "\($0)" } ?? "-"), \(error.map { "\($0)" } ?? "-")" }
}

func pathFree(_ f: PageTableFault) -> PageTableFault {
    var f = f
    f.statistics?.fastPathEntries = 0
    return f
}

func record<F: PageTableFormat, M: GuestMemory>(_ w: PageTableWalker<F, M>, _ range: IOVARange, skipping: Bool) -> WalkRecord {
    var r = WalkRecord()
    do {
        var s: WalkStatistics
        if skipping {
            s = try w.walk(range, skippingFaults: { r.faults.append($0) }) { r.leaves.append($0) }
        } else {
            s = try w.walk(range) { r.leaves.append($0) }
        }
        s.fastPathEntries = 0
        r.statistics = s
    } catch {
        r.error = pathFree(error)
    }
    return r
}
