public import IOMMUAddresses
public import IOPageTables
import Histogram
public import IOMMUFD
import Glibc

/// Keeps every target of one guest IO address space equal to the guest's view.
///
/// The engine holds the guest's RAM, one shadow of the host areas every target in service holds
/// (``shadow``, area for area) and each target's own (``targetShadows``). A change is checked
/// and planned against the shadow before any target is called: an unmap never cuts an area,
/// nothing already in place is mapped again, nothing absent is unmapped. Then each target in
/// service gets the plan, unmaps first, one call per run of adjacent areas, then one map per
/// new area. Planning uses buffers kept from change to change; a steady stream allocates only
/// when a buffer grows.
///
/// Policies (``Configuration``):
/// - Coalescing, ``CoalescingPolicy/perUnit``: extents contiguous in IOVA and guest-physical
///   address, in one guest memory region, with equal rights become one area, only within one
///   unit (one request-mode map; what one invalidation maps). ``CoalescingPolicy/strict``:
///   one area per guest leaf (per region piece), never merged.
/// - A request-mode unmap that would cut a mapping is refused (``MirrorRefusal/wouldSplit(_:)``)
///   and changes nothing. In page-table mode an area the guest's change cuts is unmapped and
///   its unchanged remnants re-mapped at once by the same call sequence, counted as a transient
///   unmap; under ``CoalescingPolicy/strict`` that happens only when the guest itself replaces a
///   huge leaf by smaller ones keeping part of it.
/// - Failure, ``FailurePolicy/rollback``: the first target failure undoes the whole batch on
///   every target; ``FailurePolicy/quarantine``: the failing target leaves service, holding
///   exactly its shadow, and the rest carry on.
public struct MirrorEngine: ~Copyable {
    public enum Mode {
        /// Explicit map and unmap (virtio-iommu).
        case requests
        /// The guest's IO page table of `format` at `root`, re-walked on invalidation.
        case pageTable(any PageTableFormat, root: GuestPhysicalAddress)
    }

    public enum CoalescingPolicy: Hashable, Sendable { case perUnit, strict }
    public enum FailurePolicy: Hashable, Sendable { case rollback, quarantine }

    /// Where each change's per-target calls run.
    public enum Execution: Hashable, Sendable {
        /// On the caller's thread, target after target. The default: handing a change to the
        /// workers and waiting for them costs more than the engine's own work per change.
        /// Measured with null targets (release, 16 changes a batch, 2 shared CPUs, both modes in
        /// one run: `MIRROR_MEASURE=1 swift test -c release --filter WorkerModeMeasurement`):
        /// sequential 1.8-2.9 µs per change for 1 to 4 targets, workers 6.4 µs (1 target),
        /// 9-13 µs (2), 18-19 µs (4). Workers pay off only where each target's calls per change
        /// take longer than the handoff (real ioctls on separate iommufds, enough free CPUs).
        case sequential
        /// On long-lived worker threads, one per iommufd (its IOAS targets in index order,
        /// so a copy's source is served first) and one per other target, each pinned to its
        /// targets' ``MirrorTarget/node`` where the machine has more than one node, with its
        /// buffers and its targets' shadows allocated there. Each change is planned once on the
        /// caller's thread; every worker runs it on its targets and the caller waits for all
        /// (changes keep their order), then merges the outcomes in target order. Results,
        /// shadows and calls equal the sequential path's, except that under rollback a worker
        /// whose targets come after the failing one may already have run the failing change
        /// (its calls are then undone too, and counted).
        case workers
    }

    public struct Configuration: Sendable {
        /// The IOVA the guest may use.
        public var space: IOVARange
        /// Every guest IOVA, guest-physical address and length is a multiple of this.
        public var granule: PageSize
        public var coalescing: CoalescingPolicy
        public var failure: FailurePolicy
        /// Areas the shadows hold before they grow.
        public var shadowCapacity: Int
        public var execution: Execution

        public init(space: IOVARange, granule: PageSize = .size4K, coalescing: CoalescingPolicy = .perUnit,
                    failure: FailurePolicy = .rollback, shadowCapacity: Int = 4096, execution: Execution = .sequential) {
            self.execution = execution
            self.space = space
            self.granule = granule
            self.coalescing = coalescing
            self.failure = failure
            self.shadowCapacity = shadowCapacity
        }
    }

    /// Why an engine cannot be set up.
    public enum SetupError: Error, Hashable, Sendable {
        /// The granule is not a multiple of what the target (by name) requires.
        case granuleBelowTargetAlignment(target: String, alignment: UInt64)
        /// A worker thread of ``Execution/workers`` could not be started (`pthread_create`'s
        /// error: `EAGAIN` at the process's thread limit, say); no worker is left running.
        case workerNotStarted(errno: Errno)
    }

