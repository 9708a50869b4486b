import Glibc
@testable import IOPageTables
import TestSupport
import Testing

/// Every format configuration the fast-path tests sweep.
let allFormats: [any PageTableFormat] = [
    Formats.vtd3, Formats.vtd4, Formats.vtd5, Formats.x86, Formats.x86_5, Formats.amdV2Plain, Formats.amd3, Formats.amd4,
    Formats.amd6, Formats.arm4K, Formats.arm4KTTBR1, Formats.arm4KLPA2, Formats.arm16K, Formats.arm64K, Formats.arm4KS2,
    Formats.arm16KS2, Formats.arm64KS2, Formats.v7s, Formats.sv39, Formats.sv48, Formats.sv57, Formats.sv48x4,
]

/// What one walk did: its leaves, the faults it skipped, and how it ended.
struct WalkRecord: Equatable, CustomStringConvertible {
    var leaves: [LeafExtent] = []
    var faults: [PageTableFault] = []
    var statistics: WalkStatistics?
    var error: PageTableFault?
    var description: String { "\(leaves.count) leaves, faults \(faults), stats \(statistics.map { "\($0)" } ?? "-"), error \(error.map { "\($0)" } ?? "-")" }
}

/// The statistics without the one field that says which path ran.
func pathFree(_ s: WalkStatistics) -> WalkStatistics {
    var s = s
    s.fastPathEntries = 0
    return s
}

func pathFree(_ f: PageTableFault) -> PageTableFault {
    var f = f
    f.statistics = f.statistics.map(pathFree)
    return f
}

func record<F: PageTableFormat, M: GuestMemory>(_ w: PageTableWalker<F, M>, _ range: IOVARange, skipping: Bool) -> WalkRecord {
    var r = WalkRecord()
    do {
        let s: WalkStatistics
        if skipping {
            s = try w.walk(range, skippingFaults: { r.faults.append($0) }) { r.leaves.append($0) }
        } else {
            s = try w.walk(range) { r.leaves.append($0) }
        }
        r.statistics = pathFree(s)
    } catch {
        r.error = pathFree(error)
    }
    return r
}

/// The same walk as maximal runs: the runs, the faults skipped, and how it ended.
func recordRuns<F: PageTableFormat, M: GuestMemory>(_ w: PageTableWalker<F, M>, _ range: IOVARange, skipping: Bool)
    -> ([TranslationRun], [PageTableFault], WalkStatistics?, PageTableFault?) {
    var runs: [TranslationRun] = []
    var faults: [PageTableFault] = []
    let visit = { (r: TranslationRun) throws(Never) -> WalkControl in runs.append(r); return .continue }
    do {
        let s: WalkStatistics
        if skipping {
            s = try w.visitRuns(range, skippingFaults: { (f: PageTableFault) throws(Never) -> WalkControl in
                faults.append(f)
                return .continue
            }, visit)
        } else {
            s = try w.visitRuns(range, visit)
        }
        return (runs, faults, pathFree(s), nil)
    } catch {
        guard case .fault(let f) = error else { return (runs, faults, nil, nil) }
        return (runs, faults, nil, pathFree(f))
    }
}

/// Walks `w` with and without the fast path (in place, and entry by entry through a memory
/// that offers no bytes in place), per leaf and as runs, skipping faults and not, and requires
/// the same leaves, faults, statistics and errors. Returns the fast walk's fast-path entries.
@discardableResult
func checkPathsAgree<F: PageTableFormat, M: GuestMemory>(_ w: PageTableWalker<F, M>, _ range: IOVARange = .all,
                                                        _ context: @autoclosure () -> String = "",
                                                        sourceLocation: SourceLocation = #_sourceLocation) -> Int {
    var slow = w
    slow.runFastPath = false
    var fast = w
    fast.runFastPath = true
    var words = PageTableWalker(format: w.format, memory: WordMemory(w.memory), root: w.root, budget: w.budget)
    words.runFastPath = true
    for skipping in [false, true] {
        let reference = record(slow, range, skipping: skipping)
        let f = record(fast, range, skipping: skipping)
        #expect(f == reference, "fast, skipping \(skipping) \(context())", sourceLocation: sourceLocation)
        #expect(record(words, range, skipping: skipping) == reference, "fast entry by entry, skipping \(skipping) \(context())",
                sourceLocation: sourceLocation)
        for walker in [slow, fast] {
            let (runs, faults, stats, error) = recordRuns(walker, range, skipping: skipping)
            #expect(runs == TranslationRun.coalescing(reference.leaves), "runs, skipping \(skipping) \(context())", sourceLocation: sourceLocation)
            #expect(faults == reference.faults && stats == reference.statistics && error == reference.error,
                    "runs' faults, skipping \(skipping) \(context())", sourceLocation: sourceLocation)
        }
    }
    // Runs count as the leaf walk does, to the field that says which path ran: the
    // invalidation path of runs (when it answers) does what the descent and the leaf run do.
    for skipping in [false, true] {
        let leafStats = skipping ? try? fast.walk(range, skippingFaults: { _ in }) { _ in } : try? fast.walk(range) { _ in }
        let none = { (_: TranslationRun) throws(Never) -> WalkControl in .continue }
        let runStats = skipping
            ? try? fast.visitRuns(range, skippingFaults: { (_: PageTableFault) throws(Never) -> WalkControl in .continue }, none)
            : try? fast.visitRuns(range, none)
        #expect(runStats == leafStats, "runs' statistics, skipping \(skipping) \(context())", sourceLocation: sourceLocation)
    }
    if let (run, stats) = fast.invalidationRun(range) {
        let reference = record(slow, range, skipping: false)
        #expect([run] == TranslationRun.coalescing(reference.leaves) && reference.error == nil && reference.faults.isEmpty,
                "invalidation run \(context())", sourceLocation: sourceLocation)
        #expect(pathFree(stats) == reference.statistics, "invalidation statistics \(context())", sourceLocation: sourceLocation)
    }
    var fastEntries = 0
    do {
        fastEntries = try fast.walk(range, skippingFaults: { _ in }) { _ in }.fastPathEntries
    } catch {
        fastEntries = error.statistics?.fastPathEntries ?? 0
    }
    return fastEntries
}

