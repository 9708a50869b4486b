#if canImport(Glibc)
import Glibc
#endif
import IOMMUFD
public import NUMA

/// What one worker of an engine in ``MirrorEngine/Execution/workers`` mode did and where, as
/// the kernel reports it (for tests and reports).
public struct MirrorWorkerFacts: Sendable {
    /// The engine's indices of the targets this worker serves, ascending.
    public var targets: [Int]
    /// The node the worker was asked to run on (its first target's ``MirrorTarget/node``), if any.
    public var node: NUMANode?
    /// Whether the worker restricted itself to ``node``'s CPUs (`numa_run_on_node`). `false`
    /// without a node, on a machine with one node or without NUMA, or when pinning failed.
    public var pinned: Bool
    /// Why pinning failed, when it was tried and failed.
    public var pinError: NUMAError?
    /// The CPU and node the worker ran on in its last piece of work (`getcpu(2)` read inside it).
    public var lastCPU: Int
    public var lastNode: NUMANode
    /// The node of the worker's undo journal and of each of its targets' shadow storage
    /// (`move_pages` queries, after the worker first touched them); `nil` where the kernel
    /// cannot tell (no NUMA).
    public var journalNode: NUMANode?
    public var shadowNodes: [NUMANode?]
    /// Pieces of work the worker ran (one per planned change with calls, one per undo step).
    public var phases: Int
}

/// What the caller hands every lane for one phase; read-only while the lanes run.
// The engine's thread and a lane's worker never touch these objects at once: the phase
// handoff (semaphores) orders every access, so the stored properties skip the runtime's
// exclusivity checks, which cost about a tenth of a change on the null target.
final class PhasePlan: @unchecked Sendable {
    @exclusivity(unchecked) var shadow = IOVAIntervalMap()
    @exclusivity(unchecked) var memory = GuestRAM(capacity: 0)
    @exclusivity(unchecked) var removed: [Int] = []
    @exclusivity(unchecked) var toMap: [MirrorExtent] = []
    /// `toMap` with the host side resolved (the same for every target), no copy source.
    @exclusivity(unchecked) var mappings: [MirrorMapping] = []
    @exclusivity(unchecked) var transient = 0
    @exclusivity(unchecked) var journaling = false
    /// Forward: the change index; undo: the change whose lane entries are undone.
    @exclusivity(unchecked) var change = 0
    @exclusivity(unchecked) var undo = false
    @exclusivity(unchecked) var stop = false
}

extension PhasePlan {
    /// Fills ``mappings`` from ``toMap`` (each extent lies in one region by construction).
    func resolveMappings() {
        mappings.removeAll(keepingCapacity: true)
        for e in toMap { mappings.append(memory.mapping(of: e)) }
    }
}

extension GuestRAM {
    /// The host side of `e`, which lies in one region by construction: its host address and,
    /// for a file-backed region, the file and offset (`IOMMU_IOAS_MAP_FILE`).
    func mapping(of e: MirrorExtent, copySource: IOASID? = nil) -> MirrorMapping {
        let i = regionIndex(containing: e.guestPhysical)!
        let offset = e.guestPhysical.rawValue - range(ofRegion: i).first.rawValue
        return MirrorMapping(iova: e.iova, guestPhysical: e.guestPhysical, host: host(of: e.guestPhysical, inRegion: i),
                             file: regions[i].file.map { MirrorFileBacking(descriptor: $0.descriptor, offset: $0.offset + offset) },
                             permissions: e.permissions, copySource: copySource)
    }
}

/// The targets one thread (or the caller, in sequential mode) runs in index order, with their
/// per-target state moved in for the duration of each phase. Arrays are indexed by the
/// engine's target index; only ``members`` are used.
final class Lane: @unchecked Sendable {
    let members: [Int]
    let node: NUMANode?
    let plan: PhasePlan
    let targets: [any MirrorTarget]
    let copySources: [(target: Int, ioas: IOASID)?]
    let capacity: Int

    @exclusivity(unchecked) var shadows: [IOVAIntervalMap]
    @exclusivity(unchecked) var metrics: [MirrorTargetMetrics]
    @exclusivity(unchecked) var quarantined: [Bool]
    @exclusivity(unchecked) var failure: [MirrorTargetError?]
    @exclusivity(unchecked) var undoFailure: [MirrorTargetError?]
    @exclusivity(unchecked) var done: [Int]
    /// Target entries of the batch; `marks[k]`: where change `k`'s begin.
    @exclusivity(unchecked) var journal: [JournalEntry] = []
    @exclusivity(unchecked) var marks: [Int] = []

