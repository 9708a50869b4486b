#if canImport(Glibc)
import Glibc
#endif
import IOMMUFD
import IOMMUFDModel
import IOMMUMirror
import IOPageTables
import TestSupport
import Testing

/// A seeded random stream of guest changes, with the test's own reference of what every target
/// must hold: request mode (maps, duplicate maps, unmaps of whole and cut mappings, overlapping
/// and adjacent ranges, bad ranges, region removal and return) or page-table mode (leaves mapped,
/// unmapped and remapped in the guest's table and invalidated, sometimes more widely, resyncs,
/// root switches between two tables, region removal and return).
struct SoakStream<Format: PageTableFormat> {
    typealias Builder = PageTableBuilder<Format, MutableGuestMemoryBuffer, BumpTableAllocator>
    static var windowPages: Int { 128 }
    let base: UInt64
    let ram: TaggedRAM
    var rng: SplitMix64
    /// Request mode: the units (one per applied map) by first page; page -> unit's first page.
    var units: [Int: Expected] = [:]
    var owner: [Int: Int] = [:]
    /// Page-table mode: the two tables, their leaves (page -> translation), the current one.
    var tables: [Builder] = []
    var leaves: [[Int: PageTranslation]] = [[:], [:]]
    var current = 0
    var region1Present = true
    /// Guest changes made (requests, or leaf edits plus the changes that announce them).
    var guestChanges = 0

    init(seed: UInt64, base: UInt64, ram: TaggedRAM, format: Format?) throws {
        rng = SplitMix64(seed: seed)
        self.base = base
        self.ram = ram
        if let format {
            ram.clearTables()
            // Each table gets its own half of the table pages.
            let (memory, _) = ram.tableMemory()
            let first = UInt64(ram.firstTablePage * page), half = UInt64((ram.regions[0].pages - ram.firstTablePage) / 2 * page)
            func allocator(_ k: UInt64) -> BumpTableAllocator {
                BumpTableAllocator(range: try! GuestPhysicalRange(first: GuestPhysicalAddress(first + k * half), last: GuestPhysicalAddress(first + (k + 1) * half - 1)))
            }
            tables = [try Builder(format: format, memory: memory, allocator: allocator(0)),
                      try Builder(format: format, memory: memory, allocator: allocator(1))]
        }
    }