/// A dense range of each format's smallest leaf (crossing leaf tables), a range of mixed
/// sizes (contiguous and replicated runs where the format has them), and random leaves.
func denseTable<F: PageTableFormat>(_ f: F, _ arena: Arena, rng: inout SplitMix64) throws
    -> PageTableBuilder<F, MutableGuestMemoryBuffer, BumpTableAllocator> {
    var b = try arena.builder(f)
    let perms = expressible(f)
    let small = Int(f.allLeafSizes.smallest!.shift)
    let (low, _) = f.inputRangePair
    let leaves = UInt64(600 + rng.next() % 200)
    let start = low.first.rawValue &+ ((rng.next() % 64) &+ 1) << UInt64(small + 9) &- ((rng.next() % 8) << UInt64(small))
    let out = ((rng.next() % 256) &+ 1) << UInt64(small + 9) &+ ((rng.next() % 64) << UInt64(small))
    try b.map(try IOVARange(base: IOVA(start), length: leaves << UInt64(small)), to: GuestPhysicalAddress(out),
              permissions: perms[Int(rng.next() % UInt64(perms.count))], sizes: PageSizeSet(rawValue: bit(small)))
    // Mixed sizes, after the dense range.
    let mixedSize = UInt64(1) << UInt64(min(small + 11, 26))
    let mixedStart = (start &+ (leaves << UInt64(small)) &+ mixedSize) & ~(mixedSize - 1)
    let mixedOut = ((out >> 26) &+ 1) << 26 &+ (1 << 28)
    try b.map(try IOVARange(base: IOVA(mixedStart &+ (UInt64(1) << UInt64(small))), length: 3 * mixedSize),
              to: GuestPhysicalAddress(mixedOut &+ (UInt64(1) << UInt64(small))), permissions: perms[0])
    let ms = randomMappings(f, count: 12, sizes: leafShifts(f, max: 30), perms: perms, outputBits: 40, rng: &rng)
    for m in ms {
        // Random leaves that collide with the ranges above are left out.
        _ = try? b.map(IOVA(m.input), to: GuestPhysicalAddress(m.output), size: PageSize(shift: m.sizeShift), permissions: m.permissions)
    }
    return b
}

/// A random change to one entry-sized word of the tables: a bit flipped, a copy or a step
/// past its neighbour, zero, or an output near the top of the width.
func mutate(_ arena: Arena, used: UInt64, entryBytes: Int, rng: inout SplitMix64) {
    let words = Int(used) / entryBytes
    guard words > 1 else { return }
    let w = 1 + Int(rng.next() % UInt64(words - 1))
    let at = arena.base.rawValue + UInt64(w * entryBytes)
    let before = arena.base.rawValue + UInt64((w - 1) * entryBytes)
    func read(_ a: UInt64) -> UInt64 {
        entryBytes == 8 ? arena.memory.load64(at: GuestPhysicalAddress(a))! : UInt64(arena.memory.load32(at: GuestPhysicalAddress(a))!)
    }
    let steps: [UInt64] = [1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 19, 1 << 20, 1 << 21, 1 << 25, 1 << 29, 1 << 30]
    let old = read(at)
    let value: UInt64 = switch rng.next() % 7 {
    case 0: old ^ (1 << (rng.next() % UInt64(entryBytes * 8)))
    case 1: read(before)
    case 2: read(before) &+ steps[Int(rng.next() % UInt64(steps.count))]
    case 3: 0
    case 4: old &+ steps[Int(rng.next() % UInt64(steps.count))] &* (rng.next() % 4)
    case 5: old | (lowMask(52) & ~lowMask(12 + Int(rng.next() % 30)))  // the output's high bits all set
    default: read(before) ^ (1 << (rng.next() % UInt64(entryBytes * 8)))
    }
    arena.poke(at, entryBytes == 8 ? value : value & 0xFFFF_FFFF, bytes: entryBytes)
}

