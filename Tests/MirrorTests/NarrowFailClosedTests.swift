import IOMMUFD
import IOMMUMirror
import IOPageTables
import Testing

/// Page-table mode walks the guest's table as maximal runs and skips a malformed entry: what
/// that entry would translate is unmapped in every target, its neighbours stay; a run that
/// fails a check is taken leaf by leaf, so only its bad leaves are refused.
@Suite struct NarrowFailClosedTests {
    typealias T = PageTableModeTests
    static let policies: [MirrorEngine.CoalescingPolicy] = [.perUnit, .strict]

    /// The address of the 8-byte entry in the guest's tables whose address field is `target`.
    static func entry(pointingTo target: UInt64, _ memory: MutableGuestMemoryBuffer) -> UInt64? {
        stride(from: T.tables.lowerBound, to: T.tables.upperBound, by: 8).first { a in
            memory.load64(at: GuestPhysicalAddress(a)).map { $0 & 0x000F_FFFF_FFFF_F000 == target } == true
        }
    }

    @Test("a reserved bit in one leaf of a run: a resync drops that page only", arguments: policies)
    func badLeafInsideARun(_ policy: MirrorEngine.CoalescingPolicy) throws {
        var (ram, t, guest) = try T.setUp(try VTdSecondStage(levels: 4), host: try AMDv1(levels: 4))
        var engine = try T.engine(ram, t, guest, coalescing: policy)
        for k: UInt64 in 0..<3 { guest.mustMap(0x20_0000 + k * page, page, 0x5000 + k * page, .readWrite) }
        guest.mustMap(0x4000_0000, page, 0x9000, .read)
        _ = engine.apply(.resync)
        #expect(t.areas(0, ram).count == (policy == .perUnit ? 2 : 4))

        let memory = ram.writable(0)
        let slot = try #require(Self.entry(pointingTo: 0x6000, memory))
        _ = memory.store64(memory.load64(at: GuestPhysicalAddress(slot))! | (1 << 62), at: GuestPhysicalAddress(slot))
        let r = engine.apply(.resync)
        guard case .guestTableFault(let f) = r.changes[0].refusal else { Issue.record("no fault: \(r.changes[0])"); return }
        #expect(f.input == IOVA(0x20_1000) && f.reason == .reservedBitsSet)
        #expect(r.changes[0].refusedLeaves == 1)
        let expected = [RefArea(first: 0x20_0000, last: 0x20_0FFF, gpa: 0x5000, perms: .readWrite),
                        RefArea(first: 0x20_2000, last: 0x20_2FFF, gpa: 0x7000, perms: .readWrite),
                        RefArea(first: 0x4000_0000, last: 0x4000_0FFF, gpa: 0x9000, perms: .read)]
        #expect(t.areas(0, ram) == expected && t.areas(1, ram) == expected)
        // perUnit: the one area of three pages goes, its two good pages come back; strict:
        // only the bad page's area goes. The leaf elsewhere is never touched.
        #expect(r.changes[0].unmaps == 1)
        #expect(r.changes[0].maps == (policy == .perUnit ? 2 : 0))
        #expect(engine.checkInvariants() == [])
    }

    @Test("a table pointer outside guest RAM: that table's span is unmapped, the rest kept", arguments: policies)
    func tableOutsideRAM(_ policy: MirrorEngine.CoalescingPolicy) throws {
        var (ram, t, guest) = try T.setUp(try VTdSecondStage(levels: 4), host: try AMDv1(levels: 4))
        var engine = try T.engine(ram, t, guest, coalescing: policy)
        guest.mustMap(0x4000_0000, page, 0x9000, .read)
        let tablesBefore = guest.builder.allocator.next
        guest.mustMap(0x8000_0000, page, 0xA000, .readWrite)
        guest.mustMap(0x8000_1000, page, 0xB000, .readWrite)
        _ = engine.apply(.resync)
        #expect(t.areas(0, ram).count == (policy == .perUnit ? 2 : 3))

        // The second leaf's own tables came after the first's: the last allocated is its
        // leaf table. Point the entry that names it at the hole (8-16 MiB is no RAM).
        #expect(guest.builder.allocator.next == tablesBefore + 2 * page)
        let leafTable = guest.builder.allocator.next - page
        let memory = ram.writable(0)
        let slot = try #require(Self.entry(pointingTo: leafTable, memory))
        let old = memory.load64(at: GuestPhysicalAddress(slot))!
        _ = memory.store64(old & ~0x000F_FFFF_FFFF_F000 | (10 << 20), at: GuestPhysicalAddress(slot))
        let r = engine.apply(.resync)
        guard case .guestTableFault(let f) = r.changes[0].refusal else { Issue.record("no fault: \(r.changes[0])"); return }
        #expect(f.reason == .outsideGuestMemory && f.input == IOVA(0x8000_0000))
        #expect(t.areas(0, ram) == [RefArea(first: 0x4000_0000, last: 0x4000_0FFF, gpa: 0x9000, perms: .read)])
        #expect(r.changes[0].maps == 0 && r.changes[0].unmaps == 1)
        #expect(engine.checkInvariants() == [])

        // An invalidation of one page under the bad pointer still removes nothing else and
        // maps nothing; the guest repairs the pointer and invalidates what it covers.
        #expect(engine.apply(.invalidate(iova: IOVA(0x8000_1000), length: page)).changes[0].status == .refused)
        _ = memory.store64(old, at: GuestPhysicalAddress(slot))
        let repaired = engine.apply(.invalidate(iova: IOVA(0x8000_0000), length: 2 << 20))
        #expect(repaired.changes[0].status == .applied && repaired.changes[0].refusal == nil)
        #expect(t.areas(0, ram).count == (policy == .perUnit ? 2 : 3))
        #expect(engine.checkInvariants() == [])
    }

    @Test("a run whose outputs leave guest RAM: its leaves in RAM are mapped, the others refused", arguments: policies)
    func runLeavingRAM(_ policy: MirrorEngine.CoalescingPolicy) throws {
        var (ram, t, guest) = try T.setUp(try VTdSecondStage(levels: 4), host: try AMDv1(levels: 4))
        var engine = try T.engine(ram, t, guest, coalescing: policy)
        // Region 1 ends at 8 MiB, the hole follows: four pages contiguous in IOVA and output.
        for k: UInt64 in 0..<4 { guest.mustMap(0x10_0000 + k * page, page, 0x7F_E000 + k * page, .readWrite) }
        let r = engine.apply(.resync)
        #expect(r.changes[0].refusal == .outsideGuestMemory(GuestPhysicalAddress(0x80_0000)))
        #expect(r.changes[0].refusedLeaves == 2)
        #expect(r.changes[0].maps == (policy == .perUnit ? 1 : 2))
        #expect(MirrorRun.runs(engine.shadow).count == 1)
        #expect(t.areas(0, ram).map(\.first) == (policy == .perUnit ? [0x10_0000] : [0x10_0000, 0x10_1000]))
        #expect(engine.checkInvariants() == [])
    }
}
