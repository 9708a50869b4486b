import Histogram
import IOMMUFD
import IOMMUFDModel
import IOMMUMirror
import IOPageTables
import SystemPackage
import TestSupport
import Testing

/// The virtio-iommu reference: a list of guest mappings with their own rules, written apart
/// from the engine. It predicts every change's answer, every target's areas and the ioctl count.
struct RequestReference {
    struct Mapping: Equatable {
        var iova: UInt64
        var length: UInt64
        var gpa: UInt64
        var perms: Permissions
        var pieces: [RefArea]
    }

    let ram: TestRAM
    let space: ClosedRange<UInt64>
    /// Rights the page-table target can carry (the IOAS carries any nonempty read/write set).
    let tableExpresses: (Permissions) -> Bool
    var mappings: [Mapping] = []

    enum Expect: Equatable { case applied(maps: Int, unmaps: Int), unchanged, refused }

    func expectMap(_ iova: UInt64, _ length: UInt64, _ gpa: UInt64, _ perms: Permissions) -> (Expect, Mapping?) {
        let rw = perms.intersection(.readWrite)
        guard length > 0, iova % page == 0, length % page == 0, gpa % page == 0,
              iova.addingReportingOverflow(length - 1).overflow == false,
              gpa.addingReportingOverflow(length - 1).overflow == false,
              space.contains(iova), space.contains(iova + length - 1),
              !rw.isEmpty, tableExpresses(rw),
              let pieces = ram.pieces(iova, length, gpa, rw) else { return (.refused, nil) }
        let m = Mapping(iova: iova, length: length, gpa: gpa, perms: rw, pieces: pieces)
        let overlapping = mappings.filter { $0.iova <= iova + length - 1 && iova <= $0.iova + $0.length - 1 }
        if overlapping.isEmpty { return (.applied(maps: pieces.count, unmaps: 0), m) }
        if overlapping.count == 1, overlapping[0] == m { return (.unchanged, nil) }
        return (.refused, nil)
    }

    func expectUnmap(_ iova: UInt64, _ length: UInt64) -> Expect {
        guard length > 0, iova % page == 0, length % page == 0, iova.addingReportingOverflow(length - 1).overflow == false else { return .refused }
        let last = iova + length - 1
        let hit = mappings.filter { $0.iova <= last && iova <= $0.iova + $0.length - 1 }
        if hit.isEmpty { return .unchanged }
        if hit.contains(where: { $0.iova < iova || $0.iova + $0.length - 1 > last }) { return .refused }
        return .applied(maps: 0, unmaps: 1)
    }

    mutating func unmap(_ iova: UInt64, _ length: UInt64) {
        mappings.removeAll { $0.iova >= iova && $0.iova + $0.length - 1 <= iova + length - 1 }
    }

    var areas: [RefArea] { mappings.flatMap(\.pieces).sorted { $0.first < $1.first } }
}

@Suite struct RequestModeTests {
    static let layout: [(gpa: UInt64, bytes: Int)] = [(0, 1 << 20), (1 << 20, 1 << 20), (4 << 20, 1 << 20)]
    static let space = try! IOVARange(first: IOVA(0), last: IOVA(0xFFFF_FFFF))

    static func makeEngine(_ ram: TestRAM, _ t: ModelTargets, failure: MirrorEngine.FailurePolicy = .rollback,
                           execution: MirrorEngine.Execution = .sequential) throws -> MirrorEngine {
        try MirrorEngine(mode: .requests, memory: ram.ram, targets: t.all,
                         configuration: .init(space: space, granule: .size4K, failure: failure, execution: execution))
    }

    static func x86Table() throws -> any MirrorTarget {
        try PageTableTarget(name: "x86", format: X86FirstStage(levels: 4))
    }