    public let configuration: Configuration
    public private(set) var mode: Mode
    public private(set) var memory: GuestRAM
    /// What every target in service holds, area for area.
    public private(set) var shadow: IOVAIntervalMap
    public let targets: [any MirrorTarget]
    /// What each target holds (equal to ``shadow`` while in service).
    public private(set) var targetShadows: [IOVAIntervalMap]
    public private(set) var quarantined: [Bool]
    public private(set) var metrics: MirrorMetrics

    var nextUnit: UInt64 = 1
    var scratch: Scratch
    /// Per target that fans out by copy: the earlier IOAS target of its iommufd to copy from.
    let copySources: [(target: Int, ioas: IOASID)?]
    /// Each target's ``MirrorTarget/usableRanges``, read once.
    let usable: [[IOVARange]]
    /// The lanes that run each change's calls (threads in worker mode).
    let workers: WorkerPool

    /// Per worker, in worker mode: its targets, where it ran last and where its memory is.
    /// Empty in sequential mode.
    public var workerFacts: [MirrorWorkerFacts] {
        workers.threaded ? workers.lanes.map(\.facts) : []
    }

    /// An engine for one guest space over `targets`, all empty.
    /// - Throws: ``SetupError`` when a target needs coarser alignment than the granule.
    public init(mode: Mode, memory: GuestRAM, targets: [any MirrorTarget], configuration: Configuration) throws(SetupError) {
        try self.init(mode: mode, memory: memory, targets: targets, configuration: configuration, startThread: WorkerPool.startThread)
    }

    /// The engine with the worker threads started by `startThread` (tests inject failures).
    init(mode: Mode, memory: GuestRAM, targets: [any MirrorTarget], configuration: Configuration,
         startThread: (Lane) -> Result<pthread_t, Errno>) throws(SetupError) {
        for t in targets where configuration.granule.bytes % t.alignment != 0 {
            throw .granuleBelowTargetAlignment(target: t.name, alignment: t.alignment)
        }
        let copySources = targets.indices.map { t -> (target: Int, ioas: IOASID)? in
            guard let target = targets[t] as? IOASTarget, target.fanOut == .copy else { return nil }
            for s in 0..<t {
                if let source = targets[s] as? IOASTarget, source.context === target.context { return (s, source.ioas) }
            }
            return nil
        }
        let threaded = configuration.execution == .workers
        // First, before any stored property: the only step here that can fail.
        self.workers = try WorkerPool(targets: targets, copySources: copySources, capacity: configuration.shadowCapacity, threaded: threaded,
                                      startThread: startThread)
        self.copySources = copySources
        self.configuration = configuration
        self.mode = mode
        self.memory = memory
        self.targets = targets
        self.shadow = IOVAIntervalMap(capacity: configuration.shadowCapacity)
        self.targetShadows = targets.map { _ in
            IOVAIntervalMap(capacity: configuration.execution == .sequential ? configuration.shadowCapacity : 0)
        }
        self.quarantined = targets.map { _ in false }
        self.usable = targets.map(\.usableRanges)
        self.metrics = MirrorMetrics(targets: targets.count)
        self.scratch = Scratch(capacity: configuration.shadowCapacity)
        if threaded {
            // The workers allocated their targets' shadows where they run.
            for lane in workers.lanes { for t in lane.members { swap(&targetShadows[t], &lane.shadows[t]) } }
        }
    }

    /// The root of the guest's table, in page-table mode.
    public var root: GuestPhysicalAddress? {
        if case .pageTable(_, let root) = mode { return root }
        return nil
    }

    // MARK: Batches

    /// Applies `batch` to every target in service and fills `result` (reset first) with what
    /// became of each change and each target. Bad guest input is refused per change; a target
    /// failure is handled by the failure policy.
    public mutating func apply(_ batch: MirrorBatch, into result: inout MirrorBatchResult) {
        result.changes.removeAll(keepingCapacity: true)
        result.targets.removeAll(keepingCapacity: true)
        result.rolledBack = false
        for t in targets.indices {
            result.targets.append(MirrorTargetOutcome(state: quarantined[t] ? .quarantined : .synced, appliedChanges: 0))
        }
        scratch.journal.removeAll(keepingCapacity: true)
        scratch.removedRegions.removeAll(keepingCapacity: true)
        scratch.marks.removeAll(keepingCapacity: true)
        for lane in workers.lanes {
            lane.journal.removeAll(keepingCapacity: true)
            lane.marks.removeAll(keepingCapacity: true)
        }
        for (c, change) in batch.changes.enumerated() {
            let start = monotonicNanoseconds()
            metrics.changesIn += 1
            markJournals()
            var outcome = plan(change)
            if outcome.status == .applied {
                if !execute(change: c, outcome: &outcome, result: &result) {
                    outcome.status = .failed
                    result.changes.append(outcome)
                    rollBack(failedChange: c, result: &result)
                    for _ in (c + 1)..<batch.changes.count {
                        result.changes.append(MirrorChangeOutcome(status: .notAttempted))
                    }
                    record(since: start)
                    return
                }
                commit(change)
            } else if outcome.status == .refused {
                metrics.changesRefused += 1
            }
            result.changes.append(outcome)
            for t in targets.indices where !quarantined[t] { result.targets[t].appliedChanges = c + 1 }
            record(since: start)
        }
    }

