#if canImport(Glibc)
import Glibc
#endif
import IOMMUFD
import IOMMUFDModel
import IOMMUMirror
import IOPageTables
import TestSupport
import Testing

/// Targets whose IOAS or iommufd goes away while the engine uses them, and stale ids: each a
/// typed ``MirrorTargetError`` with the kernel's errno, the failure policy applied, the other
/// targets holding exactly what the engine says, and the engine usable afterwards.
@Suite struct VanishingTargetTests {
    static let space = try! IOVARange(first: IOVA(0), last: IOVA(0xFFFF_FFFF))

    func maps(_ n: Int) -> MirrorBatch {
        var b = MirrorBatch()
        for k in 0..<n {
            b.append(.map(iova: IOVA(UInt64(k) * 0x10_000), length: 2 * page, guestPhysical: GuestPhysicalAddress(UInt64(k) * 2 * page),
                          permissions: .readWrite))
        }
        return b
    }

    /// Two IOAS of one model iommufd behind a saboteur that destroys the second IOAS on its
    /// third map, under `policy`.
    func vanishingIOAS(_ policy: MirrorEngine.FailurePolicy) throws {
        let ram = try TestRAM([(0, 1 << 20)])
        let model = IOMMUFDModel(.init(pageSize: page, tracing: false))
        let shared = SharedIOMMUFDContext(try IOMMUFDContext(kernel: model))
        let behaviour = try KernelBehaviour.probe(shared.iommufd)
        let a = try shared.iommufd.allocateIOAS(), b = try shared.iommufd.allocateIOAS()
        let saboteur = Saboteur(onMap: 3) { try! shared.iommufd.destroy(b) }
        let targets: [any MirrorTarget] = [saboteur, try IOASTarget(name: "a", context: shared, ioas: a, behaviour: behaviour),
                                           try IOASTarget(name: "b", context: shared, ioas: b, behaviour: behaviour)]
        var engine = try MirrorEngine(mode: .requests, memory: ram.ram, targets: targets,
                                      configuration: .init(space: Self.space, failure: policy))
        var result = MirrorBatchResult()
        engine.apply(maps(4), into: &result)

        let failure = try #require(result.targets[2].failure, "the vanished IOAS's target reports no failure: \(result.targets)")
        #expect(failure.errno == .noSuchFileOrDirectory && failure.operation == .map && failure.target == "b", "\(failure)")
        #expect(result.targets[2].failedChange == 2)
        #expect(result.targets[0].failure == nil && result.targets[1].failure == nil)
        let aAreas = model.areas(of: a, in: shared.iommufd.descriptor) ?? []
        switch policy {
        case .rollback:
            // Undone everywhere it could be; b cannot be undone (its IOAS is gone): out of service.
            #expect(result.rolledBack)
            #expect(result.changes.map(\.status) == [.rolledBack, .rolledBack, .failed, .notAttempted])
            #expect(aAreas.isEmpty, "\(aAreas)")
            #expect(result.targets[2].state == .rollbackFailed && engine.quarantined == [false, false, true])
            #expect(engine.shadow.isEmpty)
        case .quarantine:
            #expect(!result.rolledBack)
            #expect(result.changes.map(\.status) == [.applied, .applied, .applied, .applied])
            #expect(result.targets[2].state == .quarantined && engine.quarantined == [false, false, true])
            #expect(aAreas.count == 4)
            #expect(engine.targetShadows[2].count == 2, "b holds the two changes before it vanished")
        }
        #expect(engine.targetShadows[1] == engine.shadow)
        #expect(refAreas(engine.shadow).map(\.first) == aAreas.map(\.iova.first.rawValue))
        #expect(engine.checkInvariants() == [])
        // The engine goes on with the targets left.
        var next = MirrorBatch()
        next.append(.map(iova: IOVA(0x100_0000), length: page, guestPhysical: GuestPhysicalAddress(0x8_0000), permissions: .read))
        engine.apply(next, into: &result)
        #expect(result.changes[0].status == .applied && result.targets.allSatisfy { $0.failure == nil }, "\(result.targets)")
        #expect(engine.checkInvariants() == [])
        #expect((model.areas(of: a, in: shared.iommufd.descriptor) ?? []).count == (policy == .rollback ? 1 : 5))
    }