    /// A random change: maps and unmaps over a small window so they overlap and cut often;
    /// some bad input (misaligned, outside RAM or space, write-only for x86).
    static func randomChange(_ rng: inout SplitMix64) -> MirrorChange {
        let iova = rng.below(48) * page + (rng.chance(3) ? 0x800 : 0) + (rng.chance(2) ? 0x1_0000_0000 : 0)
        let length = (1 + rng.below(rng.chance(80) ? 6 : 40)) * page
        if rng.chance(60) {
            // GPA across the three regions, the hole between 2 and 4 MiB, and past the end.
            let gpa = rng.below(1536) * page
            let perms: [Permissions] = [.read, .readWrite, .readWrite, .write, [], [.read, .execute]]
            return .map(iova: IOVA(iova), length: length, guestPhysical: GuestPhysicalAddress(gpa), permissions: perms[Int(rng.below(6))])
        }
        return .unmap(iova: IOVA(iova), length: rng.chance(5) ? 0 : length)
    }

    @Test("random request streams: every target equals the reference, ioctls are the minimum", arguments: 0..<24)
    func randomStreams(seed: UInt64) throws {
        var rng = SplitMix64(seed: 0xC0FFEE + seed)
        let ram = try TestRAM(Self.layout, memfdLast: true)
        let t = try ModelTargets(pageTable: Self.x86Table)
        var engine = try Self.makeEngine(ram, t)
        // The same stream in worker mode, on its own targets, must give the same everything.
        let t2 = try ModelTargets(pageTable: Self.x86Table)
        var twin = try Self.makeEngine(ram, t2, execution: .workers)
        var twinResult = MirrorBatchResult(capacity: 8)
        var ref = RequestReference(ram: ram, space: 0...0xFFFF_FFFF, tableExpresses: { $0.contains(.read) })
        var batch = MirrorBatch(capacity: 8)
        var result = MirrorBatchResult(capacity: 8)
        for _ in 0..<60 {
            batch.removeAll()
            var expected: [RequestReference.Expect] = []
            var maps = 0, unmaps = 0
            for _ in 0..<(1 + rng.below(6)) {
                let change = Self.randomChange(&rng)
                batch.append(change)
                switch change {
                case .map(let iova, let length, let gpa, let perms):
                    let (e, m) = ref.expectMap(iova.rawValue, length, gpa.rawValue, perms)
                    if let m { ref.mappings.append(m) }
                    expected.append(e)
                case .unmap(let iova, let length):
                    let e = ref.expectUnmap(iova.rawValue, length)
                    if case .applied = e { ref.unmap(iova.rawValue, length) }
                    expected.append(e)
                default: Issue.record("unexpected change")
                }
                if case .applied(let m, let u) = expected.last! { maps += m; unmaps += u }
            }
            let mapsBefore = t.mapCalls, unmapsBefore = t.unmapCalls
            engine.apply(batch, into: &result)
            twin.apply(batch, into: &twinResult)
            expectSameAsTwin(engine, result, t, twin, twinResult, t2, allMetrics: true)
            #expect(try t2.pageTable.readBack() == t.pageTable.readBack())
            for (k, e) in expected.enumerated() {
                let got = result.changes[k]
                switch e {
                case .applied(let m, let u):
                    #expect(got.status == .applied && got.maps == m && got.unmaps == u, "change \(k) \(batch.changes[k]): \(got)")
                case .unchanged: #expect(got.status == .unchanged, "change \(k) \(batch.changes[k]): \(got)")
                case .refused: #expect(got.status == .refused && got.refusal != nil, "change \(k) \(batch.changes[k]): \(got)")
                }
            }
            // Two IOAS targets, each the minimum: one map per region piece, one unmap per request.
            #expect(t.mapCalls - mapsBefore == 2 * maps)
            #expect(t.unmapCalls - unmapsBefore == 2 * unmaps)
            for k in 0..<2 { #expect(t.areas(k, ram) == asIOAS(ref.areas)) }
            #expect(refAreas(engine.shadow) == ref.areas)
            #expect(try runsAsRef(#require(try t.pageTable.readBack())) == refRuns(ref.areas))
            #expect(engine.checkInvariants() == [])
        }
        #expect(engine.metrics.changesIn == engine.metrics.latency.totalCount.asInt)
        #expect(engine.metrics.targets[0].calls == engine.metrics.targets[1].calls)
    }

    @Test("injected IOAS failures leave exactly the reported state, under either policy",
          arguments: [MirrorEngine.FailurePolicy.rollback, .quarantine], 0..<12)
    func injectedFailures(policy: MirrorEngine.FailurePolicy, seed: UInt64) throws {
        var rng = SplitMix64(seed: 0xFA11 + seed)
        let ram = try TestRAM(Self.layout, memfdLast: true)
        let t = try ModelTargets(pageTable: Self.x86Table)
        var engine = try Self.makeEngine(ram, t, failure: policy)
        let t2 = try ModelTargets(pageTable: Self.x86Table)
        var twin = try Self.makeEngine(ram, t2, failure: policy, execution: .workers)
        var twinResult = MirrorBatchResult(capacity: 8)
        var rolledBackOnce = false
        var ref = RequestReference(ram: ram, space: 0...0xFFFF_FFFF, tableExpresses: { $0.contains(.read) })
        var batch = MirrorBatch(capacity: 8)
        var result = MirrorBatchResult(capacity: 8)
        var failuresSeen = 0
        for _ in 0..<40 {
            batch.removeAll()
            var candidate = ref
            for _ in 0..<(1 + rng.below(6)) {
                let change = Self.randomChange(&rng)
                batch.append(change)
                switch change {
                case .map(let iova, let length, let gpa, let perms):
                    if let m = candidate.expectMap(iova.rawValue, length, gpa.rawValue, perms).1 { candidate.mappings.append(m) }
                case .unmap(let iova, let length):
                    if case .applied = candidate.expectUnmap(iova.rawValue, length) { candidate.unmap(iova.rawValue, length) }
                default: break
                }
            }
            if rng.chance(30) {
                let requests: [IoctlRequest] = [.ioasMap, .ioasMapFile, .ioasUnmap]
                let errnos: [Errno] = [.ioError, .noMemory, .resourceBusy]
                let (errno, request, count) = (errnos[Int(rng.below(3))], requests[Int(rng.below(3))], 1 + Int(rng.below(3)))
                t.model.injectFailure(errno, for: request, count: count)
                t2.model.injectFailure(errno, for: request, count: count)
            }
            engine.apply(batch, into: &result)
            twin.apply(batch, into: &twinResult)
            if result.rolledBack { rolledBackOnce = true }
            expectSameAsTwin(engine, result, t, twin, twinResult, t2, allMetrics: !rolledBackOnce)
            let failed = result.targets.contains { $0.failure != nil }
            if failed { failuresSeen += 1 }
            // Whatever happened, each IOAS holds exactly what the engine says it holds.
            for k in 0..<2 { #expect(t.areas(k, ram) == asIOAS(refAreas(engine.targetShadows[k])), "target \(k): \(result.targets[k])") }
            if result.rolledBack {
                #expect(policy == .rollback)
                #expect(result.changes.contains { $0.status == .failed })
                #expect(!result.changes.contains { $0.status == .applied })
                for (k, outcome) in result.targets.enumerated() where outcome.state == .synced {
                    #expect(refAreas(engine.targetShadows[k]) == ref.areas, "rolled back to the pre-batch view")
                }
            } else {
                ref = candidate
            }
            #expect(refAreas(engine.shadow) == ref.areas)
            for (k, outcome) in result.targets.enumerated() where !engine.quarantined[k] {
                if policy == .quarantine { #expect(outcome.failure == nil) }
                #expect(refAreas(engine.targetShadows[k]) == ref.areas)
            }
            // Per change and per target: a failed target holds the changes before its failure
            // whole, a prefix of the failing one, nothing after.
            for (k, outcome) in result.targets.enumerated() {
                guard let f = outcome.failedChange else { continue }
                if policy == .quarantine {
                    #expect(engine.quarantined[k] && outcome.state == .quarantined)
                    #expect(outcome.appliedChanges == f)
                    if case .partial(let done, let of) = result.application(ofChange: f, onTarget: k) { #expect(done < of) } else {
                        Issue.record("change \(f) on target \(k) should be partial")
                    }
                }
            }
            #expect(engine.checkInvariants() == [])
            if engine.quarantined.contains(true) { break }
        }
        #expect(failuresSeen > 0, "no injected failure reached a target")
    }

    @Test("fan-out by IOAS_COPY: the second IOAS copies every area the first just mapped, never a stale one",
          arguments: 0..<4)
    func copyFanOut(seed: UInt64) throws {
        var rng = SplitMix64(seed: 0xC09 + seed)
        let ram = try TestRAM(Self.layout, memfdLast: true)
        let t = try ModelTargets(fanOut: .copy, pageTable: Self.x86Table)
        var engine = try Self.makeEngine(ram, t, failure: .quarantine)
        var ref = RequestReference(ram: ram, space: 0...0xFFFF_FFFF, tableExpresses: { $0.contains(.read) })
        var maps = 0
        for _ in 0..<200 {
            let change = Self.randomChange(&rng)
            switch change {
            case .map(let iova, let length, let gpa, let perms):
                let (e, m) = ref.expectMap(iova.rawValue, length, gpa.rawValue, perms)
                if let m { ref.mappings.append(m) }
                if case .applied(let n, _) = e { maps += n }
            case .unmap(let iova, let length):
                if case .applied = ref.expectUnmap(iova.rawValue, length) { ref.unmap(iova.rawValue, length) }
            default: break
            }
            _ = engine.apply(change)
        }
        #expect(t.model.ioctlCount(.ioasCopy) == maps)
        #expect(t.model.ioctlCount(.ioasMap) + t.model.ioctlCount(.ioasMapFile) == maps)
        for k in 0..<2 { #expect(t.areas(k, ram) == asIOAS(ref.areas)) }
        // With the source out of service, the copying target maps on its own.
        t.model.injectFailure(.noMemory, for: .ioasMap, count: 1)
        let r = engine.apply(.map(iova: IOVA(0x8000_0000), length: page, guestPhysical: GuestPhysicalAddress(0x1000), permissions: .read))
        #expect(engine.quarantined == [true, false, false, false] && r.changes[0].status == .applied)
        #expect(t.model.ioctlCount(.ioasCopy) == maps)
        #expect(t.areas(1, ram).contains(RefArea(first: 0x8000_0000, last: 0x8000_0FFF, gpa: 0x1000, perms: .read)))
        #expect(engine.checkInvariants() == [])
    }

    @Test func probeOnTheModel() throws {
        let t = try ModelTargets(pageTable: Self.x86Table)
        #expect(t.behaviour == KernelBehaviour(emptyUnmap: .noSuchEntry, copiesPartOfArea: true, mapFile: true))
    }

    @Test("an unmap that cuts a mapping answers wouldSplit and changes nothing")
    func wouldSplit() throws {
        let ram = try TestRAM(Self.layout)
        let t = try ModelTargets(pageTable: Self.x86Table)
        var engine = try Self.makeEngine(ram, t)
        let map = engine.apply(.map(iova: IOVA(0x10000), length: 4 * page, guestPhysical: GuestPhysicalAddress(0x2000), permissions: .readWrite))
        #expect(map.changes[0].status == .applied)
        let cut = engine.apply(.unmap(iova: IOVA(0x11000), length: page))
        #expect(cut.changes[0].refusal == .wouldSplit(try IOVARange(base: IOVA(0x10000), length: 4 * page)))
        #expect(t.unmapCalls == 0)
        #expect(t.areas(0, ram).count == 1)
        // Two requests side by side: an unmap covering one whole request and part of the other.
        _ = engine.apply(.map(iova: IOVA(0x14000), length: 2 * page, guestPhysical: GuestPhysicalAddress(0x6000), permissions: .read))
        #expect(engine.apply(.unmap(iova: IOVA(0x10000), length: 5 * page)).changes[0].status == .refused)
        #expect(engine.apply(.unmap(iova: IOVA(0x10000), length: 6 * page)).changes[0].unmaps == 1)
        #expect(t.unmapCalls == 2)
        #expect(engine.shadow.isEmpty)
    }

    @Test("one request across two regions: two areas, removed by one unmap")
    func coalescingWithinOneRequest() throws {
        let ram = try TestRAM(Self.layout)
        let t = try ModelTargets(pageTable: Self.x86Table)
        var engine = try Self.makeEngine(ram, t)
        // 0xF0000..0x10FFFF crosses the boundary of the first two regions.
        let r = engine.apply(.map(iova: IOVA(0x100000), length: 0x20000, guestPhysical: GuestPhysicalAddress(0xF0000), permissions: .readWrite))
        #expect(r.changes[0].maps == 2)
        #expect(t.areas(0, ram).count == 2)
        // Adjacent requests with contiguous memory stay separate areas (another unit).
        _ = engine.apply(.map(iova: IOVA(0x120000), length: page, guestPhysical: GuestPhysicalAddress(0x110000), permissions: .readWrite))
        #expect(t.areas(0, ram).count == 3)
        #expect(engine.apply(.unmap(iova: IOVA(0x100000), length: 0x20000)).changes[0].status == .applied)
        #expect(t.unmapCalls == 2)
        #expect(t.areas(0, ram).map(\.first) == [0x120000])
    }

    @Test("bad guest input: a typed answer per change, nothing mapped")
    func badInput() throws {
        let ram = try TestRAM(Self.layout)
        let t = try ModelTargets(pageTable: Self.x86Table)
        var engine = try Self.makeEngine(ram, t)
        let cases: [(MirrorChange, MirrorRefusal)] = [
            (.map(iova: IOVA(0x1800), length: page, guestPhysical: GuestPhysicalAddress(0), permissions: .read), .misaligned(granule: page)),
            (.map(iova: IOVA(0x1000), length: 0, guestPhysical: GuestPhysicalAddress(0), permissions: .read), .emptyRange),
            (.map(iova: IOVA(UInt64.max - page + 1), length: 2 * page, guestPhysical: GuestPhysicalAddress(0), permissions: .read), .overflow),
            (.map(iova: IOVA(0x1_0000_0000), length: page, guestPhysical: GuestPhysicalAddress(0), permissions: .read),
             .outsideSpace(try IOVARange(base: IOVA(0x1_0000_0000), length: page))),
            (.map(iova: IOVA(0x1000), length: 2 * page, guestPhysical: GuestPhysicalAddress(0x1FF000), permissions: .read),
             .outsideGuestMemory(GuestPhysicalAddress(0x200000))),
            (.map(iova: IOVA(0x1000), length: page, guestPhysical: GuestPhysicalAddress(0), permissions: .write),
             .permissionsNotExpressible(.write, target: 2)),
            (.map(iova: IOVA(0x1000), length: page, guestPhysical: GuestPhysicalAddress(0), permissions: .execute),
             .permissionsNotExpressible(.execute, target: nil)),
            (.invalidate(iova: IOVA(0), length: page), .wrongMode),
            (.removeRegion(base: GuestPhysicalAddress(0x3000)), .unknownRegion(GuestPhysicalAddress(0x3000))),
            (.addRegion(try MirrorMemoryRegion(guestPhysical: GuestPhysicalAddress(0x1F_F000), length: 2 * page, host: HostAddress(0x1_0000))),
             .regionOverlaps(GuestPhysicalAddress(1 << 20))),
        ]
        #expect(throws: MirrorRefusal.invalidRegion) {
            try MirrorMemoryRegion(guestPhysical: GuestPhysicalAddress(0), length: 0, host: HostAddress(0x1_0000))
        }
        #expect(throws: MirrorRefusal.invalidRegion) {
            try MirrorMemoryRegion(guestPhysical: GuestPhysicalAddress(0), length: 2 * page, host: HostAddress(UInt64.max - page))
        }
        var batch = MirrorBatch()
        for (c, _) in cases { batch.append(c) }
        var result = MirrorBatchResult()
        engine.apply(batch, into: &result)
        for (k, (_, refusal)) in cases.enumerated() {
            #expect(result.changes[k].status == .refused)
            #expect(result.changes[k].refusal == refusal)
        }
        // Overlap with a different mapping; the same request again is a no-op.
        _ = engine.apply(.map(iova: IOVA(0x1000), length: 2 * page, guestPhysical: GuestPhysicalAddress(0), permissions: .read))
        #expect(engine.apply(.map(iova: IOVA(0x2000), length: page, guestPhysical: GuestPhysicalAddress(0), permissions: .read)).changes[0].refusal
                == .overlapsExisting(try IOVARange(base: IOVA(0x1000), length: 2 * page)))
        #expect(engine.apply(.map(iova: IOVA(0x1000), length: 2 * page, guestPhysical: GuestPhysicalAddress(0), permissions: .read)).changes[0].status
                == .unchanged)
        #expect(engine.apply(.unmap(iova: IOVA(0x8000), length: page)).changes[0].status == .unchanged)
        #expect(t.mapCalls == 2)
        #expect(t.unmapCalls == 0)
        #expect(engine.metrics.changesRefused == cases.count + 1)
        #expect(engine.metrics.operationsElided == 2)
    }