    /// Applies one change alone, as a batch of one. Allocates the batch and the result: for
    /// tests and rare changes; streams use ``apply(_:into:)`` with buffers they keep.
    public mutating func apply(_ change: MirrorChange) -> MirrorBatchResult {
        var batch = MirrorBatch(capacity: 1)
        batch.append(change)
        var result = MirrorBatchResult(capacity: 1)
        apply(batch, into: &result)
        return result
    }

    mutating func record(since start: UInt64) {
        _ = metrics.latency.record(monotonicNanoseconds() &- start)
    }

    // MARK: Planning

    /// Checks `change` and leaves its plan in `scratch.removed` (shadow indices, ascending) and
    /// `scratch.toMap` (IOVA order). Returns `.applied` when there is work, else the answer.
    mutating func plan(_ change: MirrorChange) -> MirrorChangeOutcome {
        scratch.removed.removeAll(keepingCapacity: true)
        scratch.toMap.removeAll(keepingCapacity: true)
        switch (change, mode) {
        case (.map(let iova, let length, let gpa, let p), .requests):
            return planMap(iova, length, gpa, p)
        case (.unmap(let iova, let length), .requests):
            return planUnmap(iova, length)
        case (.invalidate(let iova, let length), .pageTable):
            let range: IOVARange
            do { range = try checkedRange(iova, length) } catch { return MirrorChangeOutcome(status: .refused, refusal: error) }
            return planInvalidation(range)
        case (.resync, .pageTable):
            return planInvalidation(configuration.space)
        case (.setRoot, .pageTable):
            // The plan is the resync of the new table; ``commit(_:)`` switches the root.
            let previous = mode
            if case .setRoot(let newRoot) = change, case .pageTable(let f, _) = mode { mode = .pageTable(f, root: newRoot) }
            var outcome = planInvalidation(configuration.space)
            mode = previous
            // The guest switched tables whatever they hold: the switch itself always applies.
            if outcome.status != .applied {
                if outcome.status == .refused { metrics.changesRefused += 1 }
                outcome.status = .applied
            }
            return outcome
        case (.addRegion(let region), _):
            if let other = memory.overlappingRegion(region.guestPhysical) {
                return MirrorChangeOutcome(status: .refused, refusal: .regionOverlaps(other))
            }
            return MirrorChangeOutcome(status: .applied)
        case (.removeRegion(let base), _):
            guard let i = memory.regions.firstIndex(where: { $0.guestPhysical.first == base }) else {
                return MirrorChangeOutcome(status: .refused, refusal: .unknownRegion(base))
            }
            let region = memory.regions[i].guestPhysical
            for (k, e) in shadow.enumerated() where region.contains(e.guestPhysical) { scratch.removed.append(k) }
            var outcome = MirrorChangeOutcome(status: .applied)
            outcome.unmaps = unmapCalls()
            return outcome
        default:
            return MirrorChangeOutcome(status: .refused, refusal: .wrongMode)
        }
    }

    func checkedRange(_ iova: IOVA, _ length: UInt64) throws(MirrorRefusal) -> IOVARange {
        guard length > 0 else { throw .emptyRange }
        guard let r = try? IOVARange(base: iova, length: length) else { throw .overflow }
        let g = configuration.granule
        guard iova.isAligned(to: g), length & (g.bytes - 1) == 0 else { throw .misaligned(granule: g.bytes) }
        return r
    }

    /// Rights as a host area carries them; the refusal when some target in service cannot.
    func hostPermissions(_ p: Permissions) -> Result<Permissions, MirrorRefusal> {
        let host = p.intersection(.readWrite)
        guard !host.isEmpty else { return .failure(.permissionsNotExpressible(p, target: nil)) }
        for t in targets.indices where !quarantined[t] && !targets[t].canExpress(host) {
            return .failure(.permissionsNotExpressible(host, target: t))
        }
        return .success(host)
    }

