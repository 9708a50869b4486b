public import IOMMUAddresses
public import IOPageTables
public import Histogram

/// One guest mapping change, as a VMM's vIOMMU front end receives it.
public enum MirrorChange: Sendable {
    /// Request mode (a virtio-iommu MAP): `length` bytes at `iova` to guest-physical `guestPhysical`.
    case map(iova: IOVA, length: UInt64, guestPhysical: GuestPhysicalAddress, permissions: Permissions)
    /// Request mode (a virtio-iommu UNMAP): every mapping inside the range; one it would cut
    /// refuses the whole request (``MirrorRefusal/wouldSplit(_:)``).
    case unmap(iova: IOVA, length: UInt64)
    /// Page-table mode (an IOTLB invalidation): re-walk the range and apply the differences.
    case invalidate(iova: IOVA, length: UInt64)
    /// Page-table mode: re-walk the whole space; what stays is not touched.
    case resync
    /// Page-table mode: the guest points the space at another root table; then a resync.
    case setRoot(GuestPhysicalAddress)
    /// Both modes: new guest RAM.
    case addRegion(MirrorMemoryRegion)
    /// Both modes: guest RAM goes away; every mapping of it leaves every target first.
    case removeRegion(base: GuestPhysicalAddress)
}

/// Why the engine refused a change (or, in page-table mode, a leaf): bad guest input. Nothing
/// is mapped for what is refused.
public enum MirrorRefusal: Error, Hashable, Sendable, CustomStringConvertible {
    /// The change belongs to the other mode.
    case wrongMode
    /// A range of zero bytes.
    case emptyRange
    /// The range passes 2^64 (in IOVA or guest-physical space).
    case overflow
    /// Address or length not a multiple of the space's granule.
    case misaligned(granule: UInt64)
    /// IOVA outside the guest space.
    case outsideSpace(IOVARange)
    /// IOVA the target (by index) does not accept.
    case outsideTargetRange(target: Int, IOVARange)
    /// Guest-physical bytes that are not guest RAM, from this address.
    case outsideGuestMemory(GuestPhysicalAddress)
    /// A map overlapping a different existing mapping.
    case overlapsExisting(IOVARange)
    /// An unmap that would cut this mapping (virtio-iommu: nothing is removed).
    case wouldSplit(IOVARange)
    /// Rights no host mapping (target `nil`) or this target can carry.
    case permissionsNotExpressible(Permissions, target: Int?)
    /// The guest's table is malformed (the first such entry of the change): every target's
    /// areas over what that entry would translate are unmapped (fail closed), the rest kept;
    /// an exhausted walk budget unmaps the whole range.
    case guestTableFault(PageTableFault)
    /// A new region overlapping the region at this address.
    case regionOverlaps(GuestPhysicalAddress)
    /// No region starts at this address.
    case unknownRegion(GuestPhysicalAddress)
    /// An empty region, or one passing 2^64.
    case invalidRegion

    public var description: String {
        switch self {
        case .wrongMode: "change of the other mode"
        case .emptyRange: "empty range"
        case .overflow: "range passes 2^64"
        case .misaligned(let g): "not aligned to the 0x\(String(g, radix: 16))-byte granule"
        case .outsideSpace(let r): "\(r) is outside the guest space"
        case .outsideTargetRange(let t, let r): "\(r) is outside target \(t)'s usable ranges"
        case .outsideGuestMemory(let a): "guest-physical \(a) is not guest RAM"
        case .overlapsExisting(let r): "overlaps the mapping \(r)"
        case .wouldSplit(let r): "would split the mapping \(r)"
        case .permissionsNotExpressible(let p, let t): "rights \(p) not expressible" + (t.map { " by target \($0)" } ?? "")
        case .guestTableFault(let f): "guest table fault: \(f)"
        case .regionOverlaps(let a): "region overlaps the region at \(a)"
        case .unknownRegion(let a): "no region starts at \(a)"
        case .invalidRegion: "empty region or one passing 2^64"
        }
    }
}

/// A batch of changes in a buffer reused from batch to batch.
public struct MirrorBatch: Sendable {
    public private(set) var changes: [MirrorChange]

    public init(capacity: Int = 64) {
        changes = []
        changes.reserveCapacity(capacity)
    }

    public mutating func append(_ change: MirrorChange) { changes.append(change) }
    public mutating func removeAll() { changes.removeAll(keepingCapacity: true) }
    public var count: Int { changes.count }
}

