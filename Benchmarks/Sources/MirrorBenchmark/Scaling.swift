// Thread scaling on the null target: T threads, each with its own MirrorEngine (request mode,
// one NullTarget, its own GuestRAM region at a fake host address: the null target touches no
// memory), each applying the same number of 4 KiB map-then-unmap changes in batches of 32.
// All threads start behind one barrier; the T = 1 run of the same invocation is the baseline.
//
//   .build/release/MirrorBenchmark scaling [CHANGES per thread]
import BenchRecord
import Foundation
import Glibc
import IOMMUMirror
import IOPageTables

/// Shared between the threads of one run: the start barrier and one slot per thread for its
/// end time (each thread writes only its own slot; the main thread reads them after the join).
final class ScalingRun: @unchecked Sendable {
    let barrier = UnsafeMutablePointer<pthread_barrier_t>.allocate(capacity: 1)  // a fixed address, never moved
    let ends: UnsafeMutableBufferPointer<Double>
    let done = DispatchSemaphore(value: 0)
    init(threads: Int) {
        ends = .allocate(capacity: threads)
        ends.initialize(repeating: 0)
        pthread_barrier_init(barrier, nil, UInt32(threads + 1))
    }
    deinit {
        pthread_barrier_destroy(barrier)
        barrier.deallocate()
        ends.deallocate()
    }
}

/// One thread's engine and its stream: rounds of 32 maps then the 32 unmaps of the same pages,
/// over 16 windows of 32 pages, `changes` changes in all.
struct ScalingWorker: ~Copyable {
    var engine: MirrorEngine
    var batch = MirrorBatch(capacity: 32)
    var result = MirrorBatchResult(capacity: 32)
    let changes: Int

    init(index: Int, changes: Int) throws {
        var ram = GuestRAM()
        let length: UInt64 = 512 * page
        try ram.add(MirrorMemoryRegion(guestPhysical: GuestPhysicalAddress(0), length: length,
                                       host: HostAddress(0x7000_0000_0000 + UInt64(index) << 32)))
        engine = try MirrorEngine(mode: .requests, memory: ram, targets: [NullTarget(name: "null\(index)")],
                                  configuration: .init(space: try IOVARange(first: IOVA(0), last: IOVA((1 << 40) - 1)), shadowCapacity: 512 + 16))
        self.changes = changes
    }

    mutating func run() {
        var done = 0, round = 0
        while done < changes {
            let window = UInt64(round % 16) * 32
            for phase in 0..<2 {
                batch.removeAll()
                for j: UInt64 in 0..<32 {
                    let iova = IOVA(0x1000_0000 + (window + j) * page)
                    if phase == 0 {
                        batch.append(.map(iova: iova, length: page, guestPhysical: GuestPhysicalAddress((window + j) * page), permissions: .readWrite))
                    } else {
                        batch.append(.unmap(iova: iova, length: page))
                    }
                }
                engine.apply(batch, into: &result)
                done += 32
            }
            round += 1
        }
    }
}

/// Seconds from the barrier's release to the last thread's end, T threads of `changes` each.
func scalingRun(threads: Int, changes: Int) -> Double {
    let run = ScalingRun(threads: threads)
    for index in 0..<threads {
        let thread = Thread {
            var worker = try! ScalingWorker(index: index, changes: changes)
            pthread_barrier_wait(run.barrier)
            worker.run()
            run.ends[index] = now()
            precondition(worker.engine.shadow.isEmpty && worker.engine.checkInvariants().isEmpty)
            run.done.signal()
        }
        thread.start()
    }
    pthread_barrier_wait(run.barrier)
    let t0 = now()
    for _ in 0..<threads { run.done.wait() }
    return run.ends.max()! - t0
}

func threadScaling(changes: Int, reps: Int = 3) {
    let cpus = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    let changes = (changes + 63) / 64 * 64
    var counts = [1]
    while counts.last! * 2 <= max(4, 2 * cpus) { counts.append(counts.last! * 2) }
    _ = scalingRun(threads: 1, changes: min(changes, 20_000))  // warm-up
    var base = (perSecond: 0.0, ns: 0.0)
    print("thread scaling, null target, request mode, 4 KiB map-then-unmap changes in batches of 32, \(changes) changes per thread, \(cpus) CPUs online (median of \(reps))")
    for t in counts {
        let seconds = (0..<reps).map { _ in scalingRun(threads: t, changes: changes) }.sorted()[reps / 2]
        let perSecond = Double(t * changes) / seconds
        // Each thread's changes over the run's wall time: ns/change as one thread saw it.
        let ns = seconds / Double(changes) * 1e9
        if t == 1 { base = (perSecond, ns) }
        print("  \(t) thread\(t == 1 ? "" : "s"): \(Int(perSecond)) changes/s in all (" + String(format: "%.2fx one thread", perSecond / base.perSecond)
              + "), \(Int(ns)) ns/change per thread, " + String(format: "%.1f ms", seconds * 1e3))
        let label = "null target, \(t) thread\(t == 1 ? "" : "s"), \(cpus) CPUs online"
        record(suite: "engine-scaling", case: "\(label): changes/s in all", value: perSecond, unit: "changes/s",
               baseline: "1 thread", baselineValue: base.perSecond)
        record(suite: "engine-scaling", case: "\(label): ns/change per thread", value: ns, unit: "ns/change",
               baseline: "1 thread", baselineValue: base.ns)
    }
}