    /// Refuses an IOVA range outside the space or a target's usable ranges.
    func checkIOVA(_ range: IOVARange) -> MirrorRefusal? {
        guard configuration.space.contains(range) else { return .outsideSpace(range) }
        for t in usable.indices where !quarantined[t] && !usable[t].contains(where: { $0.contains(range) }) {
            return .outsideTargetRange(target: t, range)
        }
        return nil
    }

    /// Appends to `scratch.toMap` the pieces of `iova -> gpa` split at region boundaries;
    /// the refusal when a byte is not guest RAM (nothing appended then).
    func appendPieces(_ iova: IOVARange, _ gpa: GuestPhysicalAddress, _ p: Permissions, unit: MirrorUnit,
                               into list: inout [MirrorExtent]) -> MirrorRefusal? {
        let length = iova.last.rawValue - iova.first.rawValue
        guard gpa.advanced(by: length) != nil else { return .overflow }
        let mark = list.count
        var cursor: UInt64 = 0
        while true {
            let g = GuestPhysicalAddress(gpa.rawValue + cursor)
            guard let i = memory.regionIndex(containing: g) else {
                list.removeSubrange(mark...)
                return .outsideGuestMemory(g)
            }
            let pieceLast = min(memory.range(ofRegion: i).last.rawValue - gpa.rawValue, length)
            list.append(MirrorExtent(iova: try! IOVARange(first: IOVA(iova.first.rawValue + cursor), last: IOVA(iova.first.rawValue + pieceLast)),
                                     guestPhysical: g, permissions: p, unit: unit))
            if pieceLast == length { return nil }
            cursor = pieceLast + 1
        }
    }

    mutating func planMap(_ iova: IOVA, _ length: UInt64, _ gpa: GuestPhysicalAddress, _ p: Permissions) -> MirrorChangeOutcome {
        let range: IOVARange
        do { range = try checkedRange(iova, length) } catch { return MirrorChangeOutcome(status: .refused, refusal: error) }
        guard gpa.isAligned(to: configuration.granule) else {
            return MirrorChangeOutcome(status: .refused, refusal: .misaligned(granule: configuration.granule.bytes))
        }
        if let refusal = checkIOVA(range) { return MirrorChangeOutcome(status: .refused, refusal: refusal) }
        let host: Permissions
        switch hostPermissions(p) {
        case .success(let h): host = h
        case .failure(let r): return MirrorChangeOutcome(status: .refused, refusal: r)
        }
        let unit = MirrorUnit(rawValue: nextUnit)
        var list: [MirrorExtent] = []
        swap(&list, &scratch.toMap)
        defer { swap(&list, &scratch.toMap) }
        if let refusal = appendPieces(range, gpa, host, unit: unit, into: &list) {
            return MirrorChangeOutcome(status: .refused, refusal: refusal)
        }
        let overlapping = shadow.indices(overlapping: range)
        if !overlapping.isEmpty {
            // The same request again is a duplicate: nothing to do.
            let sameUnit = shadow[overlapping.lowerBound].unit
            var identical = overlapping.count == list.count
            if identical {
                for (k, i) in overlapping.enumerated() {
                    let e = shadow[i]
                    if e.unit != sameUnit || e.iova != list[k].iova || !e.translatesLike(list[k]) { identical = false }
                }
                if overlapping.lowerBound > 0, shadow[overlapping.lowerBound - 1].unit == sameUnit { identical = false }
                if overlapping.upperBound < shadow.count, shadow[overlapping.upperBound].unit == sameUnit { identical = false }
            }
            list.removeAll(keepingCapacity: true)
            if identical {
                metrics.operationsElided += 1
                return MirrorChangeOutcome(status: .unchanged)
            }
            return MirrorChangeOutcome(status: .refused, refusal: .overlapsExisting(shadow[overlapping.lowerBound].iova))
        }
        nextUnit += 1
        var outcome = MirrorChangeOutcome(status: .applied)
        outcome.maps = list.count
        return outcome
    }