@Suite("Fast path: the same leaves, faults and budgets as decoding every entry")
struct FastPathTests {
    /// Random dense tables of every format, whole and in random ranges, then made hostile a
    /// few entries at a time: both paths must agree on everything, and the fast path must run.
    @Test(arguments: 0..<allFormats.count)
    func pathsAgreeOnRandomAndHostileTables(_ index: Int) throws {
        try check(allFormats[index], seed: UInt64(1000 + index))
    }

    func check<F: PageTableFormat>(_ f: F, seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let arena = Arena(bytes: 8 << 20)
        let b = try denseTable(f, arena, rng: &rng)
        let used = b.allocator.next - arena.base.rawValue
        let leaves = try b.walker().extents()
        #expect(leaves.count > 600)
        #expect(checkPathsAgree(b.walker(), .all, "\(f) dense") > 600, "the fast path did not run on a dense \(f) table")
        func randomRange() -> IOVARange {
            let a = leaves[Int(rng.next() % UInt64(leaves.count))].input
            let z = leaves[Int(rng.next() % UInt64(leaves.count))].input
            let first = min(a.first.rawValue, z.first.rawValue) &+ (rng.next() % 3) * 0x1000
            let last = max(a.last.rawValue, z.last.rawValue) &- (rng.next() % 3) * 0x1000
            return try! IOVARange(first: IOVA(min(first, last)), last: IOVA(max(first, last)))
        }
        for _ in 0..<4 { checkPathsAgree(b.walker(), randomRange(), "\(f) dense range") }
        // Ranges inside one leaf or one leaf table: the descent through plain table pointers.
        func smallRange() -> IOVARange {
            let leaf = leaves[Int(rng.next() % UInt64(leaves.count))].input
            guard rng.next() % 2 == 0 else { return leaf }
            let window = UInt64(1) << UInt64(f.itemShift(level: 1))
            let first = leaf.first.rawValue & ~(window - 1)
            return try! IOVARange(first: IOVA(first), last: IOVA(first | (window - 1)))
        }
        var descended = 0
        var invalidations = 0
        for _ in 0..<8 {
            let r = smallRange()
            if checkPathsAgree(b.walker(), r, "\(f) small range \(r)") >= 1 { descended += 1 }
            if b.walker().invalidationRun(r) != nil { invalidations += 1 }
        }
        if f.tablePointerTest(level: f.topLevel) != .none {
            #expect(descended > 0, "the descent never ran on \(f)")
            if f.entryBytes == 8 && f.leafRunField(level: 0) != 0 {
                #expect(invalidations > 0, "the invalidation path never answered on \(f)")
            }
        }
        // Small budgets stop both paths at the same entry, with the same statistics.
        for _ in 0..<4 {
            let budget = WalkBudget(maxEntries: 1 + Int(rng.next() % 1500), maxTables: 1 + Int(rng.next() % 8))
            checkPathsAgree(b.walker(budget: budget), .all, "\(f) budget \(budget)")
        }
        // Hostile: a few entries changed at a time, 40 rounds.
        for round in 0..<40 {
            for _ in 0..<(1 + rng.next() % 4) { mutate(arena, used: used, entryBytes: f.entryBytes, rng: &rng) }
            checkPathsAgree(b.walker(), .all, "\(f) hostile round \(round)")
            checkPathsAgree(b.walker(), smallRange(), "\(f) hostile small range round \(round)")
            if round % 4 == 0 {
                checkPathsAgree(b.walker(), randomRange(), "\(f) hostile range round \(round)")
                checkPathsAgree(b.walker(budget: WalkBudget(maxEntries: 1 + Int(rng.next() % 1500), maxTables: 1 + Int(rng.next() % 8))),
                                .all, "\(f) hostile budget round \(round)")
            }
        }
    }

