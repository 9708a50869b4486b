// Page-table mode at scale: a guest VT-d second-stage table of N 4 KiB leaves synced by the
// engine, against a bare walk of the same table (runs and leaves) and the per-leaf mirror a
// VMM does today (one map per guest leaf), all in the same run.
import BenchGuests
import BenchRecord
import Glibc
import IOMMUFD
import IOMMUMirror
import IOPageTables

/// The median of `reps` timings of `body` (seconds); `setUp` runs before each, untimed.
func medianTime(_ reps: Int, setUp: () throws -> Void = {}, _ body: () throws -> Void) rethrows -> Double {
    var times: [Double] = []
    for _ in 0..<reps {
        try setUp()
        let t0 = now()
        try body()
        times.append(now() - t0)
    }
    return times.sorted()[reps / 2]
}

func ns(_ seconds: Double, per n: Int) -> String {
    let v = seconds / Double(n) * 1e9
    return v < 10 ? String(format: "%.2f", v) : String(format: "%.1f", v)
}

/// The engine's first sync and an unchanged resync of one guest into `targets` null targets,
/// beside the bare walks and the per-leaf mirror.
func tableSync(leaves: Int, contiguous: Bool, reps: Int) throws {
    let guest = try SyntheticGuest(leaves: leaves, contiguous: contiguous, dataHost: 0x7000_0000_0000)
    let shape = contiguous ? "contiguous" : "scattered"
    let label = "\(leaves) leaves, \(shape)"
    let walker = guest.walker

    var runs = 0
    let runWalk = try medianTime(reps) {
        runs = 0
        try walker.visitRuns { (_: TranslationRun) throws(Never) -> WalkControl in runs += 1; return .continue }
    }
    var seen = 0
    let leafWalk = try medianTime(reps) {
        seen = 0
        try walker.visitLeaves { (_: LeafExtent) throws(Never) -> WalkControl in seen += 1; return .continue }
    }
    precondition(seen == leaves)

    // The per-leaf mirror: one map call per guest leaf into a null target.
    let perLeafTarget = NullTarget()
    let perLeaf = try medianTime(reps) {
        try walker.visitLeaves { (l: LeafExtent) throws(Never) -> WalkControl in
            perLeafTarget.map(MirrorMapping(iova: l.input, guestPhysical: l.output, host: guest.ram.regions[1].host(of: l.output),
                                            file: nil, permissions: .readWrite, copySource: nil))
            return .continue
        }
    }

    print("\(label): bare walk by runs \(ns(runWalk, per: leaves)) ns/leaf (\(runs) runs), by leaves \(ns(leafWalk, per: leaves)) ns/leaf; per-leaf mirror \(ns(perLeaf, per: leaves)) ns/leaf, \(leaves) map calls")
    record(suite: "engine-table", case: "\(label): bare walk by leaves", value: leafWalk / Double(leaves) * 1e9, unit: "ns/leaf",
           baseline: "bare walk by runs", baselineValue: runWalk / Double(leaves) * 1e9)

    // The strict policy: one area per guest leaf, whatever the coalescing could merge.
    var strictEngine: MirrorEngine? = nil
    let strictTarget = NullTarget()
    var strictResult = MirrorBatchResult(capacity: 1)
    var strictBatch = MirrorBatch(capacity: 1)
    strictBatch.append(.resync)
    let strict = try medianTime(reps, setUp: {
        strictEngine = nil
        strictEngine = try MirrorEngine(mode: .pageTable(guest.format, root: guest.root), memory: guest.ram, targets: [strictTarget],
                                        configuration: .init(space: guest.space, coalescing: .strict, shadowCapacity: leaves + 16))
    }) {
        strictEngine!.apply(strictBatch, into: &strictResult)
    }
    let strictCalls = strictEngine!.metrics.targets[0].maps
    strictEngine = nil
    print("  engine, strict policy, 1 null target: first sync \(ns(strict, per: leaves)) ns/leaf, \(strictCalls) map calls")
    record(suite: "engine-table", case: "\(label): first sync, strict policy", value: strict / Double(leaves) * 1e9, unit: "ns/leaf",
           baseline: "bare walk by leaves", baselineValue: leafWalk / Double(leaves) * 1e9)

    var one = 0.0
    for targetCount in [1, 2] {
        var engine: MirrorEngine? = nil
        var targets: [NullTarget] = []
        var result = MirrorBatchResult(capacity: 1)
        var batch = MirrorBatch(capacity: 1)
        batch.append(.resync)
        let first = try medianTime(reps, setUp: {
            targets = (0..<targetCount).map { NullTarget(name: "null\($0)") }
            engine = nil
            engine = try MirrorEngine(mode: .pageTable(guest.format, root: guest.root), memory: guest.ram, targets: targets,
                                      configuration: .init(space: guest.space, shadowCapacity: contiguous ? 16 : leaves + 16))
        }) {
            engine!.apply(batch, into: &result)
        }
        precondition(result.changes[0].status == .applied)
        let calls = targets[0].calls.maps
        precondition(calls == runs, "one map per maximal run: \(calls) vs \(runs)")
        let again = try medianTime(reps) { engine!.apply(batch, into: &result) }
        precondition(result.changes[0].status == .unchanged && targets[0].calls.maps == calls)
        if targetCount == 1 { one = first }
        let ratioRuns = first / runWalk, ratioLeaves = first / leafWalk
        print("  engine, \(targetCount) null target\(targetCount == 1 ? "" : "s"): first sync \(ns(first, per: leaves)) ns/leaf, \(calls) map calls per target"
              + String(format: " (%.2fx the walk by runs, %.2fx by leaves, %.3fx the per-leaf mirror", ratioRuns, ratioLeaves, first / perLeaf)
              + (targetCount == 2 ? String(format: "; %.2fx one target)", first / one) : ")")
              + "; unchanged resync \(ns(again, per: leaves)) ns/leaf" + String(format: " (%.2fx the walk by runs)", again / runWalk))
        let suffix = targetCount == 1 ? "1 target" : "2 targets"
        record(suite: "engine-table", case: "\(label): first sync, \(suffix)", value: first / Double(leaves) * 1e9, unit: "ns/leaf",
               baseline: "bare walk by runs", baselineValue: runWalk / Double(leaves) * 1e9)
        record(suite: "engine-table", case: "\(label): first sync, \(suffix), vs per-leaf mirror", value: first / Double(leaves) * 1e9,
               unit: "ns/leaf", baseline: "per-leaf mirror", baselineValue: perLeaf / Double(leaves) * 1e9)
        record(suite: "engine-table", case: "\(label): unchanged resync, \(suffix)", value: again / Double(leaves) * 1e9, unit: "ns/leaf",
               baseline: "bare walk by runs", baselineValue: runWalk / Double(leaves) * 1e9)
        record(suite: "engine-table", case: "\(label): map calls, \(suffix)", value: Double(calls), unit: "calls",
               baseline: "per-leaf mirror", baselineValue: Double(leaves))
        if targetCount == 2 {
            record(suite: "engine-table", case: "\(label): two targets against one", value: first / Double(leaves) * 1e9, unit: "ns/leaf",
                   baseline: "one target", baselineValue: one / Double(leaves) * 1e9)
        }
    }
}