    // Facts, written by the worker.
    var pinned = false
    var pinError: NUMAError?
    var lastCPU = -1
    var lastNode = NUMANode(0)
    var journalNode: NUMANode?
    var shadowNodes: [NUMANode?] = []
    var phases = 0

    // The handoff: the caller posts `start`, the worker posts the pool's `finished`.
    let start: UnsafeMutablePointer<sem_t>
    let finished: UnsafeMutablePointer<sem_t>

    init(members: [Int], node: NUMANode?, plan: PhasePlan, targets: [any MirrorTarget],
         copySources: [(target: Int, ioas: IOASID)?], capacity: Int, finished: UnsafeMutablePointer<sem_t>) {
        self.members = members
        self.node = node
        self.plan = plan
        self.targets = targets
        self.copySources = copySources
        self.capacity = capacity
        let n = targets.count
        shadows = Array(repeating: IOVAIntervalMap(), count: n)
        metrics = Array(repeating: MirrorTargetMetrics(), count: n)
        quarantined = Array(repeating: false, count: n)
        failure = Array(repeating: nil, count: n)
        undoFailure = Array(repeating: nil, count: n)
        done = Array(repeating: 0, count: n)
        start = .allocate(capacity: 1)
        sem_init(start, 0, 0)
        self.finished = finished
    }

    deinit {
        sem_destroy(start)
        start.deallocate()
    }

    /// Allocates the lane's buffers and its targets' shadows here, on the calling thread (so
    /// first touch places them on its node), touching every page when `prefault`.
    func allocate(prefault: Bool) {
        journal.reserveCapacity(4 * capacity)
        marks.reserveCapacity(capacity)
        if prefault {
            journal.append(contentsOf: repeatElement(.root(GuestPhysicalAddress(0)), count: journal.capacity))
            // First touch places fresh pages, but malloc may hand back pages touched on another
            // node: a pinned lane moves them to its node.
            if pinned, let node { journal.withUnsafeBytes { _ = node.place($0) } }
            journalNode = journal.withUnsafeBufferPointer { $0.baseAddress.flatMap { NUMANode.of(memory: $0) } }
            journal.removeAll(keepingCapacity: true)
        }
        shadowNodes = []
        // In sequential mode the engine's own shadows move in for each phase.
        guard prefault else { return }
        for t in members {
            var s = IOVAIntervalMap(capacity: capacity)
            shadowNodes.append(s.prefault(placingOn: pinned ? node : nil))
            shadows[t] = s
        }
    }

    /// The worker thread's body: pin, allocate, then serve phases until told to stop.
    func workerMain() {
        if let node, NUMANode.isAvailable, NUMANode.all.count > 1 {
            do {
                try node.pinCurrentThread()
                pinned = true
            } catch { pinError = error }
        }
        allocate(prefault: true)
        noteWhere()
        sem_post(finished)
        while true {
            while sem_wait(start) != 0 {}
            if plan.stop { break }
            runPhase()
            noteWhere()
            sem_post(finished)
        }
    }

    func noteWhere() {
        let here = NUMANode.current
        lastCPU = here.cpu
        lastNode = here.node
    }

    func runPhase() {
        phases += 1
        if plan.undo { undo() } else { forward() }
    }

    // MARK: Forward

    /// The plan on every member in service, in index order. Under rollback the lane stops at
    /// its first failure (the sequential path stops the change there); under quarantine the
    /// failing member leaves service and the rest carry on.
    func forward() {
        for t in members where !quarantined[t] {
            var d = 0
            let f = run(on: t, done: &d)
            done[t] = d
            if let f {
                failure[t] = f
                if plan.journaling { return }
                quarantined[t] = true
            }
        }
    }