    @Test("removing a region first takes its mappings out of every target; memfd regions use MAP_FILE")
    func regionRemoval() throws {
        let ram = try TestRAM(Self.layout, memfdLast: true)
        let t = try ModelTargets(pageTable: Self.x86Table)
        var engine = try Self.makeEngine(ram, t)
        var batch = MirrorBatch()
        batch.append(.map(iova: IOVA(0x1000), length: page, guestPhysical: GuestPhysicalAddress(0x1000), permissions: .read))
        batch.append(.map(iova: IOVA(0x2000), length: 2 * page, guestPhysical: GuestPhysicalAddress(0x400000), permissions: .readWrite))
        batch.append(.map(iova: IOVA(0x4000), length: page, guestPhysical: GuestPhysicalAddress(0x402000), permissions: .read))
        var result = MirrorBatchResult()
        engine.apply(batch, into: &result)
        #expect(t.model.ioctlCount(.ioasMapFile) == 4)
        let removal = engine.apply(.removeRegion(base: GuestPhysicalAddress(0x400000)))
        #expect(removal.changes[0].status == .applied && removal.changes[0].unmaps == 1)
        #expect(t.areas(0, ram).map(\.first) == [0x1000])
        #expect(engine.memory.regions.count == 2)
        #expect(engine.apply(.map(iova: IOVA(0x8000), length: page, guestPhysical: GuestPhysicalAddress(0x400000), permissions: .read))
            .changes[0].refusal == .outsideGuestMemory(GuestPhysicalAddress(0x400000)))
        #expect(engine.checkInvariants() == [])
    }

    @Test("a region added and a map into it roll back together when a later change fails")
    func rollbackRestoresRegions() throws {
        let ram = try TestRAM([(0, 1 << 20)])
        let extra = try TestRAM([(8 << 20, 1 << 20)])
        let t = try ModelTargets(pageTable: Self.x86Table)
        var engine = try Self.makeEngine(ram, t)
        var batch = MirrorBatch()
        batch.append(.addRegion(extra.ram.regions[0]))
        batch.append(.map(iova: IOVA(0x1000), length: page, guestPhysical: GuestPhysicalAddress(8 << 20), permissions: .read))
        batch.append(.map(iova: IOVA(0x2000), length: page, guestPhysical: GuestPhysicalAddress(0), permissions: .read))
        t.model.injectFailure(.noMemory, for: .ioasMap, count: 1)
        // Change 1 is the first map: it fails on ioas-a.
        var result = MirrorBatchResult()
        engine.apply(batch, into: &result)
        #expect(result.rolledBack)
        #expect(result.changes.map(\.status) == [.rolledBack, .failed, .notAttempted])
        #expect(result.targets[0].failure?.errno == .noMemory)
        #expect(result.application(ofChange: 1, onTarget: 0) == .none)
        #expect(engine.memory.regions.count == 1)
        #expect(t.areas(0, ram).isEmpty && t.areas(1, ram).isEmpty)
        #expect(engine.checkInvariants() == [])
    }
}

extension UInt64 { var asInt: Int { Int(self) } }