/// In the VM: a contiguous guest of `leaves` 4 KiB leaves (real memory) synced by the engine
/// into a kernel IOAS, against the per-leaf mirror (one `IOMMU_IOAS_MAP` per guest leaf),
/// with and without a mock domain (which pins and fills an IO page table).
func kernelTableSync(_ context: SharedIOMMUFDContext, leaves: Int) throws {
    let behaviour = try KernelBehaviour.probe(context.iommufd)
    let bytes = leaves * 4096
    guard let data = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0), data != MAP_FAILED else {
        print("kernel table sync: no \(bytes >> 20) MiB of memory for the guest"); return
    }
    defer { munmap(data, bytes) }
    let host = UInt64(UInt(bitPattern: data))
    let guest = try SyntheticGuest(leaves: leaves, contiguous: true, dataHost: host)
    for withDomain in [false, true] {
        let setting = withDomain ? "mock domain" : "no domain"
        let ioas = try context.iommufd.allocateIOAS()
        if withDomain { _ = try context.iommufd.addMockDevice(to: PageTableID(ioas)) }
        let target = try IOASTarget(name: "ioas", context: context, ioas: ioas, behaviour: behaviour)
        var engine = try MirrorEngine(mode: .pageTable(guest.format, root: guest.root), memory: guest.ram, targets: [target],
                                      configuration: .init(space: guest.space))
        let t0 = now()
        let r = engine.apply(.resync)
        let engineTime = now() - t0
        precondition(r.changes[0].status == .applied, "\(r.changes[0]) \(r.targets[0])")
        let engineCalls = engine.metrics.targets[0].calls
        _ = try context.iommufd.unmapAll(from: ioas)

        var calls = 0
        var failure: (any Error)?
        let t1 = now()
        try guest.walker.visitLeaves { (l: LeafExtent) throws(Never) -> WalkControl in
            do {
                _ = try context.iommufd.map(try! HostRange(base: guest.ram.regions[1].host(of: l.output), length: l.size.bytes), into: ioas, at: l.input.first)
            } catch {
                failure = error
                return .stop
            }
            calls += 1
            return .continue
        }
        let perLeafTime = now() - t1
        if let failure { print("per-leaf mirror stopped after \(calls) maps: \(failure)") }
        _ = try context.iommufd.unmapAll(from: ioas)
        let mib = bytes >> 20
        print("kernel, \(mib) MiB contiguous guest in 4 KiB leaves, \(setting): engine \(engineCalls) ioctl, "
              + String(format: "%.1f ms", engineTime * 1e3) + "; per-leaf mirror \(calls) ioctls, "
              + String(format: "%.1f ms (engine %.4fx its time)", perLeafTime * 1e3, engineTime / perLeafTime))
        record(suite: "engine-kernel", case: "\(mib) MiB contiguous guest, 4 KiB leaves, \(setting): time", value: engineTime * 1e3, unit: "ms",
               baseline: "per-leaf mirror", baselineValue: perLeafTime * 1e3)
        record(suite: "engine-kernel", case: "\(mib) MiB contiguous guest, 4 KiB leaves, \(setting): ioctls", value: Double(engineCalls),
               unit: "ioctls", baseline: "per-leaf mirror", baselineValue: Double(calls))
    }
}
