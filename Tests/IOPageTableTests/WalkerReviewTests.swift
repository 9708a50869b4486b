import IOPageTables
import Testing

/// Walks `walker` skipping faults: the faults and leaves in the order the walk reported them.
func walkSkipping<F: PageTableFormat, M: GuestMemory>(_ walker: PageTableWalker<F, M>) throws -> ([PageTableFault], [LeafExtent]) {
    var faults: [PageTableFault] = []
    var leaves: [LeafExtent] = []
    try walker.walk(skippingFaults: { faults.append($0) }) { leaves.append($0) }
    return (faults, leaves)
}

/// Regressions from the walker review against an independent model of the formats: each
/// failed before its fix.
@Suite("Walker review: runs, loops, table bounds, fault inputs, budgets, visitors")
struct WalkerReviewTests {
    static let amdRW: UInt64 = 0x6000_0000_0000_0001

    // MARK: 1. Malformed runs fault on the bad entry and keep the good ones

    /// AMD v1: entries 1 and 3 are 4K leaves, entry 2 a lone NextLevel=7 64K leaf. Entry 2 is
    /// the bad one (its 15 replicas are missing); entries 1 and 3 are walked as themselves.
    @Test func amdLoneReplicatedLeafFaultsAloneAndKeepsItsNeighbours() throws {
        let arena = Arena()
        let root = arena.base.rawValue
        let t = root + 0x1000
        arena.poke(root, Self.amdRW | t | 1 << 9)  // level 4 straight to level 1
        arena.poke(t + 8, Self.amdRW | 0x9000_0000)
        arena.poke(t + 16, 0x6000_0000_9000_7E01)
        arena.poke(t + 24, Self.amdRW | 0x9100_0000)
        let w = arena.walker(Formats.amd4, root: root)
        let bad = PageTableFault(reason: .inconsistentContiguousRun, level: 0, table: GuestPhysicalAddress(t), index: 2,
                                 entry: 0x6000_0000_9000_7E01, input: IOVA(0x2000))
        var before: [LeafExtent] = []
        #expect(throws: bad) { try w.walk { before.append($0) } }
        #expect(before == [extent(0x1000, 0x9000_0000, 12, .readWrite, level: 0)])
        let (faults, leaves) = try walkSkipping(w)
        #expect(faults == [bad])
        #expect(leaves == [extent(0x1000, 0x9000_0000, 12, .readWrite, level: 0), extent(0x3000, 0x9100_0000, 12, .readWrite, level: 0)])
    }