    func iova(_ p: Int) -> UInt64 { base + UInt64(p * page) }
    mutating func below(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
    mutating func chance(_ percent: Int) -> Bool { below(100) < percent }

    /// A guest-physical run of `n` data pages: in region 0 or 1, or (rarely) not RAM at all.
    mutating func guestRun(_ n: Int) -> UInt64 {
        if chance(3) { return 0x8_0000 + UInt64(below(16) * page) }   // the hole between the regions
        if chance(50) {
            return ram.gpa(0, below(ram.firstTablePage - n + 1))
        }
        return ram.gpa(1, below(ram.regions[1].pages - n + 1))
    }

    func inRAM(_ gpa: UInt64) -> Bool {
        ram.regions.enumerated().contains { k, r in r.contains(gpa) && (k == 0 || region1Present) }
    }

    // MARK: Request mode

    /// The next batch, and per change the status the reference expects.
    mutating func requestBatch(into batch: inout MirrorBatch, expecting statuses: inout [MirrorChangeOutcome.Status]) {
        batch.removeAll()
        statuses.removeAll()
        for _ in 0..<(1 + below(8)) {
            guestChanges += 1
            let roll = below(100)
            if roll < 50 {
                let n = 1 + below(8)
                let p = below(Self.windowPages - n + 1)
                let e: Expected
                if chance(10), !units.isEmpty {
                    let existing = units[units.keys.sorted()[below(units.count)]]!
                    e = existing   // the same request again
                } else {
                    e = Expected(iova: iova(p), pages: n, gpa: guestRun(n), writable: chance(70))
                }
                batch.append(e.change)
                let first = Int((e.iova - base) / UInt64(page))
                let pages = first..<(first + e.pages)
                if !(0..<e.pages).allSatisfy({ inRAM(e.gpa + UInt64($0 * page)) }) {
                    statuses.append(.refused)
                } else if pages.contains(where: { owner[$0] != nil }) {
                    statuses.append(units[first] == e ? .unchanged : .refused)
                } else {
                    units[first] = e
                    for q in pages { owner[q] = first }
                    statuses.append(.applied)
                }
            } else if roll < 85 {
                // A whole unit, a span of several (adjacent or not), or any range (may cut).
                let p: Int, n: Int
                if chance(50), !units.isEmpty {
                    let u = units[units.keys.sorted()[below(units.count)]]!
                    p = Int((u.iova - base) / UInt64(page))
                    n = u.pages + (chance(30) ? below(16) : 0)
                } else {
                    p = below(Self.windowPages)
                    n = 1 + below(24)
                }
                let pages = p..<min(p + n, Self.windowPages)
                batch.append(.unmap(iova: IOVA(iova(p)), length: UInt64(pages.count * page)))
                let hit = Set(pages.compactMap { owner[$0] })
                if hit.isEmpty {
                    statuses.append(.unchanged)
                } else if hit.contains(where: { u in !(u..<(u + units[u]!.pages)).allSatisfy(pages.contains) }) {
                    statuses.append(.refused)
                } else {
                    for u in hit { remove(unit: u) }
                    statuses.append(.applied)
                }
            } else if roll < 90 {
                regionChange(&batch, &statuses)
            } else {
                // Bad input: an empty, misaligned, overflowing or outside range.
                switch below(4) {
                case 0: batch.append(.map(iova: IOVA(iova(0)), length: 0, guestPhysical: GuestPhysicalAddress(0), permissions: .read))
                case 1: batch.append(.map(iova: IOVA(iova(1) + 512), length: UInt64(page), guestPhysical: GuestPhysicalAddress(0), permissions: .read))
                case 2: batch.append(.unmap(iova: IOVA(UInt64.max - UInt64(page) + 1), length: UInt64(2 * page)))
                default: batch.append(.map(iova: IOVA(iova(Self.windowPages)), length: UInt64(page), guestPhysical: GuestPhysicalAddress(0), permissions: .readWrite))
                }
                statuses.append(.refused)
            }
        }
    }

    mutating func remove(unit u: Int) {
        let e = units.removeValue(forKey: u)!
        for q in u..<(u + e.pages) { owner[q] = nil }
    }

    /// Region 1 goes (its mappings leave every target first) or comes back.
    mutating func regionChange(_ batch: inout MirrorBatch, _ statuses: inout [MirrorChangeOutcome.Status]) {
        if region1Present {
            batch.append(.removeRegion(base: GuestPhysicalAddress(ram.regions[1].gpa)))
            for u in units.keys.sorted() where ram.regions[1].contains(units[u]!.gpa) { remove(unit: u) }
            region1Present = false
        } else {
            batch.append(.addRegion(try! ram.region(1)))
            region1Present = true
        }
        statuses.append(.applied)
    }

    /// What the targets must hold now, request mode.
    var requestView: PageMap { pageMap(Array(units.values)) }

    // MARK: Page-table mode

    /// Edits the guest's tables and fills `batch` with the changes that announce the edits.
    mutating func tableBatch(into batch: inout MirrorBatch) throws {
        batch.removeAll()
        let roll = below(100)
        if roll < 75 {
            for _ in 0..<(1 + below(6)) {
                let n = 1 + below(6)
                let p = below(Self.windowPages - n + 1)
                if chance(35) {
                    for q in p..<(p + n) where leaves[current][q] != nil {
                        _ = try tables[current].unmap(range(iova(q), page))
                        leaves[current][q] = nil
                    }
                } else {
                    try mapLeaves(p, n, table: current)   // a map, or a remap of what is there
                }
                guestChanges += 1
                // The invalidation covers the edit, sometimes more.
                let lo = chance(30) ? max(0, p - below(8)) : p
                let hi = chance(30) ? min(Self.windowPages, p + n + below(8)) : p + n
                batch.append(.invalidate(iova: IOVA(iova(lo)), length: UInt64((hi - lo) * page)))
            }
        } else if roll < 85 {
            // The guest fills the other table a little and switches to it.
            let other = 1 - current
            for _ in 0..<below(4) {
                let n = 1 + below(6)
                try mapLeaves(below(Self.windowPages - n + 1), n, table: other)
            }
            current = other
            guestChanges += 1
            batch.append(.setRoot(tables[current].root))
        } else if roll < 92 {
            guestChanges += 1
            var statuses: [MirrorChangeOutcome.Status] = []
            regionChange(&batch, &statuses)
            if region1Present { batch.append(.resync) }   // back: the leaves into it map again
        } else {
            guestChanges += 1
            batch.append(.resync)
        }
    }

    mutating func mapLeaves(_ p: Int, _ n: Int, table t: Int) throws {
        let gpa = guestRun(n)
        let writable = chance(70)
        for k in 0..<n {
            let q = p + k
            if leaves[t][q] != nil { _ = try tables[t].unmap(range(iova(q), page)) }
            let g = gpa + UInt64(k * page)
            try tables[t].map(IOVA(iova(q)), to: GuestPhysicalAddress(g), size: .size4K, permissions: writable ? .readWrite : .read)
            leaves[t][q] = PageTranslation(gpa: g, writable: writable)
        }
    }

    /// What the targets must hold now, page-table mode: the current table's leaves into RAM.
    var tableView: PageMap {
        var out: PageMap = [:]
        for (q, t) in leaves[current] where inRAM(t.gpa) { out[iova(q)] = t }
        return out
    }
}

extension SoakStream {
    /// Makes the stream's next batch, applies it and records in `totals` a target's failure and
    /// (request mode) every answer that differs from the reference's.
    mutating func step(_ name: String, _ b: Int, _ engine: inout MirrorEngine, _ batch: inout MirrorBatch,
                       _ result: inout MirrorBatchResult, _ statuses: inout [MirrorChangeOutcome.Status],
                       _ totals: inout SoakKernelTests.Totals) throws {
        let requests = tables.isEmpty
        if requests { requestBatch(into: &batch, expecting: &statuses) } else { try tableBatch(into: &batch) }
        engine.apply(batch, into: &result)
        totals.engineChanges += batch.count
        if result.targets.contains(where: { $0.failure != nil }) {
            totals.diverged(["\(name) batch \(b): a target failed: \(result.targets.compactMap(\.failure))"])
        }
        guard requests else { return }
        for (c, s) in statuses.enumerated() where result.changes[c].status != s {
            totals.diverged(["\(name) batch \(b) change \(c) \(batch.changes[c]): \(result.changes[c].status), the reference \(s)"])
        }
    }
}

/// The soak on the real kernel: the engine mirrors the stream into a mock-domain IOAS, a second
/// IOAS filled by `IOMMU_IOAS_COPY` from it, and a host AMD v1 table; every few batches the
/// kernel's view of both IOAS (access reads, `MD_CHECK_MAP`, `MD_CHECK_REFS`) is compared with
/// the reference and with what the engine says, and the engine's invariants are checked.
/// `SWIFT_IOMMUFD_SOAK_BATCHES` sets the batches per stream (CI: the default);
/// `SWIFT_IOMMUFD_SOAK_CHANGES=N` instead runs each stream until it has made N guest changes, and
/// `SWIFT_IOMMUFD_SOAK_CHECK_EVERY=K` checks every K batches (default 5): the long run in the VM
/// (README, Reliability).
@Suite(.serialized, .enabled(if: KernelTier.enabled, "needs /dev/iommu"))
struct SoakKernelTests {
    static let base: UInt64 = 1 << 24
    static var window: IOVARange { range(base, SoakStream<VTdSecondStage>.windowPages * page) }
    static func setting(_ name: String) -> Int? { getenv(name).flatMap { Int(String(cString: $0)) } }
    static var batches: Int { setting("SWIFT_IOMMUFD_SOAK_BATCHES") ?? 150 }
    static var changes: Int? { setting("SWIFT_IOMMUFD_SOAK_CHANGES") }
    static var checkEvery: Int { max(1, setting("SWIFT_IOMMUFD_SOAK_CHECK_EVERY") ?? 5) }

