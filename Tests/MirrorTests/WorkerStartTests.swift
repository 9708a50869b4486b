import Glibc
import IOMMUFD
@testable import IOMMUMirror
import IOPageTables
import Testing

@Suite struct WorkerStartTests {
    @Test("a worker thread that cannot start is a typed setup error, and the started ones end")
    func workerStartFailureIsTyped() throws {
        var ram = GuestRAM()
        try ram.add(MirrorMemoryRegion(guestPhysical: GuestPhysicalAddress(0), length: 1 << 20, host: HostAddress(0x7000_0000_0000)))
        let targets: [any MirrorTarget] = [NullTarget(name: "a"), NullTarget(name: "b"), NullTarget(name: "c")]
        var started = 0
        let config = MirrorEngine.Configuration(space: try IOVARange(first: IOVA(0), last: IOVA(0xFFFF_FFFF)), execution: .workers)
        #expect(throws: MirrorEngine.SetupError.workerNotStarted(errno: .resourceTemporarilyUnavailable)) {
            _ = try MirrorEngine(mode: .requests, memory: ram, targets: targets, configuration: config) { lane in
                guard started < 2 else { return .failure(.resourceTemporarilyUnavailable) }
                started += 1
                return WorkerPool.startThread(lane)
            }
        }
        #expect(started == 2)
        // The two started workers were joined: an engine made now starts and works.
        var engine = try MirrorEngine(mode: .requests, memory: ram, targets: targets, configuration: config)
        let r = engine.apply(.map(iova: IOVA(0x1000), length: 0x1000, guestPhysical: GuestPhysicalAddress(0), permissions: .readWrite))
        #expect(r.changes[0].status == .applied && engine.workerFacts.count == 3)
    }
}