    mutating func planUnmap(_ iova: IOVA, _ length: UInt64) -> MirrorChangeOutcome {
        let range: IOVARange
        do { range = try checkedRange(iova, length) } catch { return MirrorChangeOutcome(status: .refused, refusal: error) }
        let overlapping = shadow.indices(overlapping: range)
        if overlapping.isEmpty {
            metrics.operationsElided += 1
            return MirrorChangeOutcome(status: .unchanged)
        }
        for i in overlapping where !range.contains(shadow[i].iova) {
            return MirrorChangeOutcome(status: .refused, refusal: .wouldSplit(unitRange(around: i)))
        }
        let lo = overlapping.lowerBound, hi = overlapping.upperBound
        if lo > 0, shadow[lo - 1].unit == shadow[lo].unit {
            return MirrorChangeOutcome(status: .refused, refusal: .wouldSplit(unitRange(around: lo)))
        }
        if hi < shadow.count, shadow[hi].unit == shadow[hi - 1].unit {
            return MirrorChangeOutcome(status: .refused, refusal: .wouldSplit(unitRange(around: hi - 1)))
        }
        for i in overlapping { scratch.removed.append(i) }
        var outcome = MirrorChangeOutcome(status: .applied)
        outcome.unmaps = unmapCalls()
        return outcome
    }

    /// The IOVA of the whole unit the extent at `index` belongs to (its areas are adjacent).
    func unitRange(around index: Int) -> IOVARange {
        let unit = shadow[index].unit
        var lo = index, hi = index
        while lo > 0, shadow[lo - 1].unit == unit { lo -= 1 }
        while hi + 1 < shadow.count, shadow[hi + 1].unit == unit { hi += 1 }
        return try! IOVARange(first: shadow[lo].iova.first, last: shadow[hi].iova.last)
    }

    /// Unmap calls for `scratch.removed`: one per run of consecutive shadow indices.
    func unmapCalls() -> Int {
        var n = 0
        for (k, i) in scratch.removed.enumerated() where k == 0 || scratch.removed[k - 1] != i - 1 { n += 1 }
        return n
    }

