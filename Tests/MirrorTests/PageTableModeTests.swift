import IOMMUFD
import IOMMUFDModel
import IOMMUMirror
import IOPageTables
import TestSupport
import Testing

/// A guest's IO page table built with PageTableBuilder in guest RAM region 0, and the test's
/// own list of the leaves it put there.
struct GuestTable<F: PageTableFormat> {
    struct Leaf: Hashable {
        var iova: UInt64
        var size: UInt64
        var gpa: UInt64
        var perms: Permissions
        var id: Int
    }

    var builder: PageTableBuilder<F, MutableGuestMemoryBuffer, BumpTableAllocator>
    var leaves: [Leaf] = []
    var nextID = 1

    init(_ format: F, _ ram: TestRAM, tables: ClosedRange<UInt64>) throws {
        builder = try PageTableBuilder(format: format, memory: ram.writable(0),
                                       allocator: BumpTableAllocator(range: try GuestPhysicalRange(first: GuestPhysicalAddress(tables.lowerBound), last: GuestPhysicalAddress(tables.upperBound))))
    }

    var root: GuestPhysicalAddress { builder.root }

    /// Maps one leaf; `false` when the builder refuses (overlap, rights the format lacks).
    mutating func map(_ iova: UInt64, _ size: UInt64, _ gpa: UInt64, _ perms: Permissions) -> Bool {
        do {
            try builder.map(IOVA(iova), to: GuestPhysicalAddress(gpa), size: PageSize(rawValue: size)!, permissions: perms)
        } catch { return false }
        leaves.append(Leaf(iova: iova, size: size, gpa: gpa, perms: perms, id: nextID))
        nextID += 1
        return true
    }

    /// ``map(_:_:_:_:)`` that must succeed.
    mutating func mustMap(_ iova: UInt64, _ size: UInt64, _ gpa: UInt64, _ perms: Permissions,
                          sourceLocation: SourceLocation = #_sourceLocation) {
        if !map(iova, size, gpa, perms) { Issue.record("guest map of 0x\(String(iova, radix: 16)) refused", sourceLocation: sourceLocation) }
    }

    mutating func unmap(_ leaf: Leaf) {
        _ = try! builder.unmap(try! IOVARange(base: IOVA(leaf.iova), length: leaf.size))
        leaves.removeAll { $0 == leaf }
    }
}

/// The test's oracle for page-table mode, page by page and apart from the engine: which areas
/// each target should hold after each invalidation, and the fewest calls that get there under
/// the policy (an area cut by the guest is unmapped and its unchanged pages re-mapped).
struct PageOracle {
    struct Area: Hashable {
        var first: UInt64  // pages
        var last: UInt64
        var offset: UInt64  // gpa - iova, bytes
        var perms: Permissions
    }

    struct View {
        var gpa: UInt64
        var perms: Permissions
        var leaf: Int
    }

    let ram: TestRAM
    let strict: Bool
    let expressible: (Permissions) -> Bool
    var areas: [Area] = []

    /// The guest's view page by page: leaves a host may map (rights, RAM), `perms` read/write.
    func view<F>(_ guest: GuestTable<F>) -> [UInt64: View] {
        var v: [UInt64: View] = [:]
        for l in guest.leaves {
            let p = l.perms.intersection(.readWrite)
            guard !p.isEmpty, expressible(p), ram.pieces(l.iova, l.size, l.gpa, p) != nil else { continue }
            for k in 0..<(l.size / page) { v[l.iova / page + k] = View(gpa: l.gpa + k * page, perms: p, leaf: l.id) }
        }
        return v
    }