    /// The invalidation path of runs answers, in one pass, for a range whose entries in one
    /// leaf table are one run reached through plain pointers within the budget, and for
    /// nothing else: the walk then finds the same runs, faults and budget stops.
    @Test func invalidationRunAnswersOnlyForOneWholeRun() throws {
        let arena = Arena()
        var b = try arena.builder(Formats.vtd4)
        try b.map(try IOVARange(base: IOVA(0), length: 4 << 20), to: GuestPhysicalAddress(0x8000_0000), permissions: .readWrite,
                  sizes: PageSizeSet([.size4K]))
        let r = try IOVARange(base: IOVA(0), length: 2 << 20)
        let (run, stats) = try #require(b.walker().invalidationRun(r))
        #expect(run == TranslationRun(input: r, output: GuestPhysicalAddress(0x8000_0000), permissions: .readWrite))
        #expect(stats.entriesRead == 3 + 512 && stats.tablesVisited == 4 && stats.leaves == 512 && stats.fastPathEntries == 3 + 512)
        #expect(checkPathsAgree(b.walker(), r, "whole leaf table") == 3 + 512)
        // One leaf: one entry read in its table, none of it a run.
        let one = try IOVARange(base: IOVA(0x5000), length: 0x1000)
        #expect(b.walker().invalidationRun(one).map { $0.1.entriesRead == 4 && $0.1.fastPathEntries == 3 } == true)
        // Two leaves: a run of both entries, taken by the fast path, by runs and leaf by leaf.
        let two = try IOVARange(base: IOVA(0x5000), length: 0x2000)
        #expect(b.walker().invalidationRun(two).map { $0.1.entriesRead == 5 && $0.1.fastPathEntries == 5 } == true)
        #expect(try b.walker().walk(two) { _ in }.fastPathEntries == 5)
        // Across two leaf tables: the walk's.
        #expect(b.walker().invalidationRun(try IOVARange(base: IOVA(0x1F_F000), length: 0x2000)) == nil)
        // Exactly the budget it needs; an entry or a table less and the walk stops where it would.
        #expect(b.walker(budget: WalkBudget(maxEntries: 515, maxTables: 4)).invalidationRun(r) != nil)
        for budget in [WalkBudget(maxEntries: 514, maxTables: 4), WalkBudget(maxEntries: 515, maxTables: 3), WalkBudget(maxEntries: 0, maxTables: 0)] {
            #expect(b.walker(budget: budget).invalidationRun(r) == nil, "\(budget)")
            #expect(recordRuns(b.walker(budget: budget), r, skipping: false).3?.reason == .budgetExceeded, "\(budget)")
            checkPathsAgree(b.walker(budget: budget), r, "budget \(budget)")
        }
        // The tables on the way, at index 0 of each.
        var path = [b.root.rawValue]
        while path.count < 4 {
            let raw = try #require(arena.memory.load64(at: GuestPhysicalAddress(path.last!)))
            guard case .table(let next, _, _) = Formats.vtd4.decode(raw, level: 4 - path.count) else { Issue.record("no table"); return }
            path.append(next.rawValue)
        }
        let (l1, l0) = (path[2], path[3])
        func expectWalkOnly(_ what: String, _ reason: PageTableFault.Reason?) {
            #expect(b.walker().invalidationRun(r) == nil, "\(what)")
            #expect(recordRuns(b.walker(), r, skipping: false).3?.reason == reason, "\(what)")
            checkPathsAgree(b.walker(), r, what)
        }
        // A leaf off the run in the middle: two runs and a third.
        arena.poke(l0 + 100 * 8, 0x9000_0000 | 3)
        expectWalkOnly("a leaf off the run", nil)
        #expect(recordRuns(b.walker(), r, skipping: false).0.count == 3)
        arena.poke(l0 + 100 * 8, (0x8000_0000 + 100 * 0x1000) | 3)
        #expect(b.walker().invalidationRun(r) != nil)
        // The leaf table's pointer: back at the root (a loop), misaligned, outside guest memory.
        let pointer = try #require(arena.memory.load64(at: GuestPhysicalAddress(l1)))
        arena.poke(l1, b.root.rawValue | 3)
        expectWalkOnly("a loop", .loop)
        // The leaf table on its own path, where it reads as a run: the level-2 entry points at
        // it as the level-1 table, and its first entry at itself.
        let l2Entry = try #require(arena.memory.load64(at: GuestPhysicalAddress(path[1])))
        for k in 0..<UInt64(512) { arena.poke(l0 + k * 8, (l0 + k * 0x1000) | 3) }
        arena.poke(path[1], l0 | 3)
        expectWalkOnly("a table on its own path", .loop)
        arena.poke(path[1], l2Entry)
        for k in 0..<UInt64(512) { arena.poke(l0 + k * 8, (0x8000_0000 + k * 0x1000) | 3) }
        arena.poke(l1, 0x7000_0000 | 3)
        expectWalkOnly("a table outside guest memory", .outsideGuestMemory)
        arena.poke(l1, pointer)
        // A reserved bit (transient mapping) in the first leaf: decoded, not taken.
        arena.poke(l0, try #require(arena.memory.load64(at: GuestPhysicalAddress(l0))) | (1 << 62))
        expectWalkOnly("a malformed first leaf", .reservedBitsSet)

        // A misaligned root.
        #expect(arena.walker(Formats.vtd4, root: b.root.rawValue + 8).invalidationRun(r) == nil)
        #expect(recordRuns(arena.walker(Formats.vtd4, root: b.root.rawValue + 8), r, skipping: false).3?.reason == .misalignedTable)

        // Arm 64K tables are 64 KiB, their pointers' address field 4 KiB-grained: a pointer to
        // the middle of the leaf table sets bits the descriptor reserves, so it is no plain
        // pointer. (48-bit output: the 52-bit layout has no plain-pointer test.)
        let arm = try ArmVMSAv8(stage: .stage1, granule: .size64K, inputBits: 48, outputBits: 48)
        let a = Arena()
        var ab = try a.builder(arm)
        try ab.map(try IOVARange(base: IOVA(0), length: 2 << 20), to: GuestPhysicalAddress(0x4000_0000), permissions: .readWrite,
                   sizes: PageSizeSet([.size64K]))
        #expect(ab.walker().invalidationRun(r) != nil)
        var armPath = [ab.root.rawValue]
        while armPath.count < 3 {
            let raw = try #require(a.memory.load64(at: GuestPhysicalAddress(armPath.last!)))
            guard case .table(let next, _, _) = arm.decode(raw, level: 3 - armPath.count) else { Issue.record("no table"); return }
            armPath.append(next.rawValue)
        }
        a.poke(armPath[1], (armPath[2] + 0x1000) | 3)
        #expect(ab.walker().invalidationRun(r) == nil)
        #expect(recordRuns(ab.walker(), r, skipping: false).3?.reason == .reservedBitsSet)
        checkPathsAgree(ab.walker(), r, "Arm 64K pointer into a table")
    }

    /// A run of stepping entries that crosses the output width: the run stops where the
    /// format's output field (which ends at the width) carries, and each entry past it is its
    /// own fault.
    @Test func runCrossingTheOutputWidth() throws {
        let arena = Arena()
        var b = try arena.builder(Formats.vtd3)  // 39-bit output
        try b.map(IOVA(0), to: GuestPhysicalAddress(0x1000), size: .size4K, permissions: .readWrite)
        let l0 = try #require(findLeafTable(arena, Formats.vtd3, root: b.root.rawValue))
        let top = (UInt64(1) << 39) - 300 * 0x1000
        for i in 0..<512 { arena.poke(l0 + UInt64(i * 8), (top + UInt64(i) * 0x1000) | 3) }
        // The leaves' run, and the repeats of the empty entries above it (511 - 1 per table).
        let fast = checkPathsAgree(b.walker(), .all, "width")
        #expect(fast == 300 + 2 * 510)
        let (faults, leaves) = try walkSkipping(b.walker())
        #expect(leaves.count == 300 && faults.count == 212 && faults.allSatisfy { $0.reason == .outputBeyondWidth })
        #expect(faults.first?.index == 300)
        #expect(recordRuns(b.walker(), .all, skipping: true).0
                == [TranslationRun(input: try IOVARange(base: IOVA(0), length: 300 << 12), output: GuestPhysicalAddress(top),
                                   permissions: .readWrite)])
    }