    struct Totals {
        var guestChanges = 0, engineChanges = 0, checks = 0, kernelChecks = 0, divergences = 0
        var notes: [String] = []
        mutating func diverged(_ what: [String]) {
            divergences += what.count
            if notes.count < 10 { notes += what.prefix(10 - notes.count) }
        }
    }

    /// Runs one stream (`format` nil: request mode) for `batches` batches, or until it has made
    /// `changes` guest changes; returns its totals.
    static func soak<F: PageTableFormat>(_ name: String, _ format: F?, seed: UInt64, batches: Int, changes: Int? = nil) throws -> Totals {
        let shared = SharedIOMMUFDContext(try IOMMUFDContext())
        let fd = shared
        let behaviour = try KernelBehaviour.probe(fd.iommufd)
        let ram = try TaggedRAM(pages0: 96, tablePages: 32, pages1: 64)
        var stream = try SoakStream<F>(seed: seed, base: base, ram: ram, format: format)
        let rig = try KernelRig(fd, behaviour: behaviour, second: "copy", fanOut: .copy)
        let targets = rig.targets
        let mode: MirrorEngine.Mode = format.map { .pageTable($0, root: stream.tables[0].root) } ?? .requests
        var engine = try MirrorEngine(mode: mode, memory: try ram.ram(), targets: targets, configuration: .init(space: window))
        var batch = MirrorBatch()
        var result = MirrorBatchResult()
        var statuses: [MirrorChangeOutcome.Status] = []
        var totals = Totals()
        let start = monotonicSeconds()
        let checkEvery = Self.checkEvery
        var b = 0
        func last() -> Bool { changes.map { stream.guestChanges >= $0 } ?? (b == batches - 1) }
        while changes.map({ stream.guestChanges < $0 }) ?? (b < batches) {
            defer { b += 1 }
            try stream.step(name, b, &engine, &batch, &result, &statuses, &totals)
            guard b % checkEvery == checkEvery - 1 || last() else { continue }
            totals.checks += 1
            let expected = format == nil ? stream.requestView : stream.tableView
            var problems: [String] = []
            let views = rig.views(fd.iommufd, window: window, ram: ram, checks: &totals.kernelChecks, problems: &problems)
            for t in 0..<2 {
                problems += differences(views[t], expected, "kernel", "reference").map { "\(targets[t].name): \($0)" }
                problems += differences(views[t], pageMap(engine.targetShadows[t]), "kernel", "engine").map { "\(targets[t].name): \($0)" }
            }
            problems += engine.checkInvariants().map { "invariant: \($0)" }
            problems += pinProblems(fd.iommufd, ram: ram, mapped: [views[0]], checks: &totals.kernelChecks)
            totals.diverged(problems.map { "\(name) batch \(b): \($0)" })
            if totals.divergences > 50 { break }
        }
        let seconds = monotonicSeconds() - start
        totals.guestChanges = stream.guestChanges
        print("soak \(name) (seed \(seed)): \(b) batches, \(totals.guestChanges) guest changes, \(totals.engineChanges) engine changes, \(totals.checks) checks against the kernel (\(totals.kernelChecks) kernel calls), divergences \(totals.divergences), \(String(format2: seconds)) s, \(Int(Double(totals.guestChanges) / max(seconds, 1e-9))) guest changes/s")
        try rig.tearDown(fd.iommufd)
        return totals
    }

