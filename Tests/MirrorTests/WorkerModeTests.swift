#if canImport(Glibc)
import Glibc
#endif
import IOMMUFD
import IOMMUFDModel
import IOMMUMirror
import IOPageTables
import NUMA
import Testing

/// The worker mode checked against the sequential path: a twin engine over its own model
/// targets, fed the same batches and the same injected failures, must report the same.
func expectSameAsTwin(_ a: borrowing MirrorEngine, _ ra: MirrorBatchResult, _ ta: ModelTargets,
                      _ b: borrowing MirrorEngine, _ rb: MirrorBatchResult, _ tb: ModelTargets,
                      allMetrics: Bool, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(ra.changes == rb.changes, sourceLocation: sourceLocation)
    #expect(ra.targets == rb.targets, sourceLocation: sourceLocation)
    #expect(ra.rolledBack == rb.rolledBack, sourceLocation: sourceLocation)
    #expect(a.shadow == b.shadow, sourceLocation: sourceLocation)
    #expect(a.targetShadows == b.targetShadows, sourceLocation: sourceLocation)
    #expect(a.quarantined == b.quarantined, sourceLocation: sourceLocation)
    #expect(ta.mapCalls == tb.mapCalls && ta.unmapCalls == tb.unmapCalls, sourceLocation: sourceLocation)
    #expect(ta.model.ioctlCount(.ioasCopy) == tb.model.ioctlCount(.ioasCopy), sourceLocation: sourceLocation)
    // The IOAS targets share one worker, in the sequential order; the other targets' workers
    // may have run (and undone) a change an IOAS failed, so their calls can differ after a rollback.
    let n = allMetrics ? a.targets.count : 2
    #expect(Array(a.metrics.targets.prefix(n)) == Array(b.metrics.targets.prefix(n)), sourceLocation: sourceLocation)
    #expect(a.metrics.changesIn == b.metrics.changesIn && a.metrics.operationsElided == b.metrics.operationsElided,
            sourceLocation: sourceLocation)
}

@Suite struct WorkerModeTests {
    @Test("workers: one per iommufd and per other target, unpinned without a node, facts read inside them")
    func lanesAndFacts() throws {
        let ram = try TestRAM(RequestModeTests.layout)
        let t = try ModelTargets(pageTable: RequestModeTests.x86Table)
        var engine = try MirrorEngine(mode: .requests, memory: ram.ram, targets: t.all,
                                      configuration: .init(space: RequestModeTests.space, shadowCapacity: 64, execution: .workers))
        let facts = engine.workerFacts
        #expect(facts.map(\.targets) == [[0, 1], [2], [3]])
        #expect(facts.allSatisfy { $0.node == nil && !$0.pinned && $0.pinError == nil })
        #expect(facts.allSatisfy { $0.shadowNodes.count == $0.targets.count })
        if NUMANode.isAvailable { #expect(facts.allSatisfy { $0.journalNode != nil }) }
        let r = engine.apply(.map(iova: IOVA(0), length: 2 * page, guestPhysical: GuestPhysicalAddress(0), permissions: .readWrite))
        #expect(r.changes[0].status == .applied)
        #expect(engine.workerFacts.allSatisfy { $0.phases == 1 && NUMANode.of(cpu: $0.lastCPU) == $0.lastNode })
        #expect(t.areas(0, ram).count == 1 && t.areas(1, ram).count == 1)
        #expect(MirrorEngine.Configuration(space: RequestModeTests.space).execution == .sequential)
    }

    @Test("a target's node: its worker pins where the machine has several nodes, else runs unpinned")
    func nodeFallback() throws {
        let ram = try TestRAM(RequestModeTests.layout)
        let t = try ModelTargets(pageTable: RequestModeTests.x86Table)
        let node = NUMANode.all.last!
        let a = try IOASTarget(name: "on-node", context: t.context, ioas: t.ioas[0], behaviour: t.behaviour, node: node)
        var engine = try MirrorEngine(mode: .requests, memory: ram.ram, targets: [a, t.null],
                                      configuration: .init(space: RequestModeTests.space, shadowCapacity: 64, execution: .workers))
        _ = engine.apply(.map(iova: IOVA(0), length: page, guestPhysical: GuestPhysicalAddress(0), permissions: .read))
        let f = engine.workerFacts[0]
        #expect(f.node == node)
        #expect(f.pinned == (NUMANode.isAvailable && NUMANode.all.count > 1))
        if f.pinned { #expect(f.lastNode == node && f.journalNode == node) }
        #expect(engine.workerFacts[1].node == nil)
    }
}

/// Sequential against worker mode on null targets (the engine's own cost), in one run:
/// `MIRROR_MEASURE=1 swift test -c release ... --filter WorkerModeMeasurement`. Prints ns per
/// change for 1, 2 and 4 targets and small and large changes.
@Suite(.enabled(if: getenv("MIRROR_MEASURE") != nil, "set MIRROR_MEASURE=1 to measure"))
struct WorkerModeMeasurement {
    @Test func sequentialAgainstWorkers() throws {
        let ram = try TestRAM([(0, 64 << 20)])
        let space = try IOVARange(first: IOVA(0), last: IOVA(0xFFFF_FFFF))
        for targetCount in [1, 2, 4] {
            for pages in [1, 64] {
                var line = "null targets \(targetCount), \(pages) x 4 KiB per change, changes per batch 16:"
                for execution in [MirrorEngine.Execution.sequential, .workers, .sequential, .workers] {
                    let targets: [any MirrorTarget] = (0..<targetCount).map { NullTarget(name: "null-\($0)") }
                    var engine = try MirrorEngine(mode: .requests, memory: ram.ram, targets: targets,
                                                  configuration: .init(space: space, coalescing: .strict, shadowCapacity: 4096, execution: execution))
                    var batch = MirrorBatch(capacity: 16)
                    var result = MirrorBatchResult(capacity: 16)
                    let rounds = 2000
                    let clock = ContinuousClock()
                    let start = clock.now
                    for r in 0..<rounds {
                        batch.removeAll()
                        // 8 maps then their 8 unmaps: the shadow stays small, every change has calls.
                        for k in 0..<8 {
                            batch.append(.map(iova: IOVA(UInt64((r % 4) * 64 + k * pages) * page * 16), length: UInt64(pages) * page,
                                              guestPhysical: GuestPhysicalAddress(UInt64(k * pages) * page), permissions: .readWrite))
                        }
                        for k in 0..<8 {
                            batch.append(.unmap(iova: IOVA(UInt64((r % 4) * 64 + k * pages) * page * 16), length: UInt64(pages) * page))
                        }
                        engine.apply(batch, into: &result)
                    }
                    let d = clock.now - start
                    let ns = Double(d.components.seconds) * 1e9 + Double(d.components.attoseconds) / 1e9
                    line += " \(execution) \(Int(ns / Double(rounds * 16))) ns;"
                    #expect(result.changes.allSatisfy { $0.status == .applied })
                }
                print(line)
            }
        }
    }
}