    /// Applies an invalidation of pages `r`; returns (unmap calls, map calls, transient unmaps).
    mutating func invalidate(_ r: ClosedRange<UInt64>, _ v: [UInt64: View]) -> (Int, Int, Int) {
        let hit = areas.indices.filter { areas[$0].first <= r.upperBound && r.lowerBound <= areas[$0].last }
        var kept: Set<Int> = []
        for i in hit {
            let a = areas[i]
            let ok = (max(a.first, r.lowerBound)...min(a.last, r.upperBound)).allSatisfy { p in
                if let x = v[p] { return x.gpa == p * page &+ a.offset && x.perms == a.perms }
                return false
            }
            if ok { kept.insert(i) }
        }
        var unmaps = 0
        var previousRemoved = false
        for i in hit {
            let removed = !kept.contains(i)
            if removed && !previousRemoved { unmaps += 1 }
            previousRemoved = removed
        }
        // Pages to map: (page, gpa, perms, run key); remnants keep the old area's translation.
        var toMap: [(UInt64, UInt64, Permissions, Int)] = []
        var transient = 0
        for i in hit where !kept.contains(i) {
            let a = areas[i]
            var same = false
            for p in a.first...a.last {
                if r.contains(p) {
                    if let x = v[p], x.gpa == p * page &+ a.offset, x.perms == a.perms { same = true }
                } else {
                    toMap.append((p, p * page &+ a.offset, a.perms, -(i * 2 + (p < r.lowerBound ? 0 : 1)) - 1))
                    same = true
                }
            }
            if same { transient += 1 }
        }
        let keptAreas = kept.map { areas[$0] }
        for (p, x) in v where r.contains(p) && !keptAreas.contains(where: { $0.first <= p && p <= $0.last }) {
            toMap.append((p, x.gpa, x.perms, x.leaf))
        }
        toMap.sort { $0.0 < $1.0 }
        var runs: [Area] = []
        var lastKey: Int? = nil
        for (p, gpa, perms, key) in toMap {
            let offset = gpa &- p * page
            if let l = runs.last, l.last + 1 == p, l.offset == offset, l.perms == perms,
               ram.region(of: gpa &- page)?.first == ram.region(of: gpa)?.first,
               !strict || lastKey == key {
                runs[runs.count - 1].last = p
            } else {
                runs.append(Area(first: p, last: p, offset: offset, perms: perms))
            }
            lastKey = key
        }
        areas = areas.enumerated().filter { !hit.contains($0.offset) || kept.contains($0.offset) }.map(\.element) + runs
        areas.sort { $0.first < $1.first }
        return (unmaps, runs.count, transient)
    }

    var refAreas: [RefArea] {
        areas.map { RefArea(first: $0.first * page, last: $0.last * page + page - 1, gpa: $0.first * page &+ $0.offset, perms: $0.perms) }
    }
}

@Suite struct PageTableModeTests {
    /// Region 0 holds the guest's tables (from 3 MiB) and data; regions 1 and 2 data; 8-16 MiB
    /// is a hole.
    static let layout: [(gpa: UInt64, bytes: Int)] = [(0, 4 << 20), (4 << 20, 4 << 20), (16 << 20, 4 << 20)]
    static let tables: ClosedRange<UInt64> = 0x30_0000...0x3F_FFFF
    static let space = try! IOVARange(first: IOVA(0), last: IOVA(0xFFFF_FFFF))

    static func setUp<F: PageTableFormat, H: PageTableFormat>(_ format: F, host: H) throws -> (TestRAM, ModelTargets, GuestTable<F>) {
        let ram = try TestRAM(layout)
        let targets = try ModelTargets { try PageTableTarget(name: "host-table", format: host) }
        return (ram, targets, try GuestTable(format, ram, tables: tables))
    }

    static func engine<F: PageTableFormat>(_ ram: TestRAM, _ t: ModelTargets, _ guest: GuestTable<F>,
                                           coalescing: MirrorEngine.CoalescingPolicy = .perUnit,
                                           execution: MirrorEngine.Execution = .sequential) throws -> MirrorEngine {
        try MirrorEngine(mode: .pageTable(guest.builder.format, root: guest.root), memory: ram.ram, targets: t.all,
                         configuration: .init(space: space, coalescing: coalescing, execution: execution))
    }