    @Test func seededStreamsAgainstTheKernelAndAReference() throws {
        var all = Totals()
        let seed = getenv("SWIFT_IOMMUFD_SOAK_SEED").flatMap { UInt64(String(cString: $0)) } ?? 0x5EED
        let n = Self.batches, c = Self.changes
        let streams: [(String, () throws -> Totals)] = [
            ("requests", { try Self.soak("requests", VTdSecondStage?.none, seed: seed, batches: n, changes: c) }),
            ("vtd-second-stage", { try Self.soak("vtd-second-stage", try VTdSecondStage(levels: 4), seed: seed + 1, batches: n, changes: c) }),
            ("x86-64", { try Self.soak("x86-64", try X86FirstStage(levels: 4), seed: seed + 2, batches: n, changes: c) }),
            ("amd-v1", { try Self.soak("amd-v1", try AMDv1(levels: 3), seed: seed + 3, batches: n, changes: c) }),
            ("arm-stage2-4k", { try Self.soak("arm-stage2-4k", try ArmVMSAv8(stage: .stage2), seed: seed + 4, batches: n, changes: c) }),
        ]
        let start = monotonicSeconds()
        for (name, run) in streams {
            let t = try run()
            #expect(t.divergences == 0, "\(name): \(t.notes)")
            #expect(t.checks > 0)
            all.guestChanges += t.guestChanges; all.engineChanges += t.engineChanges
            all.checks += t.checks; all.kernelChecks += t.kernelChecks; all.divergences += t.divergences
        }
        let seconds = monotonicSeconds() - start
        print("soak: \(streams.count) streams, \(all.guestChanges) guest changes applied, \(all.checks) checks against the kernel and the reference (\(all.kernelChecks) kernel calls), divergences \(all.divergences), \(String(format2: seconds)) s")
    }
}

extension String {
    /// `x` with two decimals.
    init(format2 x: Double) {
        let hundredths = Int((x * 100).rounded())
        let frac = abs(hundredths % 100)
        self = "\(hundredths / 100).\(frac < 10 ? "0" : "")\(frac)"
    }
}

/// The same streams through the engine into `IOMMUFDModel` (two IOAS, one filled by copy, and a
/// host AMD v1 table), checked every few batches against the model's own areas, the reference
/// and the engine's invariants. It runs wherever the test bundle runs (a short slice in the
/// kernel tier); `SWIFT_IOMMUFD_SOAK_MODEL_CHANGES=N` runs each stream until it has made N guest
/// changes (the long run on a host: README, Reliability).
@Suite(.serialized)
struct ModelSoakTests {
    static var changes: Int { getenv("SWIFT_IOMMUFD_SOAK_MODEL_CHANGES").flatMap { Int(String(cString: $0)) } ?? 300 }
    static let checkEvery = 20