    /// Arm: 16 plain 4K pages where page 7 alone carries the contiguous hint. Page 7 is bad;
    /// the other 15 are well formed and walked.
    @Test func armLoneContiguousHintFaultsAlone() throws {
        let arena = Arena()
        var b = try arena.builder(Formats.arm4K)
        try b.map(IOVA(0), to: GuestPhysicalAddress(0x10_0000), size: .size4K, permissions: .read)
        let l0 = try #require(findLeafTable(arena, Formats.arm4K, root: b.root.rawValue))
        for i in 0..<16 { arena.poke(l0 + UInt64(i * 8), 0x0000_0000_0001_0743 &+ UInt64(i) << 12) }
        let hinted: UInt64 = 0x0010_0000_0001_7743
        arena.poke(l0 + 7 * 8, hinted)
        let (faults, leaves) = try walkSkipping(b.walker())
        #expect(faults == [PageTableFault(reason: .inconsistentContiguousRun, level: 0, table: GuestPhysicalAddress(l0), index: 7,
                                          entry: hinted, input: IOVA(0x7000))])
        #expect(leaves.map(\.input.first.rawValue) == (0..<16).filter { $0 != 7 }.map { UInt64($0) << 12 })
    }

    /// Arm: a 16-entry run with one member pointing elsewhere. The run yields nothing (fail
    /// closed), the fault names member 5, and the page after the run is still walked.
    @Test func armRunWithOneBadMemberFailsClosedForTheRunOnly() throws {
        let arena = Arena()
        var b = try arena.builder(Formats.arm4K)
        try b.map(IOVA(0x1_0000), to: GuestPhysicalAddress(0x40_0000), size: .size4K, permissions: .read)
        let l0 = try #require(findLeafTable(arena, Formats.arm4K, root: b.root.rawValue))
        for i in 0..<16 { arena.poke(l0 + UInt64(i * 8), 0x0010_0000_0001_0743 &+ UInt64(i) << 12) }
        arena.poke(l0 + 5 * 8, 0x0010_0000_0009_0743)
        let (faults, leaves) = try walkSkipping(b.walker())
        #expect(faults == [PageTableFault(reason: .inconsistentContiguousRun, level: 0, table: GuestPhysicalAddress(l0), index: 5,
                                          entry: 0x0010_0000_0009_0743, input: IOVA(0x5000))])
        #expect(leaves == [extent(0x1_0000, 0x40_0000, 12, .read, level: 0)])
    }

    /// A slot the walk already passed is still named when most of the span holds the run
    /// (v7s: the first of 16 large-page replicas missing), and a minority claim met first is
    /// named once, not again by the majority after it (Arm).
    @Test func badSlotsBeforeTheRunsFirstMemberAreNamedOnce() throws {
        let v = Arena()
        var vb = try v.builder(Formats.v7s)
        try vb.map(IOVA(0x1_0000), to: GuestPhysicalAddress(0x5_0000), size: .size64K, permissions: .read)
        let l2 = try #require(findLeafTable(v, Formats.v7s, root: vb.root.rawValue))
        v.poke(l2 + 16 * 4, 0, bytes: 4)
        let (vFaults, vLeaves) = try walkSkipping(vb.walker())
        #expect(vFaults == [PageTableFault(reason: .inconsistentContiguousRun, level: 0, table: GuestPhysicalAddress(l2), index: 16,
                                           entry: 0, input: IOVA(0x1_0000))])
        #expect(vLeaves.isEmpty)

        let arena = Arena()
        var b = try arena.builder(Formats.arm4K)
        try b.map(IOVA(0), to: GuestPhysicalAddress(0x10_0000), size: .size4K, permissions: .read)
        let l0 = try #require(findLeafTable(arena, Formats.arm4K, root: b.root.rawValue))
        for i in 0..<16 { arena.poke(l0 + UInt64(i * 8), 0x0010_0000_0001_0743 &+ UInt64(i) << 12) }
        arena.poke(l0, 0x0010_0000_0077_0743)  // slot 0 claims a run at 0x77_0000
        arena.poke(l0 + 16 * 8, 0x0000_0000_0020_0743)  // a plain page after the span
        let (faults, leaves) = try walkSkipping(b.walker())
        #expect(faults == [PageTableFault(reason: .inconsistentContiguousRun, level: 0, table: GuestPhysicalAddress(l0), index: 0,
                                          entry: 0x0010_0000_0077_0743, input: IOVA(0))])
        #expect(leaves == [extent(0x1_0000, 0x20_0000, 12, .all, level: 0)])
    }

    /// RISC-V Svnapot: a lone NAPOT entry among 4K pages is bad alone.
    @Test func riscvLoneNapotEntryFaultsAlone() throws {
        let arena = Arena()
        var b = try arena.builder(Formats.sv39)
        try b.map(IOVA(0), to: GuestPhysicalAddress(0x10_0000), size: .size4K, permissions: .readWrite)
        let l0 = try #require(findLeafTable(arena, Formats.sv39, root: b.root.rawValue))
        let page: UInt64 = 0xC7 | 0x1  // V R W A D
        for i in 0..<16 { arena.poke(l0 + UInt64(i * 8), page | (0x200 + UInt64(i)) << 10) }
        let napot: UInt64 = 1 << 63 | page | 0x208 << 10
        arena.poke(l0 + 9 * 8, napot)
        let (faults, leaves) = try walkSkipping(b.walker())
        #expect(faults == [PageTableFault(reason: .inconsistentContiguousRun, level: 0, table: GuestPhysicalAddress(l0), index: 9,
                                          entry: napot, input: IOVA(0x9000))])
        #expect(leaves.count == 15)
        #expect(!leaves.contains { $0.input.contains(IOVA(0x9000)) })
    }

    // MARK: 5. Loops are found by byte range

    /// A v7s L1 entry pointing 1 KiB into its own (16 KiB) table would read the root's
    /// entries 256... as L2 entries.
    @Test func v7sTablePointerIntoTheRootIsALoop() {
        let arena = Arena()
        let root = arena.base.rawValue
        arena.poke(root, (root + 0x400) | 1, bytes: 4)
        arena.poke(root + 0x404, 0x1000_0000 | 1 << 10 | 2, bytes: 4)  // root entry 257, a section
        #expect(throws: PageTableFault(reason: .loop, level: 1, table: arena.base, index: 0, entry: (root + 0x400) | 1, input: IOVA(0))) {
            try arena.walker(Formats.v7s, root: root).walk { _ in }
        }
    }

    /// A RISC-V G-stage root is 16 KiB: a 4 KiB child at root + 0x1000 is inside it.
    @Test func riscvGStageChildInsideTheRootIsALoop() throws {
        let arena = Arena()
        let root = arena.base.rawValue
        let pointer = ((root + 0x1000) >> 12) << 10 | 1
        arena.poke(root, pointer)
        arena.poke(root + 0x1008, (0x4000_0000 >> 12) << 10 | 0xD7)  // root entry 513, a leaf as a child entry
        let (faults, leaves) = try walkSkipping(arena.walker(Formats.sv48x4, root: root))
        #expect(faults.first == PageTableFault(reason: .loop, level: 3, table: arena.base, index: 0, entry: pointer, input: IOVA(0)))
        #expect(!leaves.contains { $0.level == 2 })
    }

    /// Sharing a table between siblings (not on one path) is no loop.
    @Test func siblingsMayShareATable() throws {
        let arena = Arena()
        let root = arena.base.rawValue
        let t = root + 0x1000
        arena.poke(root, t | 3)
        arena.poke(root + 8, t | 3)
        arena.poke(t, 0x4000_0000 | 0x83)  // a 1G leaf
        #expect(try arena.walker(Formats.vtd4, root: root).extents().map(\.input.first.rawValue) == [0, 0x80_0000_0000])
    }

    // MARK: 6. A table partly outside guest memory is refused whole

    @Test func tablePartlyOutsideGuestMemoryIsRefusedWhole() throws {
        let arena = Arena(bytes: 0x2000)
        let root = arena.base.rawValue
        let half = root + 0x1000
        arena.poke(root, half | 3)
        arena.poke(half, 0x20_0000 | 0x83)  // a 2M leaf in the readable half
        let region = try GuestMemoryRegion(base: arena.base, pointer: UnsafeRawPointer(arena.buffer.baseAddress!), length: 0x1800)
        let view = try GuestMemoryView(regions: [region])
        let w = PageTableWalker(format: Formats.vtd3, memory: view, root: arena.base)
        let refused = PageTableFault(reason: .outsideGuestMemory, level: 1, table: GuestPhysicalAddress(half), index: 0, entry: 0,
                                     input: IOVA(0))
        var leaves = 0
        #expect(throws: refused) { try w.walk { _ in leaves += 1 } }
        #expect(leaves == 0)
        let (faults, skipped) = try walkSkipping(w)
        #expect(faults == [refused])
        #expect(skipped.isEmpty)
        // The protocol's default answer (probing each word) agrees with the view's.
        let probe = try GuestPhysicalRange(base: GuestPhysicalAddress(half), length: 0x1000)
        #expect(!view.contains(probe) && !WordMemory(view).contains(probe))
        #expect(view.contains(try GuestPhysicalRange(base: arena.base, length: 0x1800)))
        #expect(WordMemory(view).contains(try GuestPhysicalRange(base: arena.base, length: 0x1800)))
        #expect(!WordMemory(view).contains(try GuestPhysicalRange(base: arena.base, length: 0x1801)))
    }

    // MARK: 7. Faults carry their input address

    @Test func faultsNameTheirInputAddress() throws {
        let arena = Arena()
        var b = try arena.builder(Formats.x86)
        try b.map(IOVA(0xFFFF_8000_0000_0000), to: GuestPhysicalAddress(0x1000), size: .size4K, permissions: .read)
        let l0 = try #require(findLeafTable(arena, Formats.x86, root: b.root.rawValue, index: 256))
        let narrow = try X86FirstStage(levels: 4, outputBits: 40)
        arena.poke(l0 + 0x1FF * 8, 0x0000_0100_0000_1001)  // bit 40: beyond a 40-bit width
        let w = arena.walker(narrow, root: b.root.rawValue)
        let fault = try #require(walkSkipping(w).0.first)
        #expect(fault == PageTableFault(reason: .outputBeyondWidth, level: 0, table: GuestPhysicalAddress(l0), index: 0x1FF,
                                        entry: 0x0000_0100_0000_1001, input: IOVA(0xFFFF_8000_001F_F000)))
        #expect(fault.description.contains("0xffff8000001ff000"))
        #expect(throws: fault) { try w.translate(IOVA(0xFFFF_8000_001F_F123)) }
        // Builder errors carry it too.
        var nb = PageTableBuilder(format: narrow, memory: arena.memory, allocator: arena.allocator, root: b.root)
        #expect(throws: PageTableBuildError.tableFault(fault)) {
            try nb.map(IOVA(0xFFFF_8000_001F_F000), to: GuestPhysicalAddress(0x2000), size: .size4K, permissions: .read)
        }
    }

    // MARK: 8 and 9. Budgets

    @Test func budgetStopCarriesTheStatistics() throws {
        let (arena, root) = sharedTables()
        var visited = 0
        do {
            try arena.walker(Formats.vtd4, root: root, budget: WalkBudget(maxEntries: 10_000, maxTables: 1 << 20)).walk { _ in visited += 1 }
            Issue.record("the budget did not stop the walk")
        } catch {
            let stats = try #require(error.statistics)
            #expect(error.reason == .budgetExceeded)
            #expect(stats.entriesRead == 10_000)
            #expect(stats.leaves == visited && visited > 9_000)
            #expect(stats.tablesVisited > 3)
            #expect(error.description.contains("10000 entries"))
        }
        // The table budget too, and a skipping walk.
        do {
            try arena.walker(Formats.vtd4, root: root, budget: WalkBudget(maxEntries: .max, maxTables: 50))
                .walk(skippingFaults: { _ in }) { _ in }
            Issue.record("the budget did not stop the walk")
        } catch {
            #expect(error.statistics?.tablesVisited == 50)
        }
        // Other faults carry none.
        arena.poke(root, 0x1083)
        #expect(throws: PageTableFault(reason: .reservedBitsSet, level: 3, table: arena.base, index: 0, entry: 0x1083, input: IOVA(0))) {
            try arena.walker(Formats.vtd4, root: root).walk { _ in }
        }
    }

    /// The default budget: a hostile table gets at most 8 Mi entry reads (so at most that many
    /// leaf visits) out of a whole-space walk, while a legitimate table of 31 GiB of 4K leaves
    /// still fits (the reads 1 GiB of them costs, 31 times).
    @Test func defaultBudgetBoundsAHostileWalk() throws {
        #expect(WalkBudget.default == WalkBudget(maxEntries: 1 << 23, maxTables: 1 << 14))
        let (arena, root) = sharedTables()
        var leaves = 0
        do {
            try arena.walker(Formats.vtd4, root: root).walk { _ in leaves += 1 }
            Issue.record("the default budget did not stop a walk of 2^27 leaves")
        } catch {
            #expect(error.reason == .budgetExceeded)
            let stats = try #require(error.statistics)
            #expect(stats.entriesRead <= 1 << 23 && stats.tablesVisited <= 1 << 14)
            #expect(stats.leaves == leaves)
        }
        #expect(leaves > 0 && leaves <= 1 << 23)
        // 1 GiB of 4K leaves below a 4-level root: root + 1 L3 entry + 512 L2 + 512 * 512 L1 reads.
        let gib = try arena.walker(Formats.vtd4, root: root).walk(try IOVARange(base: IOVA(0), length: 1 << 30)) { _ in }
        #expect(gib.leaves == 512 * 512)
        #expect(31 * (gib.entriesRead - 1) + 1 <= WalkBudget.default.maxEntries)
        #expect(31 * (gib.tablesVisited - 2) + 2 <= WalkBudget.default.maxTables)
        // The previous default let the same walk visit up to 64 Mi leaves.
        #expect(WalkBudget.default.maxEntries * 8 == 1 << 26)
    }

    /// The builder's own walks (unmap, the empty-subtree check) use its `walkBudget`, which a
    /// caller can raise past the default.
    @Test func builderWalksUseItsBudget() throws {
        let arena = Arena()
        var b = try arena.builder(Formats.vtd4)
        let r = try IOVARange(base: IOVA(0), length: 64 << 12)
        try b.map(r, to: GuestPhysicalAddress(0x10_0000), permissions: .read)
        b.walkBudget = WalkBudget(maxEntries: 32, maxTables: 10)
        #expect(b.walker().budget == b.walkBudget)
        do {
            try b.unmap(r)
            Issue.record("unmap ignored the builder's budget")
        } catch {
            guard case .tableFault(let f) = error else { Issue.record("\(error)"); return }
            #expect(f.reason == .budgetExceeded)
        }
        #expect(try b.walker(budget: .default).extents().count == 64)  // nothing was removed
        b.walkBudget = WalkBudget(maxEntries: 100, maxTables: 10)
        #expect(try b.unmap(r) == 64 << 12)
    }

    // MARK: 10a. Visitors that throw or stop

    struct Enough: Error, Hashable { var after: Int }

    @Test func visitorStopsEarly() throws {
        let (arena, root) = sharedTables()
        var seen: [LeafExtent] = []
        let stats = try arena.walker(Formats.vtd4, root: root).visitLeaves { leaf in
            seen.append(leaf)
            return seen.count == 3 ? .stop : .continue
        }
        #expect(stats.leaves == 3 && seen.map(\.input.first.rawValue) == [0, 0x1000, 0x2000])
        // A skipping walk's fault handler can stop it too.
        arena.poke(root + 0x3000 + 8, 0x1803)  // leaf entry 1: SNP without snoop control, reserved
        var faults = 0
        let s2 = try arena.walker(Formats.vtd4, root: root).visitLeaves(skippingFaults: { _ in faults += 1; return .stop }) { _ in .continue }
        #expect(faults == 1 && s2.faultsSkipped == 1 && s2.leaves == 1)
    }

    @Test func visitorErrorsAreTypedAndRethrown() throws {
        let (arena, root) = sharedTables()
        let w = arena.walker(Formats.vtd4, root: root, budget: WalkBudget(maxEntries: 5_000, maxTables: 100))
        var count = 0
        #expect(throws: PageTableWalkError<Enough>.visitor(Enough(after: 5))) {
            try w.visitLeaves { (_: LeafExtent) throws(Enough) -> WalkControl in
                count += 1
                if count == 5 { throw Enough(after: count) }
                return .continue
            }
        }
        do {
            _ = try w.visitLeaves { (_: LeafExtent) throws(Enough) -> WalkControl in .continue }
            Issue.record("the budget did not stop the walk")
        } catch {
            // `error` is PageTableWalkError<Enough>: the fault is one case, the visitor's error the other.
            guard case .fault(let f) = error else { Issue.record("expected a fault, got \(error)"); return }
            #expect(f.reason == .budgetExceeded)
        }
    }
}

/// A guest memory that only knows words: uses the protocol's default `contains`.
struct WordMemory<M: GuestMemory>: GuestMemory {
    let base: M
    init(_ base: M) { self.base = base }
    func load32(at address: GuestPhysicalAddress) -> UInt32? { base.load32(at: address) }
    func load64(at address: GuestPhysicalAddress) -> UInt64? { base.load64(at: address) }
}

/// The address of the leaf-most table holding input `index << topShift` (following entry
/// `index` at the root and entry 0 below).
func findLeafTable<F: PageTableFormat>(_ arena: Arena, _ f: F, root: UInt64, index: Int) -> UInt64? {
    let raw = arena.memory.load64(at: GuestPhysicalAddress(root + UInt64(index * 8)))
    guard let raw, case .table(let next, let nl, _) = f.decode(raw, level: f.topLevel) else { return nil }
    var table = next.rawValue
    var level = nl
    while level > 0 {
        guard let e = arena.memory.load64(at: GuestPhysicalAddress(table)), case .table(let n, let l, _) = f.decode(e, level: level) else { return nil }
        table = n.rawValue
        level = l
    }
    return table
}