    /// A guest-physical address for a leaf of `size`: in one of the three regions, across the
    /// boundary of regions 0 and 1, or (rarely) in the hole.
    static func randomGPA(_ size: UInt64, _ rng: inout SplitMix64) -> UInt64 {
        let bases: [UInt64] = [0, 1 << 20, (4 << 20) - (size > page ? 0 : 2 * page), 4 << 20, 16 << 20, 10 << 20]
        let base = bases[Int(rng.below(rng.chance(90) ? 5 : 6))]
        let slots = max((2 << 20) / size, 1)
        return base + (size > page ? 0 : rng.below(slots / 4) * size)
    }

    /// With `inject`, IOAS calls fail now and then: every IOAS must then hold exactly its
    /// reported shadow, a rolled-back batch must leave the pre-batch view, and the batch
    /// applied again must reach the oracle's areas.
    static func randomStream<F: PageTableFormat, H: PageTableFormat>(_ format: F, host: H, coalescing: MirrorEngine.CoalescingPolicy,
                                                                   seed: UInt64, inject: Bool = false) throws {
        var rng = SplitMix64(seed: 0x9A6E + seed)
        var (ram, t, guest) = try setUp(format, host: host)
        var engine = try Self.engine(ram, t, guest, coalescing: coalescing)
        // The same stream in worker mode over its own targets (the guest table is shared: the
        // engines only read it) must report the same after every batch.
        let t2 = try ModelTargets { try PageTableTarget(name: "host-table", format: host) }
        var twin = try Self.engine(ram, t2, guest, coalescing: coalescing, execution: .workers)
        var twinResult = MirrorBatchResult(capacity: 16)
        var rolledBackOnce = false
        func applyBoth(_ engine: inout MirrorEngine, _ twin: inout MirrorEngine, _ result: inout MirrorBatchResult,
                       _ twinResult: inout MirrorBatchResult, _ batch: MirrorBatch) {
            engine.apply(batch, into: &result)
            twin.apply(batch, into: &twinResult)
            if result.rolledBack { rolledBackOnce = true }
            expectSameAsTwin(engine, result, t, twin, twinResult, t2, allMetrics: !rolledBackOnce)
        }
        var oracle = PageOracle(ram: ram, strict: coalescing == .strict, expressible: { host.canExpress($0) && format.canExpress($0) })
        var batch = MirrorBatch(capacity: 16)
        var result = MirrorBatchResult(capacity: 16)
        var transientSeen = 0
        var rollbacks = 0, rebuilt = 0
        let perms: [Permissions] = [.read, .readWrite, .readWrite, .write, [.read, .write, .execute]]
        for _ in 0..<50 {
            // Guest edits inside one 2 MiB window, then one invalidation per window touched (or
            // a resync now and then).
            batch.removeAll()
            var windows: Set<UInt64> = []
            for _ in 0..<(1 + rng.below(8)) {
                if !guest.leaves.isEmpty && rng.chance(35) {
                    let l = guest.leaves[Int(rng.below(UInt64(guest.leaves.count)))]
                    guest.unmap(l)
                    windows.insert(l.iova >> 21)
                } else {
                    let huge = rng.chance(10)
                    let size: UInt64 = huge ? 2 << 20 : page
                    let window = rng.below(4)
                    let iova = window << 21 + (huge ? 0 : rng.below(64) * page)
                    // Runs of contiguous leaves, so invalidations have something to coalesce.
                    let gpa = randomGPA(size, &rng)
                    let count = huge ? 1 : 1 + rng.below(4)
                    let p = perms[Int(rng.below(UInt64(perms.count)))]
                    for k in 0..<count where guest.map(iova + k * size, size, gpa + k * size, p) { windows.insert(iova >> 21) }
                }
            }
            let resync = rng.chance(10)
            let before = oracle.refAreas
            var expected: (Int, Int, Int) = (0, 0, 0)
            let v = oracle.view(guest)
            if resync {
                batch.append(.resync)
                expected = oracle.invalidate(0...(0xFFFF_FFFF / page), v)
            } else {
                for w in windows.sorted() {
                    batch.append(.invalidate(iova: IOVA(w << 21), length: 2 << 20))
                    let e = oracle.invalidate((w << 21) / page...((w + 1) << 21) / page - 1, v)
                    expected = (expected.0 + e.0, expected.1 + e.1, expected.2 + e.2)
                }
            }
            let maps = t.mapCalls, unmaps = t.unmapCalls
            if inject && rng.chance(40) {
                let requests: [IoctlRequest] = [.ioasMap, .ioasUnmap]
                let (request, count) = (requests[Int(rng.below(2))], 1 + Int(rng.below(2)))
                t.model.injectFailure(.noMemory, for: request, count: count)
                t2.model.injectFailure(.noMemory, for: request, count: count)
            }
            applyBoth(&engine, &twin, &result, &twinResult, batch)
            if inject {
                var tries = 0
                while result.rolledBack && tries < 8 {
                    rollbacks += 1
                    for k in 0..<2 { #expect(t.areas(k, ram) == asIOAS(refAreas(engine.targetShadows[k]))) }
                    #expect(refAreas(engine.shadow) == before, "a rolled-back batch leaves the pre-batch view")
                    #expect(result.targets.contains { $0.failure != nil })
                    // A target whose undo failed is out of service: rebuild it to the engine's
                    // view by hand, then put it back.
                    for k in 0..<2 where result.targets[k].state == .rollbackFailed {
                        #expect(engine.quarantined[k])
                        for m in [t, t2] {
                            _ = try? m.context.iommufd.unmapAll(from: m.ioas[k])
                            for e in engine.shadow {
                                let r = try #require(ram.region(of: e.guestPhysical.rawValue))
                                let host = try HostRange(base: HostAddress(r.host + (e.guestPhysical.rawValue - r.first)), length: e.length)
                                _ = try m.context.iommufd.map(host, into: m.ioas[k], at: e.iova.first,
                                               access: e.permissions.contains(.write) ? [.readable, .writeable] : [.readable])
                            }
                        }
                        engine.restore(target: k)
                        twin.restore(target: k)
                        rebuilt += 1
                    }
                    applyBoth(&engine, &twin, &result, &twinResult, batch)
                    tries += 1
                }
                #expect(!result.rolledBack && !engine.quarantined.contains(true), "\(result.targets)")
                for k in 0..<2 { #expect(t.areas(k, ram) == asIOAS(oracle.refAreas)) }
                #expect(engine.checkInvariants() == [])
                continue
            }
            #expect(!result.rolledBack)
            #expect(t.mapCalls - maps == 2 * expected.1, "maps")
            #expect(t.unmapCalls - unmaps == 2 * expected.0, "unmaps")
            #expect(result.changes.reduce(0) { $0 + $1.transientUnmaps } == expected.2, "transient unmaps")
            transientSeen += expected.2
            for k in 0..<2 { #expect(t.areas(k, ram) == asIOAS(oracle.refAreas)) }
            #expect(refAreas(engine.shadow) == oracle.refAreas)
            #expect(engine.checkInvariants() == [])
        }
        if coalescing == .strict { #expect(transientSeen == 0) }
        if inject {
            #expect(rollbacks > 0, "no injected failure caused a rollback")
            print("seed \(seed): \(rollbacks) rollbacks, \(rebuilt) targets rebuilt after a failed undo")
        }
        // A resync of an unchanged table touches nothing (refused leaves stay refused).
        let before = t.mapCalls + t.unmapCalls
        #expect(engine.apply(.resync).changes[0].operations == 0)
        #expect(t.mapCalls + t.unmapCalls == before)
    }

    @Test("VT-d second-stage guest into two IOAS and an x86 table", arguments: [MirrorEngine.CoalescingPolicy.perUnit, .strict], 0..<8)
    func vtdGuest(coalescing: MirrorEngine.CoalescingPolicy, seed: UInt64) throws {
        try Self.randomStream(try VTdSecondStage(levels: 4), host: try X86FirstStage(levels: 4), coalescing: coalescing, seed: seed)
    }

    @Test("x86 first-stage guest into two IOAS and an AMD v1 table", arguments: [MirrorEngine.CoalescingPolicy.perUnit, .strict], 0..<6)
    func x86Guest(coalescing: MirrorEngine.CoalescingPolicy, seed: UInt64) throws {
        try Self.randomStream(try X86FirstStage(levels: 4), host: try AMDv1(levels: 4), coalescing: coalescing, seed: seed)
    }

    @Test("Arm stage-2 guest into two IOAS and a VT-d table", arguments: [MirrorEngine.CoalescingPolicy.perUnit, .strict], 0..<6)
    func armGuest(coalescing: MirrorEngine.CoalescingPolicy, seed: UInt64) throws {
        try Self.randomStream(try ArmVMSAv8(stage: .stage2), host: try VTdSecondStage(levels: 4), coalescing: coalescing, seed: seed)
    }

    @Test("injected IOAS failures in page-table mode: exact reported state, rollback, retry", arguments: 0..<8)
    func injectedFailures(seed: UInt64) throws {
        try Self.randomStream(try VTdSecondStage(levels: 4), host: try AMDv1(levels: 4), coalescing: .perUnit, seed: 0x1000 + seed, inject: true)
    }

    @Test("a guest unmap inside a coalesced area splits it once; strict never does")
    func splitCounting() throws {
        for policy in [MirrorEngine.CoalescingPolicy.perUnit, .strict] {
            var (ram, t, guest) = try Self.setUp(try VTdSecondStage(levels: 4), host: try AMDv1(levels: 4))
            var engine = try Self.engine(ram, t, guest, coalescing: policy)
            for k: UInt64 in 0..<4 { guest.mustMap(0x10_0000 + k * page, page, 0x1000 + k * page, .readWrite) }
            let first = engine.apply(.invalidate(iova: IOVA(0x10_0000), length: 4 * page))
            #expect(first.changes[0].maps == (policy == .perUnit ? 1 : 4))
            guest.unmap(guest.leaves[2])
            let r = engine.apply(.invalidate(iova: IOVA(0x10_2000), length: page))
            #expect(r.changes[0].unmaps == 1)
            #expect(r.changes[0].transientUnmaps == (policy == .perUnit ? 1 : 0))
            #expect(r.changes[0].maps == (policy == .perUnit ? 2 : 0))
            #expect(engine.metrics.targets[0].transientUnmaps == (policy == .perUnit ? 1 : 0))
            #expect(t.areas(0, ram).map(\.first) == (policy == .perUnit ? [0x10_0000, 0x10_3000] : [0x10_0000, 0x10_1000, 0x10_3000]))
            #expect(engine.checkInvariants() == [])
        }
    }

    @Test("a malformed leaf is unmapped in every target (fail closed)")
    func hostileTableFailsClosed() throws {
        var (ram, t, guest) = try Self.setUp(try VTdSecondStage(levels: 4), host: try AMDv1(levels: 4))
        var engine = try Self.engine(ram, t, guest)
        guest.mustMap(0x20_0000, page, 0x5000, .readWrite)
        guest.mustMap(0x40_0000, page, 0x6000, .read)
        _ = engine.apply(.resync)
        #expect(t.areas(0, ram).count == 2)
        // Corrupt the leaf entry of 0x200000: set bit 62 (TM), reserved in VT-d second stage.
        let walker = PageTableWalker(format: try VTdSecondStage(levels: 4), memory: ram.ram, root: guest.root)
        #expect(try walker.translate(IOVA(0x20_0000)) != nil)
        var entryAddress: UInt64? = nil
        let memory = ram.writable(0)
        for a in stride(from: Self.tables.lowerBound, to: Self.tables.upperBound, by: 8) where memory.load64(at: GuestPhysicalAddress(a)).map({ $0 & ~0xFFF == 0x5000 }) == true {
            entryAddress = a
        }
        let slot = try #require(entryAddress)
        _ = memory.store64(memory.load64(at: GuestPhysicalAddress(slot))! | (1 << 62), at: GuestPhysicalAddress(slot))
        let r = engine.apply(.invalidate(iova: IOVA(0x20_0000), length: page))
        guard case .guestTableFault = r.changes[0].refusal else { Issue.record("no fault: \(r.changes[0])"); return }
        #expect(r.changes[0].unmaps == 1)
        #expect(t.areas(0, ram).map(\.first) == [0x40_0000])
        #expect(t.areas(1, ram).map(\.first) == [0x40_0000])
        #expect(try runsAsRef(#require(try t.pageTable.readBack())).map(\.first) == [0x40_0000])
    }

    @Test("a leaf outside guest RAM is refused, and a mapping the guest repoints there is removed")
    func leafOutsideRAM() throws {
        var (ram, t, guest) = try Self.setUp(try VTdSecondStage(levels: 4), host: try AMDv1(levels: 4))
        var engine = try Self.engine(ram, t, guest)
        guest.mustMap(0x1000, page, 0x8000, .readWrite)
        _ = engine.apply(.invalidate(iova: IOVA(0x1000), length: page))
        #expect(t.areas(0, ram).count == 1)
        guest.unmap(guest.leaves[0])
        guest.mustMap(0x1000, page, 10 << 20, .readWrite)  // the hole
        let r = engine.apply(.invalidate(iova: IOVA(0x1000), length: page))
        #expect(r.changes[0].refusal == .outsideGuestMemory(GuestPhysicalAddress(10 << 20)))
        #expect(r.changes[0].refusedLeaves == 1 && r.changes[0].unmaps == 1 && r.changes[0].maps == 0)
        #expect(t.areas(0, ram).isEmpty)
        #expect(engine.metrics.leavesRefused == 1)
        // Nothing mapped there before: the same leaf again is refused and nothing is called.
        let again = engine.apply(.invalidate(iova: IOVA(0x1000), length: page))
        #expect(again.changes[0].status == .refused && t.unmapCalls == 2)
    }

    @Test("changing the root to a copy unmaps nothing; to another table applies only the differences")
    func rootChange() throws {
        var (ram, t, guest) = try Self.setUp(try VTdSecondStage(levels: 4), host: try AMDv1(levels: 4))
        var engine = try Self.engine(ram, t, guest)
        for k: UInt64 in 0..<8 { guest.mustMap(0x10_0000 + k * page, page, 0x1_0000 + k * page, .readWrite) }
        _ = engine.apply(.resync)
        // A second table with the same first seven pages and a different eighth.
        var other = try GuestTable(try VTdSecondStage(levels: 4), ram, tables: 0x38_0000...0x3F_FFFF)
        for k: UInt64 in 0..<7 { other.mustMap(0x10_0000 + k * page, page, 0x1_0000 + k * page, .readWrite) }
        other.mustMap(0x10_7000, page, 0x9_0000, .read)
        let maps = t.mapCalls, unmaps = t.unmapCalls
        let r = engine.apply(.setRoot(other.root))
        #expect(engine.root == other.root)
        // The one coalesced area goes, its first seven pages come back as one area, plus the new page.
        #expect(r.changes[0].unmaps == 1 && r.changes[0].maps == 2 && r.changes[0].transientUnmaps == 1)
        #expect(t.mapCalls - maps == 4 && t.unmapCalls - unmaps == 2)
        #expect(engine.checkInvariants() == [])
        // Back to the first table's copy: identical translations, no calls.
        var copy = try GuestTable(try VTdSecondStage(levels: 4), ram, tables: 0x34_0000...0x37_FFFF)
        for k: UInt64 in 0..<7 { copy.mustMap(0x10_0000 + k * page, page, 0x1_0000 + k * page, .readWrite) }
        copy.mustMap(0x10_7000, page, 0x9_0000, .read)
        let calls = t.mapCalls + t.unmapCalls
        #expect(engine.apply(.setRoot(copy.root)).changes[0].operations == 0)
        #expect(t.mapCalls + t.unmapCalls == calls)
        #expect(engine.root == copy.root)
    }
}