    /// The plan on target `t`: unmaps (one call per run of adjacent areas), then maps.
    func run(on t: Int, done: inout Int) -> MirrorTargetError? {
        let target = targets[t]
        let journaling = plan.journaling
        let shadow = plan.shadow
        let removed = plan.removed
        var g = 0
        while g < removed.count {
            var h = g
            while h + 1 < removed.count, removed[h + 1] == removed[h] + 1 { h += 1 }
            let range = try! IOVARange(first: shadow[removed[g]].iova.first, last: shadow[removed[h]].iova.last)
            var expected: UInt64 = 0
            for k in g...h { expected &+= shadow[removed[k]].length }
            metrics[t].calls += 1
            do {
                let bytes = try target.unmap(range, expectedBytes: expected)
                for k in g...h { forget(shadow[removed[k]], on: t, journaling) }
                metrics[t].unmaps += 1
                metrics[t].bytesUnmapped &+= bytes
                if bytes != expected {
                    return MirrorTargetError(target: target.name, operation: .unmap, range: range, errno: nil,
                                             detail: "unmapped \(bytes) bytes where the shadow holds \(expected)")
                }
            } catch {
                // Some or all of the areas may be gone, even of one area: the kernel removes
                // them before it copies its answer out, and that copy can fail (EFAULT, seen
                // under fault injection). Learn which are left, removing them one by one.
                var left = false
                for k in g...h {
                    let e = shadow[removed[k]]
                    metrics[t].calls += 1
                    do {
                        if try target.unmapIfPresent(e.iova) { metrics[t].bytesUnmapped &+= e.length }
                        forget(e, on: t, journaling)
                    } catch { left = true }
                }
                if left { return error }
                metrics[t].unmaps += 1
            }
            done += 1
            g = h + 1
        }
        metrics[t].transientUnmaps += plan.transient
        // The maps work on local copies (moved, not copied) of what they update, so the loop
        // makes no access checks on this object's properties.
        var held = IOVAIntervalMap()
        var log: [JournalEntry] = []
        var m = metrics[t]
        swap(&held, &shadows[t])
        swap(&log, &journal)
        defer {
            swap(&held, &shadows[t])
            swap(&log, &journal)
            metrics[t] = m
        }
        let copies = copySources[t].map { source in !quarantined[source.target] ? source : nil } ?? nil
        for (k, e) in plan.toMap.enumerated() {
            m.calls += 1
            var mapping = plan.mappings[k]
            if let (s, ioas) = copies, shadows[s].extent(containing: e.iova.first) == e { mapping.copySource = ioas }
            do { try target.map(mapping) } catch { return error }
            try! held.insert(e)
            if journaling { log.append(.mapped(target: t, e)) }
            m.maps += 1
            m.bytesMapped &+= e.length
            done += 1
        }
        return nil
    }

    func forget(_ e: MirrorExtent, on t: Int, _ journaling: Bool) {
        shadows[t].remove(e)
        if journaling { journal.append(.unmapped(target: t, e)) }
    }

    /// The host side of an extent for target `t` (undo: re-creating an area), with a copy
    /// source only where one in service holds exactly this area (the source is of the same
    /// iommufd, so in this lane).
    func mapping(_ e: MirrorExtent, on t: Int) -> MirrorMapping {
        var copySource: IOASID? = nil
        if let (s, ioas) = copySources[t], !quarantined[s], shadows[s].extent(containing: e.iova.first) == e { copySource = ioas }
        return plan.memory.mapping(of: e, copySource: copySource)
    }

    // MARK: Undo

    /// Undoes this lane's entries of change `plan.change`, newest first. A member whose undo
    /// fails leaves service holding its shadow.
    func undo() {
        let k = plan.change
        guard k < marks.count else { return }
        let mark = marks[k]
        var i = journal.count
        while i > mark {
            i -= 1
            switch journal[i] {
            case .mapped(let t, let e):
                guard !quarantined[t] else { continue }
                metrics[t].calls += 1
                metrics[t].rollbackCalls += 1
                do {
                    _ = try targets[t].unmap(e.iova, expectedBytes: e.length)
                    shadows[t].remove(e)
                    metrics[t].bytesUnmapped &+= e.length
                } catch {
                    quarantined[t] = true
                    undoFailure[t] = error
                }
            case .unmapped(let t, let e):
                guard !quarantined[t] else { continue }
                metrics[t].calls += 1
                metrics[t].rollbackCalls += 1
                do {
                    try targets[t].map(mapping(e, on: t))
                    try! shadows[t].insert(e)
                    metrics[t].bytesMapped &+= e.length
                } catch {
                    quarantined[t] = true
                    undoFailure[t] = error
                }
            default: break
            }
        }
        journal.removeSubrange(mark...)
        marks.removeSubrange(k...)
    }