    /// AMD v1: stepping past output bit 51 carries into reserved bits; an Arm 4K run carries
    /// into bits 49:48; a contiguous Arm run broken in its middle.
    @Test func runsCarryingOutOfTheAddressField() throws {
        let arena = Arena()
        var b = try arena.builder(Formats.amd4)
        try b.map(IOVA(0), to: GuestPhysicalAddress(0x1000), size: .size4K, permissions: .readWrite)
        let l0 = try #require(findLeafTable(arena, Formats.amd4, root: b.root.rawValue))
        let rw: UInt64 = 0x6000_0000_0000_0001
        for i in 0..<512 { arena.poke(l0 + UInt64(i * 8), rw | ((bitField(51, 12) - 99 * 0x1000) &+ UInt64(i) * 0x1000)) }
        #expect(checkPathsAgree(b.walker(), .all, "AMD carry") == 100 + 3 * 510)
        #expect(try walkSkipping(b.walker()).1.count == 100)

        let a = Arena()
        var ab = try a.builder(Formats.arm4K)
        try ab.map(IOVA(0), to: GuestPhysicalAddress(0x1000), size: .size4K, permissions: .read)
        let al0 = try #require(findLeafTable(a, Formats.arm4K, root: ab.root.rawValue))
        let page: UInt64 = 0x0060_0000_0000_0743  // a page, AF, read-only, never executable
        for i in 0..<512 { a.poke(al0 + UInt64(i * 8), page | ((bitField(47, 12) - 9 * 0x1000) &+ UInt64(i) * 0x1000)) }
        #expect(checkPathsAgree(ab.walker(), .all, "Arm carry") == 10 + 3 * 510)
        // Contiguous runs of 16 with per-item outputs, one item off in the middle of run 3.
        let contiguous: UInt64 = 0x0070_0000_0000_0743  // + Contiguous (b52)
        for i in 0..<512 { a.poke(al0 + UInt64(i * 8), contiguous | (0x4000_0000 + UInt64(i) * 0x1000)) }
        #expect(checkPathsAgree(ab.walker(), .all, "Arm contiguous") == 512 + 3 * 510)
        a.poke(al0 + (3 * 16 + 7) * 8, contiguous | 0x7700_0000)
        #expect(checkPathsAgree(ab.walker(), .all, "Arm contiguous, one item off") == 512 - 16 + 3 * 510)
        let (faults, leaves) = try walkSkipping(ab.walker())
        #expect(leaves.count == 31 && faults.map(\.index) == [3 * 16 + 7])
    }

    /// The hostile shared tables of the budget tests (every entry one value): both paths stop
    /// at the same entry with the same statistics, per leaf and as runs.
    @Test func sharedTablesStopAtTheSameBudget() {
        let (arena, root) = sharedTables()
        let t0 = root + 0x3000
        checkPathsAgree(arena.walker(Formats.vtd4, root: root, budget: WalkBudget(maxEntries: 200_000, maxTables: 1 << 20)))
        // Stepping leaves in the shared table: the fast path runs, the budget still bounds it.
        for i in 0..<512 { arena.poke(t0 + UInt64(i * 8), (0x1000 + UInt64(i) * 0x1000) | 3) }
        let w = arena.walker(Formats.vtd4, root: root, budget: WalkBudget(maxEntries: 300_000, maxTables: 1 << 20))
        #expect(checkPathsAgree(w) > 200_000)
        #expect(throws: PageTableFault.self) { try w.walk { _ in } }
        do {
            try w.visitRuns { (_: TranslationRun) throws(Never) -> WalkControl in .continue }
        } catch {
            guard case .fault(let f) = error else { return }
            #expect(f.reason == .budgetExceeded && f.statistics?.entriesRead == 300_000)
        }
    }

