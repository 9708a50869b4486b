// The mirror engine on this machine through ordo-one/benchmark, which counts what the plain
// benchmarks cannot see on their own: mallocs per iteration (its malloc interposer),
// beside wall-clock percentiles. Each benchmark has its bare counterpart in the same suite.
//
//   swift package --disable-sandbox benchmark --target EngineHost        (in Benchmarks/)
import Benchmark
import BenchGuests
import IOMMUFD
import IOMMUFDModel
import IOMMUMirror
import IOPageTables

let metrics: [BenchmarkMetric] = [.wallClock, .cpuUser, .mallocCountTotal]
let page: UInt64 = 4096

/// Request mode: one batch of 32 one-page maps and one of their 32 unmaps per iteration.
final class RequestStream: @unchecked Sendable {
    var engine: MirrorEngine
    var maps = MirrorBatch(capacity: 32), unmaps = MirrorBatch(capacity: 32)
    var result = MirrorBatchResult(capacity: 32)

    init(targets: [any MirrorTarget]) throws {
        var ram = GuestRAM()
        try ram.add(MirrorMemoryRegion(guestPhysical: GuestPhysicalAddress(0), length: 32 * page, host: HostAddress(0x7000_0000_0000)))
        engine = try MirrorEngine(mode: .requests, memory: ram, targets: targets,
                                  configuration: .init(space: try IOVARange(first: IOVA(0), last: IOVA((1 << 40) - 1)), shadowCapacity: 64))
        for k: UInt64 in 0..<32 {
            maps.append(.map(iova: IOVA(0x1000_0000 + k * page), length: page, guestPhysical: GuestPhysicalAddress(k * page), permissions: .readWrite))
            unmaps.append(.unmap(iova: IOVA(0x1000_0000 + k * page), length: page))
        }
    }

    func run() {
        engine.apply(maps, into: &result)
        engine.apply(unmaps, into: &result)
    }
}

/// The bare counterpart of a request stream: a dictionary shadow calling the same ioctls.
final class DictionaryStream: @unchecked Sendable {
    let iommufd: IOMMUFDContext
    let ioas: IOASID
    var shadow: [UInt64: UInt64] = [:]

    init(_ model: IOMMUFDModel) throws {
        iommufd = try IOMMUFDContext(kernel: model)
        ioas = try iommufd.allocateIOAS()
        shadow.reserveCapacity(64)
    }

    func run() throws {
        for k: UInt64 in 0..<32 {
            let iova = 0x1000_0000 + k * page
            _ = try iommufd.map(try HostRange(base: HostAddress(0x7000_0000_0000 + k * page), length: page), into: ioas, at: IOVA(iova))
            shadow[iova] = page
        }
        for k: UInt64 in 0..<32 {
            let iova = 0x1000_0000 + k * page
            _ = try iommufd.unmap(try IOVARange(base: IOVA(iova), length: page), from: ioas)
            shadow[iova] = nil
        }
    }
}

/// Page-table mode: an unchanged resync of a guest table (the diff), against its bare walk.
final class TableResync: @unchecked Sendable {
    let guest: SyntheticGuest
    var engine: MirrorEngine
    var batch = MirrorBatch(capacity: 1)
    var result = MirrorBatchResult(capacity: 1)

    init(leaves: Int, contiguous: Bool) throws {
        guest = try SyntheticGuest(leaves: leaves, contiguous: contiguous, dataHost: 0x7000_0000_0000)
        engine = try MirrorEngine(mode: .pageTable(guest.format, root: guest.root), memory: guest.ram, targets: [NullTarget()],
                                  configuration: .init(space: guest.space, shadowCapacity: contiguous ? 16 : leaves + 16))
        batch.append(.resync)
        engine.apply(batch, into: &result)
    }

    func resync() { engine.apply(batch, into: &result) }

    func walk() -> Int {
        var runs = 0
        _ = try? guest.walker.visitRuns { (_: TranslationRun) throws(Never) -> WalkControl in runs += 1; return .continue }
        return runs
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: metrics, maxDuration: .seconds(2), maxIterations: 100_000)

    // What the harness itself counts per sample (its own mallocs), to subtract from the rest.
    Benchmark("baseline: empty iteration") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(0) }
    }

    let null = try! RequestStream(targets: [NullTarget()])
    Benchmark("request mode, 64 changes, null target") { benchmark in
        for _ in benchmark.scaledIterations { null.run() }
    }
    let model = IOMMUFDModel(.init(pageSize: 4096, tracing: false))
    let shared = SharedIOMMUFDContext(try! IOMMUFDContext(kernel: model))
    let ioas = try! shared.iommufd.allocateIOAS()
    let onModel = try! RequestStream(targets: [try! IOASTarget(name: "m", context: shared, ioas: ioas, behaviour: try! KernelBehaviour.probe(shared.iommufd))])
    Benchmark("request mode, 64 changes, model IOAS") { benchmark in
        for _ in benchmark.scaledIterations { onModel.run() }
    }
    let bare = try! DictionaryStream(IOMMUFDModel(.init(pageSize: 4096, tracing: false)))
    Benchmark("baseline: dictionary shadow, 64 changes, model IOAS") { benchmark in
        for _ in benchmark.scaledIterations { try bare.run() }
    }
    for contiguous in [true, false] {
        let shape = contiguous ? "contiguous" : "scattered"
        let table = try! TableResync(leaves: 1 << 18, contiguous: contiguous)
        Benchmark("page-table mode, unchanged resync, 2^18 leaves, \(shape)", configuration: .init(metrics: metrics, maxIterations: 200)) { benchmark in
            for _ in benchmark.scaledIterations { table.resync() }
        }
        Benchmark("baseline: bare walk by runs, 2^18 leaves, \(shape)", configuration: .init(metrics: metrics, maxIterations: 200)) { benchmark in
            for _ in benchmark.scaledIterations { blackHole(table.walk()) }
        }
    }
}