    var facts: MirrorWorkerFacts {
        MirrorWorkerFacts(targets: members, node: node, pinned: pinned, pinError: pinError, lastCPU: lastCPU, lastNode: lastNode,
                          journalNode: journalNode, shadowNodes: shadowNodes, phases: phases)
    }
}

/// The engine's lanes and, in worker mode, one long-lived thread per lane. Ends the threads
/// (and waits for them) when the engine ends.
final class WorkerPool: @unchecked Sendable {
    let plan: PhasePlan
    let lanes: [Lane]
    /// `laneOf[t]`: the lane serving target `t`.
    let laneOf: [Int]
    let threaded: Bool
    let finished: UnsafeMutablePointer<sem_t>
    var threads: [pthread_t] = []

    /// Sequential: one lane of every target, run on the caller. Workers: targets of one iommufd
    /// share a lane (their calls keep the sequential order, and a copy's source is in it); any
    /// other target has its own.
    /// Starts a detached-until-joined thread running `lane.workerMain()`; returns its id, or
    /// the error number of `pthread_create` (the lane is not retained then).
    static func startThread(_ lane: Lane) -> Result<pthread_t, Errno> {
        var tid = pthread_t()
        let arg = Unmanaged.passRetained(lane).toOpaque()
        let rc = pthread_create(&tid, nil, { arg in
            let lane = Unmanaged<Lane>.fromOpaque(arg!).takeRetainedValue()
            lane.workerMain()
            return nil
        }, arg)
        guard rc == 0 else {
            Unmanaged<Lane>.fromOpaque(arg).release()
            return .failure(Errno(rawValue: rc))
        }
        return .success(tid)
    }

    /// - Throws: ``MirrorEngine/SetupError/workerNotStarted(errno:)`` when a thread cannot be
    ///   started; the threads started before it are ended again (by `deinit`).
    init(targets: [any MirrorTarget], copySources: [(target: Int, ioas: IOASID)?], capacity: Int, threaded: Bool,
         startThread: (Lane) -> Result<pthread_t, Errno> = WorkerPool.startThread) throws(MirrorEngine.SetupError) {
        plan = PhasePlan()
        finished = .allocate(capacity: 1)
        sem_init(finished, 0, 0)
        self.threaded = threaded
        var groups: [[Int]] = []
        var contexts: [ObjectIdentifier: Int] = [:]
        for t in targets.indices {
            if !threaded, !groups.isEmpty { groups[0].append(t); continue }
            if threaded, let ioas = targets[t] as? IOASTarget {
                let id = ObjectIdentifier(ioas.context)
                if let g = contexts[id] { groups[g].append(t); continue }
                contexts[id] = groups.count
            }
            groups.append([t])
        }
        var laneOf = Array(repeating: 0, count: targets.count)
        var lanes: [Lane] = []
        for (l, members) in groups.enumerated() {
            for t in members { laneOf[t] = l }
            let node = members.lazy.compactMap { targets[$0].node }.first
            lanes.append(Lane(members: members, node: node, plan: plan, targets: targets, copySources: copySources,
                              capacity: capacity, finished: finished))
        }
        self.lanes = lanes
        self.laneOf = laneOf
        if threaded {
            for lane in lanes {
                switch startThread(lane) {
                case .success(let tid): threads.append(tid)
                case .failure(let e): throw .workerNotStarted(errno: e)
                }
            }
            for _ in lanes { while sem_wait(finished) != 0 {} }
        } else {
            for lane in lanes { lane.allocate(prefault: false) }
        }
    }

    deinit {
        if threaded {
            plan.stop = true
            for lane in lanes { sem_post(lane.start) }
            for tid in threads { pthread_join(tid, nil) }
        }
        sem_destroy(finished)
        finished.deallocate()
    }

    /// Runs the phase described by ``plan`` on every lane and returns when all are done.
    func runPhase() {
        if threaded {
            for lane in lanes { sem_post(lane.start) }
            for _ in lanes { while sem_wait(finished) != 0 {} }
        } else {
            for lane in lanes { lane.runPhase() }
        }
    }
}