    /// The model's areas of `ioas` as pages.
    static func modelView(_ model: IOMMUFDModel, _ ioas: IOASID, _ fd: CInt, _ ram: TaggedRAM) -> PageMap {
        var out: PageMap = [:]
        for a in model.areas(of: ioas, in: fd) ?? [] {
            let gpa: UInt64
            switch a.source {
            case .user(let host):
                guard let r = ram.regions.first(where: { UInt(bitPattern: $0.base) <= UInt(host.rawValue) && UInt(host.rawValue) < UInt(bitPattern: $0.base) + UInt($0.bytes) }) else {
                    out[a.iova.first.rawValue] = PageTranslation(gpa: .max, writable: a.writable)
                    continue
                }
                gpa = r.gpa + (host.rawValue - UInt64(UInt(bitPattern: r.base)))
            case .file(_, let offset):
                gpa = ram.regions[1].gpa + offset
            }
            let n = (a.iova.last.rawValue - a.iova.first.rawValue + 1) / UInt64(page)
            for p in 0..<n { out[a.iova.first.rawValue + p * UInt64(page)] = PageTranslation(gpa: gpa + p * UInt64(page), writable: a.writable) }
        }
        return out
    }

    static func soak<F: PageTableFormat>(_ name: String, _ format: F?, seed: UInt64, changes: Int) throws -> SoakKernelTests.Totals {
        let model = IOMMUFDModel(.init(pageSize: UInt64(page), tracing: false))
        let shared = SharedIOMMUFDContext(try IOMMUFDContext(kernel: model))
        let behaviour = try KernelBehaviour.probe(shared.iommufd)
        let ram = try TaggedRAM(pages0: 96, tablePages: 32, pages1: 64)
        var stream = try SoakStream<F>(seed: seed, base: SoakKernelTests.base, ram: ram, format: format)
        let a = try shared.iommufd.allocateIOAS(), bIOAS = try shared.iommufd.allocateIOAS()
        let targets: [any MirrorTarget] = [
            try IOASTarget(name: "model-a", context: shared, ioas: a, behaviour: behaviour),
            try IOASTarget(name: "model-b", context: shared, ioas: bIOAS, behaviour: behaviour, fanOut: .copy),
            try PageTableTarget(name: "amdv1", format: try AMDv1(levels: 4)),
        ]
        let mode: MirrorEngine.Mode = format.map { .pageTable($0, root: stream.tables[0].root) } ?? .requests
        var engine = try MirrorEngine(mode: mode, memory: try ram.ram(), targets: targets, configuration: .init(space: SoakKernelTests.window))
        var batch = MirrorBatch(), result = MirrorBatchResult()
        var statuses: [MirrorChangeOutcome.Status] = []
        var totals = SoakKernelTests.Totals()
        let start = monotonicSeconds()
        var b = 0
        while stream.guestChanges < changes && totals.divergences <= 50 {
            try stream.step(name, b, &engine, &batch, &result, &statuses, &totals)
            b += 1
            guard b % checkEvery == 0 || stream.guestChanges >= changes else { continue }
            totals.checks += 1
            let expected = format == nil ? stream.requestView : stream.tableView
            var problems: [String] = []
            for (t, ioas) in [(0, a), (1, bIOAS)] {
                let view = modelView(model, ioas, shared.iommufd.descriptor, ram)
                problems += differences(view, expected, "model", "reference").map { "\(targets[t].name): \($0)" }
                problems += differences(view, pageMap(engine.targetShadows[t]), "model", "engine").map { "\(targets[t].name): \($0)" }
            }
            problems += engine.checkInvariants().map { "invariant: \($0)" }
            totals.diverged(problems.map { "\(name) batch \(b): \($0)" })
        }
        let seconds = monotonicSeconds() - start
        totals.guestChanges = stream.guestChanges
        print("model soak \(name) (seed \(seed)): \(b) batches, \(totals.guestChanges) guest changes, \(totals.engineChanges) engine changes, \(totals.checks) checks, divergences \(totals.divergences), \(String(format2: seconds)) s, \(Int(Double(totals.guestChanges) / max(seconds, 1e-9))) guest changes/s")
        return totals
    }

