#if canImport(Glibc)
import Glibc
#endif
import IOMMUFD
import IOMMUMirror
import IOPageTables
import TestSupport
import Testing

/// On the real kernel, in the middle of a batch: the device behind one IOAS goes away (its
/// domain with it) and another IOAS is destroyed. The first IOAS keeps working and holds
/// exactly what the engine says (read back through a mock access), its pages no longer pinned
/// by a domain; the destroyed one fails with the kernel's `ENOENT` as a typed
/// ``MirrorTargetError`` and the failure policy takes it out of service.
@Suite(.serialized, .enabled(if: KernelTier.enabled, "needs /dev/iommu"))
struct VanishingTargetKernelTests {
    static let base: UInt64 = 1 << 24
    static let window = range(base, 32 * page)

    func run(_ policy: MirrorEngine.FailurePolicy) throws {
        let shared = SharedIOMMUFDContext(try IOMMUFDContext())
        let behaviour = try KernelBehaviour.probe(shared.iommufd)
        let ram = try TaggedRAM()
        let a = try shared.iommufd.allocateIOAS(), b = try shared.iommufd.allocateIOAS()
        let mock = try shared.iommufd.addMockDevice(to: PageTableID(a))
        let access = try shared.iommufd.createMockAccess(to: a)
        let saboteur = Saboteur(onMap: 3) {
            #expect(throws: Never.self) { try shared.iommufd.destroy(mock.id) }   // the device (and its domain) goes away
            #expect(throws: Never.self) { try shared.iommufd.destroy(b) }
        }
        let targets: [any MirrorTarget] = [saboteur, try IOASTarget(name: "a", context: shared, ioas: a, behaviour: behaviour),
                                           try IOASTarget(name: "b", context: shared, ioas: b, behaviour: behaviour)]
        var engine = try MirrorEngine(mode: .requests, memory: try ram.ram(), targets: targets,
                                      configuration: .init(space: Self.window, failure: policy))
        var batch = MirrorBatch()
        for k in 0..<4 {
            batch.append(Expected(iova: Self.base + UInt64(k * 4 * page), pages: 2, gpa: ram.gpa(k % 2, k), writable: true).change)
        }
        var result = MirrorBatchResult()
        engine.apply(batch, into: &result)
        let failure = try #require(result.targets[2].failure, "\(result.targets)")
        #expect(failure.errno == .noSuchFileOrDirectory && failure.operation == .map && result.targets[2].failedChange == 2, "\(failure)")
        #expect(result.targets[1].failure == nil, "the IOAS that lost its device must keep working: \(result.targets[1])")
        #expect(engine.quarantined == [false, false, true])
        #expect(result.targets[2].state == (policy == .rollback ? .rollbackFailed : .quarantined))

        var checks = 0, problems: [String] = []
        let view = kernelView(shared.iommufd, access, window: Self.window, ram: ram, hwpt: nil, checks: &checks, problems: &problems)
        #expect(problems.isEmpty, "\(problems)")
        #expect(differences(view, pageMap(engine.targetShadows[1]), "kernel", "engine").isEmpty)
        #expect(view.count == (policy == .rollback ? 0 : 8), "\(view)")
        #expect(engine.checkInvariants() == [])
        // No domain is left, so nothing is pinned whatever a maps.
        #expect(pinProblems(shared.iommufd, ram: ram, mapped: [], checks: &checks).isEmpty)
        print("vanishing targets (\(policy)): b failed with \(failure.errno.map { "\($0)" } ?? "-"), \(result.changes.map(\.status)), a holds \(view.count) pages as the engine says")

        // The engine goes on with what is left.
        var next = MirrorBatch()
        next.append(.unmap(iova: Self.window.first, length: UInt64(32 * page)))
        engine.apply(next, into: &result)
        #expect(result.targets.allSatisfy { $0.failure == nil })
        #expect(kernelView(shared.iommufd, access, window: Self.window, ram: ram, hwpt: nil, checks: &checks, problems: &problems).isEmpty)
        try access.close()
    }

    @Test func deviceAndIOASGoneMidBatchUnderRollback() throws { try run(.rollback) }
    @Test func deviceAndIOASGoneMidBatchUnderQuarantine() throws { try run(.quarantine) }
}