    /// Page-table mode: walk the guest's table over `requested` (widened to whole leaves),
    /// and plan the difference against the shadow.
    mutating func planInvalidation(_ requested: IOVARange) -> MirrorChangeOutcome {
        guard case .pageTable(let format, let root) = mode else { return MirrorChangeOutcome(status: .refused, refusal: .wrongMode) }
        guard var range = requested.intersection(configuration.space) else {
            metrics.operationsElided += 1
            return MirrorChangeOutcome(status: .unchanged)
        }
        var outcome = MirrorChangeOutcome(status: .applied)
        var walked: [GuestTranslation] = []
        var desired: [MirrorExtent] = []
        var toMap: [MirrorExtent] = []
        swap(&walked, &scratch.walked)
        swap(&desired, &scratch.desired)
        swap(&toMap, &scratch.toMap)
        defer {
            swap(&walked, &scratch.walked)
            swap(&desired, &scratch.desired)
            swap(&toMap, &scratch.toMap)
        }
        let perLeaf = configuration.coalescing == .strict

        // 1. The guest's translations over the range (maximal runs; leaves under the strict
        // policy), widened until it holds whole leaves and the whole span of every malformed
        // entry. A malformed entry is skipped: what it would translate stays unmapped in every
        // target (fail closed), its neighbours are kept. An exhausted budget empties the range.
        var faults = 0
        for _ in 0..<8 {
            walked.removeAll(keepingCapacity: true)
            faults = 0
            outcome.refusal = nil
            var lo = range.first, hi = range.last
            do {
                try visitGuestTable(format, memory: memory, root: root, range: range, perLeaf: perLeaf, fault: { f in
                    faults += 1
                    if outcome.refusal == nil { outcome.refusal = .guestTableFault(f) }
                    let span = untranslatedSpan(of: f, in: format)
                    lo = min(lo, span.first)
                    hi = max(hi, span.last)
                }) { walked.append($0) }
            } catch {
                walked.removeAll(keepingCapacity: true)
                outcome.refusal = .guestTableFault(error)
                faults = 1
                break
            }
            if let first = walked.first?.iova.first { lo = min(lo, first) }
            if let last = walked.last?.iova.last { hi = max(hi, last) }
            guard lo < range.first || hi > range.last else { break }
            range = try! IOVARange(first: lo, last: hi)
        }
        outcome.refusedLeaves += faults

        // 2. What the targets should hold there: the translations a host can map, split at
        // regions. A run that fails a check is taken again leaf by leaf, so only its bad
        // leaves are refused.
        let unit = MirrorUnit(rawValue: nextUnit)
        desired.removeAll(keepingCapacity: true)
        for t in walked {
            let granted = t.permissions.intersection(.readWrite)
            if granted.isEmpty { continue }
            if perLeaf {
                addDesired(t, granted, unit: unit, into: &desired, outcome: &outcome)
            } else if desiredCheck(t, granted, unit: unit, into: &desired) != nil {
                do {
                    try visitGuestTable(format, memory: memory, root: root, range: t.iova, perLeaf: true, fault: { f in
                        outcome.refusedLeaves += 1
                        if outcome.refusal == nil { outcome.refusal = .guestTableFault(f) }
                    }) { leaf in
                        let g = leaf.permissions.intersection(.readWrite)
                        if !g.isEmpty { addDesired(leaf, g, unit: unit, into: &desired, outcome: &outcome) }
                    }
                } catch {
                    outcome.refusedLeaves += 1
                    if outcome.refusal == nil { outcome.refusal = .guestTableFault(error) }
                }
            }
        }
        metrics.leavesRefused += outcome.refusedLeaves

        // 3. Each area over the range: kept when the guest still translates all of it alike,
        // else removed, its bytes outside the range re-mapped.
        let areas = shadow.indices(overlapping: range)
        var keptRanges: [IOVARange] = []
        swap(&keptRanges, &scratch.keptRanges)
        defer { swap(&keptRanges, &scratch.keptRanges) }
        keptRanges.removeAll(keepingCapacity: true)
        var leftRemnant: MirrorExtent?
        var rightRemnant: MirrorExtent?
        var d = 0
        for i in areas {
            let a = shadow[i]
            let clip = a.iova.intersection(range)!
            while d < desired.count, desired[d].iova.last < clip.first { d += 1 }
            var j = d
            var cursor = clip.first.rawValue
            var kept = true
            var sameSomewhere = false
            while true {
                guard j < desired.count, desired[j].iova.first.rawValue <= cursor else { kept = false; break }
                if desired[j].translatesLike(a) { sameSomewhere = true } else { kept = false }
                if desired[j].iova.last >= clip.last { break }
                cursor = desired[j].iova.last.rawValue + 1
                j += 1
            }
            if kept {
                keptRanges.append(clip)
                continue
            }
            // A partial match still shares bytes when it overlaps alike anywhere in the clip.
            if !sameSomewhere {
                var k = d
                while k < desired.count, desired[k].iova.first <= clip.last {
                    if desired[k].translatesLike(a) { sameSomewhere = true }
                    k += 1
                }
            }
            scratch.removed.append(i)
            if a.iova.first < range.first {
                var left = a.clipped(to: try! IOVARange(first: a.iova.first, last: IOVA(range.first.rawValue - 1)))!
                left.unit = unit
                leftRemnant = left
            }
            if a.iova.last > range.last {
                var right = a.clipped(to: try! IOVARange(first: IOVA(range.last.rawValue + 1), last: a.iova.last))!
                right.unit = unit
                rightRemnant = right
            }
            if sameSomewhere || a.iova.first < range.first || a.iova.last > range.last { outcome.transientUnmaps += 1 }
        }

        // 4. To map: the remnants and the desired bytes no kept area holds, coalesced by policy.
        toMap.removeAll(keepingCapacity: true)
        if let leftRemnant { push(leftRemnant, into: &toMap) }
        var k = 0
        for e in desired {
            var rest: MirrorExtent? = e
            var covered = false
            while let r = rest, k < keptRanges.count, keptRanges[k].first <= r.iova.last {
                let kr = keptRanges[k]
                if kr.last < r.iova.first { k += 1; continue }
                if kr.first > r.iova.first { push(r.clipped(to: try! IOVARange(first: r.iova.first, last: IOVA(kr.first.rawValue - 1)))!, into: &toMap) }
                covered = true
                if kr.last >= r.iova.last { rest = nil } else {
                    rest = r.clipped(to: try! IOVARange(first: IOVA(kr.last.rawValue + 1), last: r.iova.last))
                    k += 1
                }
            }
            if let r = rest { push(r, into: &toMap) } else if covered { metrics.operationsElided += 1 }
        }
        if let rightRemnant { push(rightRemnant, into: &toMap) }

        outcome.unmaps = unmapCalls()
        outcome.maps = toMap.count
        if outcome.operations == 0 {
            if outcome.refusal != nil {
                outcome.status = .refused
            } else {
                outcome.status = .unchanged
                metrics.operationsElided += 1
            }
            return outcome
        }
        nextUnit += 1
        return outcome
    }

    /// Appends the pieces of guest translation `t` with host rights `granted` to `desired`;
    /// the refusal (nothing appended) when it lies outside the space or a target's ranges, a
    /// target cannot express the rights, or a byte is not guest RAM.
    func desiredCheck(_ t: GuestTranslation, _ granted: Permissions, unit: MirrorUnit,
                      into desired: inout [MirrorExtent]) -> MirrorRefusal? {
        if let refusal = checkIOVA(t.iova) { return refusal }
        if case .failure(let r) = hostPermissions(granted) { return r }
        return appendPieces(t.iova, t.output, granted, unit: unit, into: &desired)
    }