    /// The fast path reads each entry at most about twice, however the table breaks its runs.
    @Test func fastPathWorkIsBounded() throws {
        let arena = Arena()
        var b = try arena.builder(Formats.vtd3)
        try b.map(IOVA(0), to: GuestPhysicalAddress(0x1000), size: .size4K, permissions: .readWrite)
        let l0 = try #require(findLeafTable(arena, Formats.vtd3, root: b.root.rawValue))
        var rng = SplitMix64(seed: 77)
        let top = (UInt64(1) << 39) - 200 * 0x1000
        for pattern in 0..<4 {
            for i in 0..<512 {
                let stepping = (top + UInt64(i) * 0x1000) | 3
                let value: UInt64 = switch pattern {
                case 0: stepping                                        // runs into the width
                case 1: i % 2 == 0 ? stepping : 0                       // runs of one
                case 2: rng.next() % 3 == 0 ? stepping ^ 0x800 : stepping  // random reserved bits
                default: (0x1000 + UInt64(i % 7) * 0x1000) | 3         // short runs
                }
                arena.poke(l0 + UInt64(i * 8), value)
            }
            let counting = CountingMemory(arena.memory)
            let w = PageTableWalker(format: Formats.vtd3, memory: counting, root: b.root)
            let stats = try w.walk(skippingFaults: { _ in }) { _ in }
            #expect(counting.counter.loads <= 2 * stats.entriesRead, "pattern \(pattern): \(counting.counter.loads) loads for \(stats)")
            checkPathsAgree(b.walker(), .all, "pattern \(pattern)")
        }
    }

    /// The promise behind ``PageTableFormat/tablePointerTest(level:)``: every entry that passes
    /// the test decodes as that table pointer, and the builder's own table entries pass it.
    @Test(arguments: 0..<allFormats.count)
    func tablePointerTestKeepsItsPromise(_ index: Int) {
        checkTablePointer(allFormats[index])
    }

    func checkTablePointer<F: PageTableFormat>(_ f: F) {
        var rng = SplitMix64(seed: 11)
        #expect(f.tablePointerTest(level: 0) == .none, "\(f): a pointer test at the leaf level")
        guard f.topLevel > 0 else { return }
        for level in 1...f.topLevel {
            let test = f.tablePointerTest(level: level)
            guard test != .none else { continue }
            for _ in 0..<20_000 {
                let raw = (rng.next() & ~test.mask) | test.value
                let expected = DecodedEntry.table(GuestPhysicalAddress(test.table(raw)), nextLevel: level - 1, allows: test.allows)
                let decoded = f.decode(raw, level: level)
                if decoded != expected {
                    Issue.record("\(f) level \(level): \(String(raw, radix: 16)) passes the test but decodes as \(decoded)")
                    break
                }
            }
            // The builder's table entries take the descent.
            let bytes = UInt64(f.tableBytes(level: level - 1))
            for _ in 0..<100 {
                let address = (rng.next() & lowMask(min(f.outputBits, 32))) & ~(bytes - 1)
                let e = f.encodeTable(GuestPhysicalAddress(address), level: level)
                #expect(test.matches(e) && test.table(e) == address, "\(f) level \(level): encodeTable(\(address)) fails the test")
            }
        }
    }

    /// The promise behind ``PageTableFormat/leafRunField(level:)``: a leaf's entry stepped
    /// within the field is the same leaf moved on; the field is contiguous and starts at one item.
    @Test(arguments: 0..<allFormats.count)
    func leafRunFieldKeepsItsPromise(_ index: Int) {
        let broken = brokenFieldPromises(allFormats[index])
        #expect(broken.isEmpty, "\(broken.prefix(3))")
    }

    /// A range is one piece when the table translates all of it within one half of the space.
    @Test func spanRangeIsOnePieceOrNone() throws {
        let x86 = Formats.x86  // 48-bit sign-extended
        #expect(x86.spanRange(of: try IOVARange(base: IOVA(0x1000), length: 0x2000))! == (0x1000, 0x2FFF))
        let upper = try IOVARange(first: IOVA(0xFFFF_8000_0000_0000), last: IOVA(0xFFFF_8000_0000_0FFF))
        #expect(x86.spanRange(of: upper)! == (0x8000_0000_0000, 0x8000_0000_0FFF))
        #expect(x86.spanRange(of: try IOVARange(first: IOVA(0x7FFF_FFFF_F000), last: IOVA(0xFFFF_8000_0000_0FFF))) == nil)
        #expect(x86.spanRange(of: .all) == nil)
        let vtd = Formats.vtd4  // 48 bits from zero
        #expect(vtd.spanRange(of: try IOVARange(first: IOVA(0xFFFF_FFFF_F000), last: IOVA(0x1_0000_0000_0FFF))) == nil)
        #expect(vtd.spanRange(of: try IOVARange(first: IOVA(0), last: IOVA(0xFFFF_FFFF_FFFF)))! == (0, 0xFFFF_FFFF_FFFF))
    }