    @Test func anIOASDestroyedMidBatchRollsBack() throws { try vanishingIOAS(.rollback) }
    @Test func anIOASDestroyedMidBatchIsQuarantined() throws { try vanishingIOAS(.quarantine) }

    @Test("the iommufd closed under the engine: EBADF from every IOAS target, nothing half-done")
    func closedIOMMUFD() throws {
        let ram = try TestRAM([(0, 1 << 20)])
        let model = IOMMUFDModel(.init(pageSize: page, tracing: false))
        let shared = SharedIOMMUFDContext(try IOMMUFDContext(kernel: model))
        let behaviour = try KernelBehaviour.probe(shared.iommufd)
        let a = try shared.iommufd.allocateIOAS()
        let table = try PageTableTarget(name: "x86", format: try X86FirstStage(levels: 4))
        let targets: [any MirrorTarget] = [table, try IOASTarget(name: "a", context: shared, ioas: a, behaviour: behaviour)]
        var engine = try MirrorEngine(mode: .requests, memory: ram.ram, targets: targets, configuration: .init(space: Self.space))
        var result = MirrorBatchResult()
        engine.apply(maps(2), into: &result)
        #expect(result.changes.allSatisfy { $0.status == .applied })
        // Closed behind the context's back (a bug elsewhere in the process): the descriptor is dead.
        #expect((try? model.close(shared.iommufd.descriptor).get()) != nil)
        var batch = MirrorBatch()
        batch.append(.unmap(iova: IOVA(0), length: 2 * page))
        batch.append(.map(iova: IOVA(0x50_0000), length: page, guestPhysical: GuestPhysicalAddress(0x4_0000), permissions: .read))
        engine.apply(batch, into: &result)
        let failure = try #require(result.targets[1].failure)
        #expect(failure.errno == .badFileDescriptor && failure.operation == .unmap, "\(failure)")
        #expect(result.rolledBack && result.changes.map(\.status) == [.failed, .notAttempted])
        // The host table was not touched (it comes first but the unmap was undone on it), and
        // the IOAS target, whose undo cannot run, holds the state from before the batch.
        #expect(engine.targetShadows[0] == engine.shadow && engine.shadow.count == 2)
        #expect(result.targets[1].state == .synced || result.targets[1].state == .rollbackFailed)
        #expect(engine.targetShadows[1].count == 2)
        #expect(engine.checkInvariants() == [])
    }

    @Test("a stale IOAS id: the target cannot be made (ENOENT), or fails its first call")
    func staleIOASID() throws {
        let model = IOMMUFDModel(.init(pageSize: page, tracing: false))
        let shared = SharedIOMMUFDContext(try IOMMUFDContext(kernel: model))
        let behaviour = try KernelBehaviour.probe(shared.iommufd)
        #expect(throws: IOMMUFDError.self) { try IOASTarget(name: "stale", context: shared, ioas: IOASID(rawValue: 0xdead), behaviour: behaviour) }
        do {
            _ = try IOASTarget(name: "stale", context: shared, ioas: IOASID(rawValue: 0xdead), behaviour: behaviour)
        } catch {
            #expect(error.errno == .noSuchFileOrDirectory, "\(error)")
        }
        // Destroyed after the target was made: its first map answers ENOENT, nothing is mapped.
        let ram = try TestRAM([(0, 1 << 20)])
        let a = try shared.iommufd.allocateIOAS()
        let target = try IOASTarget(name: "a", context: shared, ioas: a, behaviour: behaviour)
        try shared.iommufd.destroy(a)
        var engine = try MirrorEngine(mode: .requests, memory: ram.ram, targets: [target], configuration: .init(space: Self.space, failure: .quarantine))
        var result = MirrorBatchResult()
        engine.apply(maps(1), into: &result)
        #expect(result.targets[0].failure?.errno == .noSuchFileOrDirectory && result.targets[0].state == .quarantined)
        #expect(engine.targetShadows[0].isEmpty)
        #expect(throws: IOMMUFDError.self) { try shared.iommufd.destroy(a) }
    }
}
