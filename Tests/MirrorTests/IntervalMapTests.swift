import IOMMUMirror
import IOPageTables
import TestSupport
import Testing

/// The shadow against a plain reference: a page-indexed dictionary of extent ids.
@Suite struct IntervalMapTests {
    @Test("random inserts, removals and lookups agree with a page-by-page reference", arguments: 0..<8)
    func againstReference(seed: UInt64) throws {
        var rng = SplitMix64(seed: 0x1A7E + seed)
        var map = IOVAIntervalMap(capacity: 64)
        var owner: [UInt64: MirrorExtent] = [:]  // page -> extent
        for step in 0..<2000 {
            let first = rng.below(256), pages = 1 + rng.below(8)
            let e = MirrorExtent(iova: try IOVARange(base: IOVA(first * page), length: pages * page),
                                 guestPhysical: GuestPhysicalAddress(rng.below(1 << 20) * page), permissions: .read,
                                 unit: MirrorUnit(rawValue: UInt64(step)))
            let covered = (first..<(first + pages)).contains { owner[$0] != nil }
            if rng.chance(60) {
                do {
                    try map.insert(e)
                    #expect(!covered, "inserted over an extent")
                    for p in first..<(first + pages) { owner[p] = e }
                } catch {
                    #expect(covered, "refused an insert into free space")
                }
            } else if let victim = owner[first] {
                let removed = map.remove(victim)
                #expect(removed)
                for p in (victim.iova.first.rawValue / page)...(victim.iova.last.rawValue / page) { owner[p] = nil }
                let again = map.remove(victim)
                #expect(!again)
            }
            // Lookups: containing, overlapping, ordering.
            let probe = rng.below(264)
            #expect(map.extent(containing: IOVA(probe * page + 17)) == owner[probe])
            let window = try IOVARange(base: IOVA(probe * page), length: 4 * page)
            let hit = Set(map[map.indices(overlapping: window)].map(\.unit))
            let expected = Set((probe..<(probe + 4)).compactMap { owner[$0]?.unit })
            #expect(hit == expected)
        }
        #expect(zip(map, map.dropFirst()).allSatisfy { $0.iova.last < $1.iova.first })
        #expect(map.mappedBytes == UInt64(owner.count) * page)
    }

    @Test("FIFO streams reuse the room before the first extent; equality ignores where extents sit")
    func fifoAndEquality() throws {
        func e(_ k: UInt64) -> MirrorExtent {
            MirrorExtent(iova: try! IOVARange(base: IOVA(k * page), length: page), guestPhysical: GuestPhysicalAddress(k * page),
                         permissions: .read, unit: MirrorUnit(rawValue: k))
        }
        var fifo = IOVAIntervalMap(capacity: 64)
        for k in 0..<32 { try fifo.insert(e(UInt64(k))) }
        for k in 32..<10_000 {
            let oldest = fifo[0]
            #expect(oldest == e(UInt64(k - 32)))
            fifo.remove(at: 0)
            try fifo.insert(e(UInt64(k)))
            #expect(fifo.count == 32)
        }
        var fresh = IOVAIntervalMap()
        for k in (10_000 - 32)..<10_000 { try fresh.insert(e(UInt64(k))) }
        #expect(fifo == fresh && fifo.hashValue == fresh.hashValue)
        #expect(Array(fifo) == Array(fresh))
        // Inserts in front and in the lower half land in order.
        for k in [9_000, 9_950, 9_500, 100, 9_960] { try fifo.insert(e(UInt64(k))) }
        #expect(zip(fifo, fifo.dropFirst()).allSatisfy { $0.iova.last < $1.iova.first })
        #expect(fifo.count == 37 && fifo.extent(containing: IOVA(100 * page)) == e(100))
        fifo.removeSubrange(1..<4)
        #expect(fifo.map(\.unit.rawValue).prefix(3) == [100, 9_960, 9_968])
    }

    @Test func runsMergeOnlyLikeTranslations() throws {
        func e(_ iova: UInt64, _ pages: UInt64, _ gpa: UInt64, _ p: Permissions = .readWrite) -> MirrorExtent {
            MirrorExtent(iova: try! IOVARange(base: IOVA(iova), length: pages * page), guestPhysical: GuestPhysicalAddress(gpa),
                         permissions: p, unit: MirrorUnit(rawValue: iova))
        }
        let runs = MirrorRun.runs([e(0x1000, 1, 0x5000), e(0x2000, 2, 0x6000), e(0x4000, 1, 0x9000), e(0x5000, 1, 0xA000, .read),
                                   e(0x7000, 1, 0xC000, .read)])
        #expect(runs.map(\.iova) == [try IOVARange(first: IOVA(0x1000), last: IOVA(0x3FFF)), try IOVARange(base: IOVA(0x4000), length: page),
                                      try IOVARange(base: IOVA(0x5000), length: page), try IOVARange(base: IOVA(0x7000), length: page)])
    }
}