    /// ``desiredCheck(_:_:unit:into:)`` for one leaf, its refusal counted in `outcome`.
    func addDesired(_ leaf: GuestTranslation, _ granted: Permissions, unit: MirrorUnit,
                    into desired: inout [MirrorExtent], outcome: inout MirrorChangeOutcome) {
        guard let refusal = desiredCheck(leaf, granted, unit: unit, into: &desired) else { return }
        outcome.refusedLeaves += 1
        if outcome.refusal == nil { outcome.refusal = refusal }
    }

    /// Appends `e`, merged into the last area when the policy allows it.
    func push(_ e: MirrorExtent, into list: inout [MirrorExtent]) {
        if configuration.coalescing == .perUnit, let last = list.last, last.iova.end == e.iova.first, last.translatesLike(e),
           memory.regionIndex(containing: last.guestPhysical) == memory.regionIndex(containing: e.guestPhysical) {
            list[list.count - 1].iova = try! IOVARange(first: last.iova.first, last: e.iova.last)
        } else {
            var e = e
            e.unit = MirrorUnit(rawValue: nextUnit)
            list.append(e)
        }
    }

    // MARK: Executing

    /// Moves the plan and every target's state into the lanes, runs the phase on all of them
    /// (on their threads in worker mode, here in sequential mode) and moves it all back.
    /// Allocates nothing: everything moves by swap.
    mutating func runPhase(undo: Bool, change c: Int, transient: Int) {
        let plan = workers.plan
        swap(&shadow, &plan.shadow)
        swap(&memory, &plan.memory)
        swap(&scratch.removed, &plan.removed)
        swap(&scratch.toMap, &plan.toMap)
        plan.transient = transient
        plan.journaling = configuration.failure == .rollback
        plan.change = c
        plan.undo = undo
        if !undo { plan.resolveMappings() }
        for lane in workers.lanes {
            for t in lane.members {
                swap(&targetShadows[t], &lane.shadows[t])
                lane.metrics[t] = metrics.targets[t]
                lane.quarantined[t] = quarantined[t]
                if lane.failure[t] != nil { lane.failure[t] = nil }
                if lane.undoFailure[t] != nil { lane.undoFailure[t] = nil }
                lane.done[t] = 0
            }
        }
        workers.runPhase()
        for lane in workers.lanes {
            for t in lane.members {
                swap(&targetShadows[t], &lane.shadows[t])
                metrics.targets[t] = lane.metrics[t]
            }
        }
        swap(&shadow, &plan.shadow)
        swap(&memory, &plan.memory)
        swap(&scratch.removed, &plan.removed)
        swap(&scratch.toMap, &plan.toMap)
    }

    /// Runs the plan on every target in service. Returns `false` when a target failed and the
    /// batch must be rolled back; under quarantine a failing target leaves service instead.
    /// Outcomes merge in target order, as the sequential path meets them.
    mutating func execute(change c: Int, outcome: inout MirrorChangeOutcome, result: inout MirrorBatchResult) -> Bool {
        // A plan without calls changes no target: no phase.
        if scratch.removed.isEmpty && scratch.toMap.isEmpty { return true }
        runPhase(undo: false, change: c, transient: outcome.transientUnmaps)
        var ok = true
        for t in targets.indices where !quarantined[t] {
            let lane = workers.lanes[workers.laneOf[t]]
            guard let failure = lane.failure[t] else { continue }
            metrics.targets[t].failures += 1
            result.targets[t].failure = failure
            result.targets[t].failedChange = c
            result.targets[t].operationsDoneInFailedChange = lane.done[t]
            if configuration.failure == .rollback {
                ok = false
            } else {
                quarantined[t] = true
                result.targets[t].state = .quarantined
            }
        }
        return ok
    }

    /// Marks where change `c`'s journal entries begin, in the engine and in every lane.
    mutating func markJournals() {
        guard configuration.failure == .rollback else { return }
        scratch.marks.append(scratch.journal.count)
        for lane in workers.lanes { lane.marks.append(lane.journal.count) }
    }

    /// Makes the plan the engine's view, after every target in service holds it.
    mutating func commit(_ change: MirrorChange) {
        let journaling = configuration.failure == .rollback
        for i in scratch.removed.reversed() {
            let e = shadow.remove(at: i)
            if journaling { scratch.journal.append(.shadowRemoved(e)) }
        }
        for e in scratch.toMap {
            try! shadow.insert(e)
            if journaling { scratch.journal.append(.shadowInserted(e)) }
        }
        switch change {
        case .addRegion(let region):
            try! memory.add(region)
            if journaling { scratch.journal.append(.regionAdded(region.guestPhysical.first)) }
        case .removeRegion(let base):
            let region = try! memory.remove(base: base)
            if journaling {
                scratch.removedRegions.append(region)
                scratch.journal.append(.regionRemoved)
            }
        case .setRoot(let newRoot):
            if case .pageTable(let f, let old) = mode {
                mode = .pageTable(f, root: newRoot)
                if journaling { scratch.journal.append(.root(old)) }
            }
        default: break
        }
    }