    @Test func seededStreamsIntoTheModel() throws {
        let seed = getenv("SWIFT_IOMMUFD_SOAK_SEED").flatMap { UInt64(String(cString: $0)) } ?? 0x5EED
        let n = Self.changes
        var all = SoakKernelTests.Totals()
        let start = monotonicSeconds()
        for t in [try Self.soak("requests", VTdSecondStage?.none, seed: seed, changes: n),
                  try Self.soak("vtd-second-stage", try VTdSecondStage(levels: 4), seed: seed + 1, changes: n),
                  try Self.soak("x86-64", try X86FirstStage(levels: 4), seed: seed + 2, changes: n),
                  try Self.soak("amd-v1", try AMDv1(levels: 3), seed: seed + 3, changes: n),
                  try Self.soak("arm-stage2-4k", try ArmVMSAv8(stage: .stage2), seed: seed + 4, changes: n)] {
            #expect(t.divergences == 0, "\(t.notes)")
            all.guestChanges += t.guestChanges; all.engineChanges += t.engineChanges; all.checks += t.checks; all.divergences += t.divergences
        }
        print("model soak: 5 streams, \(all.guestChanges) guest changes applied, \(all.checks) checks against the model and the reference, divergences \(all.divergences), \(String(format2: monotonicSeconds() - start)) s")
    }
}