    /// The check catches a field that reaches past the output width.
    @Test func aFieldPastTheWidthBreaksThePromise() throws {
        let wide = WideFieldVTd(base: try VTdSecondStage(levels: 4, outputBits: 39))
        #expect(!brokenFieldPromises(wide).isEmpty)
    }

    func brokenFieldPromises<F: PageTableFormat>(_ f: F) -> [String] {
        var rng = SplitMix64(seed: 5)
        var broken: [String] = []
        for level in 0...f.topLevel {
            let field = f.leafRunField(level: level)
            let shift = f.itemShift(level: level)
            let stepShift = field.trailingZeroBitCount
            let step = field & (0 &- field)
            if field != 0 && (field >> UInt64(stepShift)) & ((field >> UInt64(stepShift)) &+ 1) != 0 {
                broken.append("\(f) level \(level): field \(String(field, radix: 16)) is not contiguous")
            }
            // Encoded leaves (outputs anywhere, and near the top of the width), and the same with
            // random attribute bits flipped where they still decode as leaves.
            var entries: [UInt64] = []
            for s in PageSizeSet(rawValue: f.leafSizes(level: level)).sizes.map({ Int($0.shift) }) {
                for p in expressible(f) {
                    let width = f.outputBits(leafShift: s)
                    for trial in 0..<8 {
                        let room = UInt64(rng.next() % 700) << UInt64(s)
                        let output = trial % 4 < 3 ? (rng.next() & lowMask(width)) & ~lowMask(s)
                                                   : (lowMask(width) & ~lowMask(s)) &- min(room, lowMask(width) & ~lowMask(s))
                        let e = f.encodeLeaf(output: output, sizeShift: s, level: level, permissions: p, replica: 0)
                        entries.append(trial < 4 ? e : e ^ (rng.next() & rng.next() & rng.next() & ~field))
                    }
                }
            }
            for e in entries {
                guard case .leaf(let leaf) = f.decode(e, level: level) else { continue }
                if leaf.replicasShareOutput && leaf.sizeShift > shift { continue }  // replicated: taken one by one
                guard field != 0 else {
                    broken.append("\(f) level \(level) has leaves but no field")
                    break
                }
                // Steps that stay in the field: the first few, random ones, the last.
                let room = (field &- (e & field)) >> UInt64(stepShift)
                for k in [1, 2, 3, room / 2, room &- 1, room, room == 0 ? 0 : 1 + rng.next() % room] where k >= 1 && k <= room {
                    let expected = DecodedEntry.leaf(DecodedLeaf(output: leaf.output &+ (k << UInt64(shift)),
                                                                 sizeShift: leaf.sizeShift, permissions: leaf.permissions,
                                                                 replicasShareOutput: leaf.replicasShareOutput))
                    let stepped = e &+ k &* step
                    if f.decode(stepped, level: level) != expected {
                        broken.append("\(f) level \(level): \(String(e, radix: 16)) + \(k) steps decodes as \(f.decode(stepped, level: level))")
                        break
                    }
                }
            }
        }
        return broken
    }

    /// Runs are maximal: a dense range of 4K leaves over several tables is one run; a change of
    /// permissions or a gap in the output splits it.
    @Test func runsAreMaximal() throws {
        let arena = Arena()
        var b = try arena.builder(Formats.x86)
        let r = try IOVARange(base: IOVA(0x7F_FFE0_0000), length: 2000 << 12)  // crosses leaf tables and an L2 table
        #expect(try b.map(r, to: GuestPhysicalAddress(0x1_0000_0000), permissions: .readWrite, sizes: PageSizeSet([PageSize.size4K])) == 2000)
        #expect(try b.walker().runs() == [TranslationRun(input: r, output: GuestPhysicalAddress(0x1_0000_0000), permissions: .readWrite)])
        #expect(try b.walker().extents().count == 2000)
        try b.map(IOVA(0x7F_FFE0_0000 + (2000 << 12)), to: GuestPhysicalAddress(0x1_0000_0000 + (2001 << 12)), size: .size4K,
                  permissions: .readWrite)
        try b.map(IOVA(0x7F_FFE0_0000 + (2001 << 12)), to: GuestPhysicalAddress(0x1_0000_0000 + (2002 << 12)), size: .size4K,
                  permissions: .read)
        let runs = try b.walker().runs()
        let coalesced = TranslationRun.coalescing(try b.walker().extents())
        #expect(runs.count == 3 && runs == coalesced)
        // A visitor that stops at the first run.
        var seen = 0
        let stats = try b.walker().visitRuns { (_: TranslationRun) throws(Never) -> WalkControl in seen += 1; return .stop }
        #expect(seen == 1 && stats.leaves >= 2000)
    }
}

