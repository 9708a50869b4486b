import IOPageTables
import Testing

/// Tables written by hand the way a hostile or buggy guest might.
@Suite("Hostile tables: a typed fault for each kind, bounded work")
struct HostileTableTests {
    let rw: UInt64 = 0x3  // VT-d R|W

    func vtdFault(_ arena: Arena, root: UInt64, budget: WalkBudget = .default) -> PageTableFault? {
        do { try arena.walker(Formats.vtd4, root: root, budget: budget).walk { _ in }; return nil } catch { return error }
    }

    @Test func tableOutsideGuestMemory() {
        let arena = Arena()
        let root = arena.base.rawValue
        arena.poke(root + 8, 0x7000_0000_0000 | rw)
        #expect(vtdFault(arena, root: root) == PageTableFault(reason: .outsideGuestMemory, level: 2,
                                                              table: GuestPhysicalAddress(0x7000_0000_0000), index: 0, entry: 0, input: IOVA(0x80_0000_0000)))
        // A root outside memory faults at the root.
        #expect(vtdFault(arena, root: 0x9000_0000)?.reason == .outsideGuestMemory)
    }

    @Test func loops() {
        let arena = Arena()
        let root = arena.base.rawValue
        // A table pointing at itself.
        arena.poke(root, root | rw)
        #expect(vtdFault(arena, root: root) == PageTableFault(reason: .loop, level: 3, table: GuestPhysicalAddress(root), index: 0, entry: root | rw, input: IOVA(0)))
        // A grandchild pointing back at the root.
        let t1 = root + 0x1000
        arena.poke(root, t1 | rw)
        arena.poke(t1 + 16, root | rw)
        #expect(vtdFault(arena, root: root) == PageTableFault(reason: .loop, level: 2, table: GuestPhysicalAddress(t1), index: 2, entry: root | rw, input: IOVA(0x8000_0000)))
    }

    @Test func hugeNumberOfEntriesIsBounded() throws {
        // Every entry of every level points at the next table: 512^3 leaves through 3 shared tables.
        let arena = Arena()
        let root = arena.base.rawValue
        let (t2, t1, t0) = (root + 0x1000, root + 0x2000, root + 0x3000)
        for i in 0..<512 {
            let o = UInt64(i * 8)
            arena.poke(root + o, t2 | rw)
            arena.poke(t2 + o, t1 | rw)
            arena.poke(t1 + o, t0 | rw)
            arena.poke(t0 + o, 0x1000 | rw)
        }
        let budget = WalkBudget(maxEntries: 200_000, maxTables: 1 << 20)
        #expect(vtdFault(arena, root: root, budget: budget)?.reason == .budgetExceeded)
        // The table budget bounds it too, and skipping faults does not skip the budget.
        let tables = WalkBudget(maxEntries: .max, maxTables: 100)
        #expect(throws: PageTableFault.self) {
            try arena.walker(Formats.vtd4, root: root, budget: tables).walk(skippingFaults: { _ in }) { _ in }
        }
        var leaves = 0
        let stats = try arena.walker(Formats.vtd4, root: root, budget: WalkBudget(maxEntries: 300_000, maxTables: 1000))
            .walk(try IOVARange(base: IOVA(0), length: 1 << 30)) { _ in leaves += 1 }
        #expect(leaves == 512 * 512 && stats.leaves == leaves)
    }

    @Test func reservedBitsAndOutputWidth() {
        let arena = Arena()
        let root = arena.base.rawValue
        arena.poke(root, 0x0000_0000_0000_1083 | rw)  // PS in a PML4E
        #expect(vtdFault(arena, root: root) == PageTableFault(reason: .reservedBitsSet, level: 3, table: GuestPhysicalAddress(root),
                                                              index: 0, entry: 0x1083, input: IOVA(0)))
        arena.poke(root, 0x0001_0000_0000_0003)  // a table past HAW 48
        #expect(vtdFault(arena, root: root)?.reason == .outputBeyondWidth)
    }

    @Test func misalignedTables() {
        let arena = Arena()
        #expect(vtdFault(arena, root: arena.base.rawValue + 8)?.reason == .misalignedTable)
        // A concatenated stage-2 root must be aligned to its 8 KiB.
        let s2 = arena.walker(Formats.arm4KS2, root: arena.base.rawValue + 0x1000)
        #expect(throws: PageTableFault.self) { try s2.walk { _ in } }
        // v7s L1 tables are 16 KiB; RISC-V x4 roots 16 KiB.
        #expect(throws: PageTableFault.self) { try arena.walker(Formats.v7s, root: arena.base.rawValue + 0x1000).walk { _ in } }
        #expect(throws: PageTableFault.self) { try arena.walker(Formats.sv48x4, root: arena.base.rawValue + 0x2000).walk { _ in } }
        // A 64K-granule table pointer with bits 15:12 set (no LPA): reserved.
        let f = try! ArmVMSAv8(stage: .stage1, granule: .size64K, inputBits: 42, outputBits: 48)
        arena.poke(arena.base.rawValue, 0x20_1003)
        #expect(throws: PageTableFault(reason: .reservedBitsSet, level: 1, table: arena.base, index: 0, entry: 0x20_1003, input: IOVA(0))) {
            try arena.walker(f, root: arena.base.rawValue).walk { _ in }
        }
    }

    @Test func misalignedAndInconsistentContiguousRuns() throws {
        let arena = Arena()
        var b = try arena.builder(Formats.arm4K)
        try b.map(IOVA(0), to: GuestPhysicalAddress(0x10_0000), size: .size4K, permissions: .read)
        // Find the last-level table and fill a 16-entry run whose base output is not 64K-aligned.
        let l0 = try #require(findLeafTable(arena, Formats.arm4K, root: b.root.rawValue))
        for i in 0..<16 { arena.poke(l0 + UInt64(i * 8), 0x0010_0000_0000_1743 &+ UInt64(i) << 12) }
        #expect(throws: PageTableFault(reason: .misalignedOutput, level: 0, table: GuestPhysicalAddress(l0), index: 0,
                                       entry: 0x0010_0000_0000_1743, input: IOVA(0))) { try b.walker().walk { _ in } }
        // An aligned run with one item pointing elsewhere.
        for i in 0..<16 { arena.poke(l0 + UInt64(i * 8), 0x0010_0000_0001_0743 &+ UInt64(i) << 12) }
        #expect(try b.walker().extents().count == 1)
        arena.poke(l0 + 5 * 8, 0x0010_0000_0009_0743)
        #expect(throws: PageTableFault(reason: .inconsistentContiguousRun, level: 0, table: GuestPhysicalAddress(l0), index: 5,
                                       entry: 0x0010_0000_0009_0743, input: IOVA(0x5000))) { try b.walker().walk { _ in } }
        // v7s large page written 15 times instead of 16.
        let v = Arena()
        var vb = try v.builder(Formats.v7s)
        try vb.map(IOVA(0x1_0000), to: GuestPhysicalAddress(0x5_0000), size: .size64K, permissions: .read)
        let l2 = try #require(findLeafTable(v, Formats.v7s, root: vb.root.rawValue))
        v.poke(l2 + 31 * 4, 0, bytes: 4)
        #expect(throws: PageTableFault(reason: .inconsistentContiguousRun, level: 0, table: GuestPhysicalAddress(l2), index: 31, entry: 0, input: IOVA(0x1_F000))) {
            try vb.walker().walk { _ in }
        }
    }

    @Test func amdNextLevelAndLevelSkipping() throws {
        let arena = Arena()
        let root = arena.base.rawValue
        let t = root + 0x1000
        let rwAMD: UInt64 = 0x6000_0000_0000_0001
        // Level 4 PDE naming level 1 directly (levels 3 and 2 skipped).
        arena.poke(root, rwAMD | t | 1 << 9)
        arena.poke(t + 5 * 8, rwAMD | 0xABC_D000)
        let w = arena.walker(Formats.amd4, root: root)
        #expect(try w.extents() == [extent(0x5000, 0xABC_D000, 12, .readWrite, level: 0)])
        // Skipped input bits must be zero: nothing is mapped at 0x20_5000.
        #expect(try w.translate(IOVA(0x20_5000)) == nil)
        // A PDE naming a level that is not below its own.
        let t2 = root + 0x2000
        arena.poke(t2, rwAMD | t | 3 << 9)
        arena.poke(root, rwAMD | t2 | 2 << 9)  // now level 4 -> level 2 table
        #expect(throws: PageTableFault(reason: .invalidNextLevel, level: 1, table: GuestPhysicalAddress(t2), index: 0,
                                       entry: rwAMD | t | 3 << 9, input: IOVA(0))) { try w.walk { _ in } }
    }

    @Test func blocksWhereNoneAllowedAndBadEncodings() {
        let arena = Arena()
        let root = arena.base.rawValue
        arena.poke(root, 0x401)  // a level-0 block in a 4K, 48-bit-output table
        #expect(throws: PageTableFault(reason: .leafNotAllowedAtLevel, level: 3, table: arena.base, index: 0, entry: 0x401, input: IOVA(0))) {
            try arena.walker(Formats.arm4K, root: root).walk { _ in }
        }
        arena.poke(root, 0x6000_0000_0000_0001)  // a leaf in the AMD 6-level root
        #expect(throws: PageTableFault.self) { try arena.walker(Formats.amd6, root: root).walk { _ in } }
        arena.poke(root, 0x8000_0000_048D_104B)  // bad Svnapot encoding in an Sv39 root (level 2)
        #expect(throws: PageTableFault(reason: .invalidPageSizeEncoding, level: 2, table: arena.base, index: 0, entry: 0x8000_0000_048D_104B, input: IOVA(0))) {
            try arena.walker(Formats.sv39, root: root).walk { _ in }
        }
    }

    @Test func nonCanonicalInput() {
        let arena = Arena()
        #expect(throws: PageTableFault(reason: .inputOutsideSpace, level: 3, table: arena.base, index: 0, entry: 0x0000_8000_0000_1000, input: IOVA(0x0000_8000_0000_1000))) {
            try arena.walker(Formats.x86, root: arena.base.rawValue).translate(IOVA(0x0000_8000_0000_1000))
        }
        #expect(throws: PageTableFault.self) {
            try arena.walker(Formats.vtd3, root: arena.base.rawValue).translate(IOVA(1 << 39))
        }
    }

    @Test func skippingFaultsContinuesTheWalk() throws {
        let arena = Arena()
        var b = try arena.builder(Formats.vtd4)
        try b.map(IOVA(0x80_0000_0000), to: GuestPhysicalAddress(0x1000), size: .size4K, permissions: .read)
        arena.poke(arena.base.rawValue, 0x1083)  // root entry 0: reserved PS
        var faults: [PageTableFault] = []
        var leaves: [LeafExtent] = []
        let stats = try b.walker().walk(skippingFaults: { faults.append($0) }) { leaves.append($0) }
        #expect(faults.map(\.reason) == [.reservedBitsSet])
        #expect(leaves == [extent(0x80_0000_0000, 0x1000, 12, .read, level: 0)])
        #expect(stats.faultsSkipped == 1)
    }

    @Test func hierarchicalPermissions() throws {
        // x86: a table without R/W makes the leaf below read-only; XD on a table removes execute.
        let arena = Arena()
        var b = try arena.builder(Formats.x86)
        try b.map(IOVA(0x1000), to: GuestPhysicalAddress(0x2000), size: .size4K, permissions: [.read, .write, .user, .execute])
        let rootEntry = arena.memory.load64(at: arena.base)!
        arena.poke(arena.base.rawValue, (rootEntry & ~0x2) | 1 << 63)
        #expect(try b.walker().extents().map(\.permissions) == [[.read, .user]])
        // Arm: APTable[1] (read-only) and APTable[0] (no EL0) on a table.
        let a = Arena()
        var ab = try a.builder(Formats.arm4K)
        try ab.map(IOVA(0x1000), to: GuestPhysicalAddress(0x2000), size: .size4K, permissions: [.read, .write, .user])
        a.poke(a.base.rawValue, a.memory.load64(at: a.base)! | 3 << 61)
        #expect(try ab.walker().extents().map(\.permissions) == [.read])
        let hpd = try ArmVMSAv8(stage: .stage1, hierarchicalPermissions: false)
        #expect(try a.walker(hpd, root: ab.root.rawValue).extents().map(\.permissions) == [[.read, .write, .user]])
        // VT-d second stage ANDs R/W.
        let v = Arena()
        var vb = try v.builder(Formats.vtd4)
        try vb.map(IOVA(0x1000), to: GuestPhysicalAddress(0x2000), size: .size4K, permissions: .readWrite)
        v.poke(v.base.rawValue, v.memory.load64(at: v.base)! & ~0x2)
        #expect(try vb.walker().extents().map(\.permissions) == [.read])
    }
}

/// The address of the leaf-most table holding input 0 (following entry 0 at each level).
func findLeafTable<F: PageTableFormat>(_ arena: Arena, _ f: F, root: UInt64) -> UInt64? {
    var table = root
    var level = f.topLevel
    while level > 0 {
        let raw = f.entryBytes == 8 ? arena.memory.load64(at: GuestPhysicalAddress(table))
                                    : arena.memory.load32(at: GuestPhysicalAddress(table)).map { UInt64($0) }
        guard let raw, case .table(let next, let nl, _) = f.decode(raw, level: level) else { return nil }
        table = next.rawValue
        level = nl
    }
    return table
}