    /// Undoes the batch on every target and in the engine, newest change first: the engine's
    /// entries of a change, then (one phase, every lane at once) the targets' entries of it, so
    /// each undo sees the guest memory of its time. A target whose undo fails leaves service
    /// holding its shadow.
    mutating func rollBack(failedChange c: Int, result: inout MirrorBatchResult) {
        result.rolledBack = true
        for k in stride(from: c, through: 0, by: -1) {
            let mark = scratch.marks[k]
            while scratch.journal.count > mark {
                switch scratch.journal.removeLast() {
                case .shadowInserted(let e): shadow.remove(e)
                case .shadowRemoved(let e): try! shadow.insert(e)
                case .regionAdded(let base): _ = try! memory.remove(base: base)
                case .regionRemoved: try! memory.add(scratch.removedRegions.removeLast())
                case .root(let old):
                    if case .pageTable(let f, _) = mode { mode = .pageTable(f, root: old) }
                case .mapped, .unmapped: break
                }
            }
            guard workers.lanes.contains(where: { k < $0.marks.count && $0.journal.count > $0.marks[k] }) else { continue }
            runPhase(undo: true, change: k, transient: 0)
            for t in targets.indices where !quarantined[t] {
                guard let error = workers.lanes[workers.laneOf[t]].undoFailure[t] else { continue }
                quarantine(t, after: error, result: &result)
            }
        }
        scratch.marks.removeAll(keepingCapacity: true)
        for lane in workers.lanes {
            lane.journal.removeAll(keepingCapacity: true)
            lane.marks.removeAll(keepingCapacity: true)
        }
        for t in targets.indices where result.targets[t].state == .synced { result.targets[t].appliedChanges = 0 }
        for k in 0..<c where result.changes[k].status == .applied { result.changes[k].status = .rolledBack }
    }

    mutating func quarantine(_ t: Int, after error: MirrorTargetError, result: inout MirrorBatchResult) {
        quarantined[t] = true
        metrics.targets[t].failures += 1
        result.targets[t].state = .rollbackFailed
        if result.targets[t].failure == nil { result.targets[t].failure = error }
    }

    /// Puts a quarantined target back in service after the caller made it hold ``shadow``
    /// again (emptied and rebuilt it, say); its shadow is set to ``shadow``.
    public mutating func restore(target t: Int) {
        targetShadows[t] = shadow
        quarantined[t] = false
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds, for the latency histogram: a vDSO read, not a system
/// call (`ContinuousClock` and `Duration.components` cost about 600 instructions a change).
@inline(__always)
func monotonicNanoseconds() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return UInt64(t.tv_sec) &* 1_000_000_000 &+ UInt64(t.tv_nsec)
}

/// What the engine undoes on rollback.
enum JournalEntry {
    case mapped(target: Int, MirrorExtent)
    case unmapped(target: Int, MirrorExtent)
    case shadowInserted(MirrorExtent)
    case shadowRemoved(MirrorExtent)
    case regionAdded(GuestPhysicalAddress)
    /// The newest of ``Scratch/removedRegions`` (kept apart, so that an entry holds no
    /// reference and copies as plain bytes).
    case regionRemoved
    case root(GuestPhysicalAddress)
}

/// Buffers kept from change to change.
struct Scratch {
    var removed: [Int] = []
    var toMap: [MirrorExtent] = []
    var walked: [GuestTranslation] = []
    var desired: [MirrorExtent] = []
    var keptRanges: [IOVARange] = []
    var journal: [JournalEntry] = []
    /// The regions the batch removed, oldest first (``JournalEntry/regionRemoved``).
    var removedRegions: [MirrorMemoryRegion] = []
    /// `marks[k]`: where change `k`'s entries begin in ``journal``.
    var marks: [Int] = []

    init(capacity: Int) {
        removed.reserveCapacity(capacity)
        toMap.reserveCapacity(capacity)
        walked.reserveCapacity(capacity)
        desired.reserveCapacity(capacity)
        keptRanges.reserveCapacity(capacity)
        journal.reserveCapacity(4 * capacity)
        marks.reserveCapacity(capacity)
    }
}