/// What became of one change.
public struct MirrorChangeOutcome: Hashable, Sendable {
    public enum Status: Hashable, Sendable {
        /// Every target not quarantined holds the change.
        case applied
        /// Nothing needed doing: the targets already held it (no ioctl).
        case unchanged
        /// Bad guest input: ``MirrorChangeOutcome/refusal`` says why; nothing changed.
        case refused
        /// A target failed on this change (``MirrorBatchResult/targets`` says which and how far).
        case failed
        /// Applied, then undone with the rest of the batch (rollback policy).
        case rolledBack
        /// Not attempted: an earlier change of the batch failed (rollback policy).
        case notAttempted
    }

    public var status: Status
    /// Why it was refused, or (page-table mode, applied) the first leaf refused.
    public var refusal: MirrorRefusal?
    /// Guest leaves left unmapped as bad input (page-table mode).
    public var refusedLeaves = 0
    /// Host areas removed (in `unmaps` calls) and created, per target.
    public var unmaps = 0
    public var maps = 0
    /// Areas removed only to re-map part of them (page-table mode splits).
    public var transientUnmaps = 0

    public init(status: Status, refusal: MirrorRefusal? = nil) {
        self.status = status
        self.refusal = refusal
    }

    /// Target calls the change makes on each target.
    public var operations: Int { unmaps + maps }
}

/// What became of one target in a batch.
public struct MirrorTargetOutcome: Hashable, Sendable {
    public enum State: Hashable, Sendable {
        /// Holds the engine's view.
        case synced
        /// Taken out of service (now or before); it holds exactly ``MirrorEngine/targetShadows``.
        case quarantined
        /// Rollback could not undo everything on it; quarantined, holding its shadow.
        case rollbackFailed
    }

    public var state: State
    /// Changes, from the start of the batch, that this target holds whole.
    public var appliedChanges: Int
    /// The failure, if this target failed in this batch.
    public var failure: MirrorTargetError?
    /// The change it failed on, and how many of that change's calls had succeeded before.
    public var failedChange: Int?
    public var operationsDoneInFailedChange = 0

    public init(state: State, appliedChanges: Int) {
        self.state = state
        self.appliedChanges = appliedChanges
    }
}

/// The answer to one batch: per change and per target what is applied. Reused between batches
/// (pass the same one to ``MirrorEngine/apply(_:into:)``): it allocates only when it grows.
public struct MirrorBatchResult: Sendable {
    public internal(set) var changes: [MirrorChangeOutcome]
    public internal(set) var targets: [MirrorTargetOutcome]
    /// The batch was undone on every target (rollback policy).
    public internal(set) var rolledBack = false

    public init(capacity: Int = 64) {
        changes = []
        changes.reserveCapacity(capacity)
        targets = []
        targets.reserveCapacity(8)
    }

    /// How much of a change one target holds.
    public enum Application: Hashable, Sendable {
        case whole
        /// `done` of the change's `of` target calls succeeded; see ``MirrorTargetOutcome/failure``.
        case partial(done: Int, of: Int)
        case none
    }

    public func application(ofChange c: Int, onTarget t: Int) -> Application {
        let target = targets[t]
        if c < target.appliedChanges { return .whole }
        if c == target.failedChange, !rolledBack || target.state == .rollbackFailed {
            return .partial(done: target.operationsDoneInFailedChange, of: changes[c].operations)
        }
        return .none
    }
}

/// One target's counters.
public struct MirrorTargetMetrics: Hashable, Sendable {
    /// Calls into the target (for an IOAS, one ioctl each), failed ones and rollbacks included.
    public var calls = 0
    public var maps = 0
    public var unmaps = 0
    public var failures = 0
    public var bytesMapped: UInt64 = 0
    public var bytesUnmapped: UInt64 = 0
    /// Areas unmapped only to re-map part of them at once (page-table mode splits).
    public var transientUnmaps = 0
    /// Calls made to undo a batch.
    public var rollbackCalls = 0
    public init() {}
}

/// The engine's counters and its latency histogram.
public struct MirrorMetrics: Sendable {
    public var changesIn = 0
    public var changesRefused = 0
    /// Target work a naive mirror would have done that was not needed: duplicate maps, unmaps
    /// of nothing, re-maps of unchanged leaves (counted once per change or leaf, not per target).
    public var operationsElided = 0
    /// Guest leaves refused as bad input (page-table mode).
    public var leavesRefused = 0
    public var targets: [MirrorTargetMetrics]
    /// Nanoseconds per change, planning and every target's calls included.
    public var latency: Histogram<UInt64>

    init(targets: Int) {
        self.targets = Array(repeating: MirrorTargetMetrics(), count: targets)
        self.latency = Histogram(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
    }
}