@Suite("Builder: ranges mapped a table at a time")
struct BulkMapTests {
    /// The reference: map(range) as it was, one leaf at a time with the largest size that fits.
    func mapLeafByLeaf<F: PageTableFormat>(_ b: inout PageTableBuilder<F, MutableGuestMemoryBuffer, BumpTableAllocator>,
                                           _ range: IOVARange, _ output: UInt64, _ p: Permissions, sizes: UInt64) throws {
        var v = range.first.rawValue
        var o = output
        while true {
            let rest = range.last.rawValue - v
            let s = stride(from: 63, through: 0, by: -1).first { sizes & bit($0) != 0 && v & lowMask($0) == 0 && o & lowMask($0) == 0 && lowMask($0) <= rest }!
            try b.map(IOVA(v), to: GuestPhysicalAddress(o), size: PageSize(shift: s), permissions: p)
            if lowMask(s) == rest { break }
            v &+= bit(s)
            o &+= bit(s)
        }
    }

    @Test(arguments: 0..<allFormats.count)
    func sameTableAsLeafByLeaf(_ index: Int) throws {
        try check(allFormats[index], seed: UInt64(2000 + index))
    }

    func check<F: PageTableFormat>(_ f: F, seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let small = Int(f.allLeafSizes.smallest!.shift)
        for round in 0..<6 {
            let sizes = round % 2 == 0 ? f.allLeafSizes.rawValue : bit(small)
            let (low, _) = f.inputRangePair
            let count = UInt64(1 + rng.next() % 1500)
            let input = low.first.rawValue &+ ((rng.next() % 4096) << UInt64(small))
            let output = ((rng.next() % 4096) &+ 1) << UInt64(small)
            let range = try IOVARange(base: IOVA(input), length: count << UInt64(small))
            let p = expressible(f)[Int(rng.next() % UInt64(expressible(f).count))]
            let a1 = Arena(bytes: 8 << 20)
            let a2 = Arena(bytes: 8 << 20)
            var b1 = try a1.builder(f)
            var b2 = try a2.builder(f)
            let n = try b1.map(range, to: GuestPhysicalAddress(output), permissions: p, sizes: PageSizeSet(rawValue: sizes))
            try mapLeafByLeaf(&b2, range, output, p, sizes: sizes)
            #expect(n == (try b2.walker().extents().count))
            #expect(a1.bytesEqual(a2), "\(f) round \(round): the tables differ")
            // Mapping over it fails naming the first leaf in the way, and leaves nothing behind.
            let before = try b1.walker().extents()
            let wider = try IOVARange(first: IOVA(input &- (UInt64(3) << UInt64(small))), last: range.last)
            if f.spanAddress(of: wider.first) != nil, input >= UInt64(3) << UInt64(small) {
                #expect(throws: PageTableBuildError.alreadyMapped(IOVA(input))) {
                    try b1.map(wider, to: GuestPhysicalAddress(output &+ (1 << 30)), permissions: p, sizes: PageSizeSet(rawValue: bit(small)))
                }
                #expect(try b1.walker().extents() == before)
            }
        }
    }
}

extension Arena {
    func bytesEqual(_ other: Arena) -> Bool {
        buffer.count == other.buffer.count && memcmp(buffer.baseAddress!, other.buffer.baseAddress!, buffer.count) == 0
    }
}

/// Counts every load (a class, since loads do not mutate).
final class LoadCounter { var loads = 0 }

/// Guest memory that counts loads and offers no bytes in place.
struct CountingMemory<M: GuestMemory>: GuestMemory {
    let base: M
    let counter = LoadCounter()
    init(_ base: M) { self.base = base }
    func load32(at address: GuestPhysicalAddress) -> UInt32? { counter.loads += 1; return base.load32(at: address) }
    func load64(at address: GuestPhysicalAddress) -> UInt64? { counter.loads += 1; return base.load64(at: address) }
    func contains(_ range: GuestPhysicalRange) -> Bool { base.contains(range) }
}

/// VT-d with a run field that reaches past the width (a broken description, for the check).
struct WideFieldVTd: PageTableFormat {
    var base: VTdSecondStage
    var topLevel: Int { base.topLevel }
    var entryBytes: Int { base.entryBytes }
    var outputBits: Int { base.outputBits }
    var inputExtension: InputExtension { base.inputExtension }
    func itemShift(level: Int) -> Int { base.itemShift(level: level) }
    func indexBits(level: Int) -> Int { base.indexBits(level: level) }
    func decode(_ entry: UInt64, level: Int) -> DecodedEntry { base.decode(entry, level: level) }
    func leafSizes(level: Int) -> UInt64 { base.leafSizes(level: level) }
    func canExpress(_ permissions: Permissions) -> Bool { base.canExpress(permissions) }
    func encodeLeaf(output: UInt64, sizeShift: Int, level: Int, permissions: Permissions, replica: Int) -> UInt64 {
        base.encodeLeaf(output: output, sizeShift: sizeShift, level: level, permissions: permissions, replica: replica)
    }
    func encodeTable(_ table: GuestPhysicalAddress, level: Int) -> UInt64 { base.encodeTable(table, level: level) }
    func leafRunField(level: Int) -> UInt64 { base.leafRunField(level: level) | (level <= 2 ? bitField(51, 39) : 0) }
}
