import IOPageTables
import Testing

/// Format bits settled in the walker review: each failed before its fix.
@Suite("Format review: AMD v1 PDE reserved bits, VT-d non-leaf SNP, x86 NX enable")
struct FormatReviewTests {
    /// AMD IOMMU spec #48882 §2.2.3: a PDE reserves bits 60:52; a PTE only 58:52, since its
    /// bit 59 is U and bit 60 FC.
    @Test func amdPDEReservesBits60To52() {
        let f = Formats.amd4
        let rw: UInt64 = 0x6000_0000_0000_0001
        for b in 52...60 {
            #expect(f.decode(rw | 0x2000 | 1 << 9 | 1 << UInt64(b), level: 1) == .fault(.reservedBitsSet), "PDE bit \(b)")
        }
        for b in [59, 60] {
            #expect(f.decode(rw | 0x2000 | 1 << UInt64(b), level: 0) == leaf(0x2000, 12, .readWrite), "PTE bit \(b)")
            // NextLevel 7 is a PTE too.
            #expect(f.decode(rw | 0x9000_7000 | 7 << 9 | 1 << UInt64(b), level: 0) == leaf(0x9000_0000, 16, .readWrite))
        }
        #expect(f.decode(rw | 0x2000 | 1 << 9 | 1 << 63, level: 1) == .table(GuestPhysicalAddress(0x2000), nextLevel: 0, allows: .readWrite))
    }

    /// A walk stops at a PDE with FC set, where it used to follow it.
    @Test func amdWalkRefusesAPDEWithBit60() throws {
        let arena = Arena()
        var b = try arena.builder(Formats.amd4)
        try b.map(IOVA(0x1000), to: GuestPhysicalAddress(0x5000), size: .size4K, permissions: .readWrite)
        let rootEntry = try #require(arena.memory.load64(at: arena.base))
        arena.poke(arena.base.rawValue, rootEntry | 1 << 60)
        #expect(throws: PageTableFault(reason: .reservedBitsSet, level: 3, table: arena.base, index: 0, entry: rootEntry | 1 << 60,
                                       input: IOVA(0))) { try b.walker().walk { _ in } }
    }

    /// VT-d §9.8: SNP (bit 11) is a leaf attribute, reserved in every entry that references a
    /// table even with ECAP.SC (QEMU: VTD_SPTE_SNP stays in the non-leaf reserved masks).
    @Test func vtdSnoopIsReservedInNonLeafEntries() {
        let sc = try! VTdSecondStage(levels: 5, snoopControl: true)
        for level in 1...4 {
            #expect(sc.decode(0x7003 | 1 << 11, level: level) == .fault(.reservedBitsSet), "non-leaf level \(level)")
            #expect(Formats.vtd5.decode(0x7003 | 1 << 11, level: level) == .fault(.reservedBitsSet))
        }
        // Leaves: allowed with snoop control, reserved without.
        #expect(sc.decode(0x5003 | 1 << 11, level: 0) == leaf(0x5000, 12, .readWrite))
        #expect(sc.decode(0x4020_0083 | 1 << 11, level: 1) == leaf(0x4020_0000, 21, .readWrite))
        #expect(sc.decode(0xC000_0083 | 1 << 11, level: 2) == leaf(0xC000_0000, 30, .readWrite))
        #expect(Formats.vtd5.decode(0x4020_0083 | 1 << 11, level: 1) == .fault(.reservedBitsSet))
    }

    /// x86 first stage: with NX disabled (EFER.NXE = 0) bit 63 is reserved in every entry; with
    /// it enabled (the default) it is execute-disable.
    @Test func x86NoExecuteEnable() throws {
        #expect(Formats.x86.noExecuteEnabled)
        let off = try X86FirstStage(levels: 4, noExecuteEnabled: false)
        let xd: UInt64 = 1 << 63
        #expect(Formats.x86.decode(0x5027 | xd, level: 0) == leaf(0x5000, 12, [.read, .write, .user]))
        #expect(off.decode(0x5027 | xd, level: 0) == .fault(.reservedBitsSet))
        #expect(off.decode(0x7027 | xd, level: 2) == .fault(.reservedBitsSet))        // a table pointer
        #expect(off.decode(0x4020_00A7 | xd, level: 1) == .fault(.reservedBitsSet))   // a 2M leaf
        #expect(off.decode(0x5027, level: 0) == leaf(0x5000, 12, [.read, .write, .user, .execute]))
        // Without NX a leaf cannot withhold execute: the builder maps executable leaves only and
        // never writes bit 63.
        #expect(!off.canExpress(.readWrite) && off.canExpress([.read, .write, .execute]))
        let arena = Arena()
        var b = try arena.builder(off)
        #expect(throws: PageTableBuildError.permissionsNotExpressible(.readWrite)) {
            try b.map(IOVA(0x1000), to: GuestPhysicalAddress(0x5000), size: .size4K, permissions: .readWrite)
        }
        try b.map(IOVA(0x1000), to: GuestPhysicalAddress(0x5000), size: .size4K, permissions: [.read, .write, .execute])
        #expect(try b.walker().extents() == [extent(0x1000, 0x5000, 12, [.read, .write, .execute], level: 0)])
        // A table built with NX on and XD leaves faults when walked with NX off.
        let nxArena = Arena()
        var nx = try nxArena.builder(Formats.x86)
        try nx.map(IOVA(0x1000), to: GuestPhysicalAddress(0x5000), size: .size4K, permissions: .read)
        let w = PageTableWalker(format: off, memory: nx.memory, root: nx.root)
        #expect(throws: PageTableFault.self) { try w.walk { _ in } }
        withExtendedLifetime(nxArena) {}
    }
}
