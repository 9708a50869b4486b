#if canImport(Glibc)
import Glibc
#endif
import CIOMMUFD

/// The kind of events a vEVENTQ carries (`enum iommu_veventq_type`); it fixes the payload size.
public struct VEventQueueType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// SMMUv3 event-queue entries (`struct iommu_vevent_arm_smmuv3`). `IOMMU_VEVENTQ_TYPE_ARM_SMMUV3`.
    public static let armSMMUv3 = Self(rawValue: CIO_IOMMU_VEVENTQ_TYPE_ARM_SMMUV3)
    /// Tegra241 CMDQV queue errors (`struct iommu_vevent_tegra241_cmdqv`). `IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV`.
    public static let tegra241CMDQV = Self(rawValue: CIO_IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV)
    /// The mock's events (`struct iommu_viommu_event_selftest`). `IOMMU_VEVENTQ_TYPE_SELFTEST`.
    public static let selftest = Self(rawValue: CIO_IOMMU_VEVENTQ_TYPE_SELFTEST)

    /// Bytes of one event after its header; `nil` for a type this package does not know.
    public var payloadSize: Int? {
        switch self {
        case .armSMMUv3: MemoryLayout<cio_iommu_vevent_arm_smmuv3>.size
        case .tegra241CMDQV: MemoryLayout<cio_iommu_vevent_tegra241_cmdqv>.size
        case .selftest: MemoryLayout<cio_iommu_viommu_event_selftest>.size
        default: nil
        }
    }

    public var description: String {
        switch self {
        case .armSMMUv3: "armSMMUv3"
        case .tegra241CMDQV: "tegra241CMDQV"
        case .selftest: "selftest"
        default: "VEventQueueType(0x\(String(rawValue, radix: 16)))"
        }
    }
}

/// One record read from a vEVENTQ.
public struct VEvent: Hashable, Sendable {
    /// What the record carries.
    public enum Payload: Hashable, Sendable {
        /// The queue overflowed (its depth was reached) and events were dropped here; the next
        /// event's sequence number skips the lost ones. `IOMMU_VEVENTQ_FLAG_LOST_EVENTS`.
        case lostEvents
        /// An SMMUv3 event-queue entry, four little-endian words.
        case armSMMUv3([UInt64])
        /// The Tegra241 CMDQV LVCMDQ error bitmap, two words.
        case tegra241CMDQV([UInt64])
        /// A mock event: the virtual id of the device that raised it.
        case selftest(virtualID: UInt32)
    }
    /// `flags` of the header (`IOMMU_VEVENTQ_FLAG_*`).
    public var flags: UInt32
    /// The header's sequence number, counting every event the queue was offered (wraps at 2^31).
    public var sequence: UInt32
    public var payload: Payload
    /// Whether this record reports dropped events.
    public var isLostEvents: Bool { flags & CIO_IOMMU_VEVENTQ_FLAG_LOST_EVENTS != 0 }
}

/// The owner of a vEVENTQ's file descriptor; closed when the owner ends (the queue object
/// itself lives until ``IOMMUFDContext/destroy(_:)``).
public struct VEventQueue: ~Copyable, Sendable {
    public let id: VEventQueueID
    let handle: KernelDescriptor
    public var descriptor: CInt { handle.rawValue }
    public let type: VEventQueueType
    var kernel: any KernelInterface { handle.kernel }

    init(id: VEventQueueID, descriptor: CInt, type: VEventQueueType, kernel: any KernelInterface) {
        self.id = id
        self.handle = KernelDescriptor(descriptor, kernel: kernel)
        self.type = type
    }

    /// Closes the descriptor now. The queue object stays until ``IOMMUFDContext/destroy(_:)``, which
    /// answers `EBUSY` while the descriptor is open.
    public consuming func close() throws(IOMMUFDError) { try handle.close() }

    /// The most records one ``read(maximum:_:)`` takes (they land on the stack).
    public static let maximumRead = 1024

    /// Waits up to `milliseconds` for an event to be readable; true when one is.
    public func wait(milliseconds: Int32) throws(IOMMUFDError) -> Bool {
        try handle.waitReadable(milliseconds: milliseconds, .readEvents)
    }

    /// Reads up to `maximum` queued events without blocking, calling `body` for each; returns
    /// how many were read (0 when the queue is empty). The records land in a stack buffer.
    ///
    /// - Throws: ``IOMMUFDError`` for a queue type of unknown payload size, or the kernel's
    ///   `errno` of `read(2)`.
    ///
    /// The corresponding call is `read(2)` on the vEVENTQ fd.
    @discardableResult
    public func read(maximum: Int = 16, _ body: (VEvent) -> Void) throws(IOMMUFDError) -> Int {
        guard let payload = type.payloadSize, maximum > 0, maximum <= VEventQueue.maximumRead else {
            throw IOMMUFDError(.readEvents, reason: .invalidArgument("cannot size events of \(type) (maximum \(maximum))"))
        }
        let header = MemoryLayout<cio_iommufd_vevent_header>.size
        return try withUnsafeTemporaryAllocation(byteCount: maximum * (header + payload), alignment: 8) {
            (buffer) throws(IOMMUFDError) -> Int in
            let n: Int
            switch kernel.read(descriptor, into: buffer) {
            case .success(let count): n = count
            case .failure(let e): throw IOMMUFDError(.readEvents, errno: e)
            }
            var offset = 0
            var events = 0
            while offset + header <= n {
                let h = buffer.loadUnaligned(fromByteOffset: offset, as: cio_iommufd_vevent_header.self)
                offset += header
                var event = VEvent(flags: h.flags, sequence: h.sequence, payload: .lostEvents)
                if !event.isLostEvents {
                    guard offset + payload <= n else {
                        throw IOMMUFDError(.readEvents, reason: .unexpectedResult("event \(events) cut at byte \(n)"))
                    }
                    let words = { (count: Int) in
                        (0..<count).map { UInt64(littleEndian: buffer.loadUnaligned(fromByteOffset: offset + 8 * $0, as: UInt64.self)) }
                    }
                    switch type {
                    case .armSMMUv3: event.payload = .armSMMUv3(words(4))
                    case .tegra241CMDQV: event.payload = .tegra241CMDQV(words(2))
                    default:
                        event.payload = .selftest(virtualID: buffer.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
                    }
                    offset += payload
                }
                events += 1
                body(event)
            }
            return events
        }
    }

    /// Reads up to `maximum` queued events into an array; see ``read(maximum:_:)``.
    public func readEvents(maximum: Int = 16) throws(IOMMUFDError) -> [VEvent] {
        var events: [VEvent] = []
        try read(maximum: maximum) { events.append($0) }
        return events
    }
}

extension IOMMUFDContext {
    /// Allocates a vEVENTQ on a vIOMMU: events of `type` the IOMMU reports for the vIOMMU's
    /// devices are queued (at most `depth`, then a lost-events record) and read from its fd.
    ///
    /// - Throws: ``IOMMUFDError``; before the call only for a depth no 32-bit field carries
    ///   (`EINVAL`, the kernel's answer for depths above its maximum); from the kernel
    ///   `EOPNOTSUPP` for the default type, `EINVAL` for a depth of 0 or above 2^19, `EEXIST`
    ///   when the vIOMMU already has a queue of that type.
    ///
    /// The corresponding ioctl is `IOMMU_VEVENTQ_ALLOC`.
    public func allocateEventQueue(viommu: VIOMMUID, type: VEventQueueType, depth: Int) throws(IOMMUFDError) -> VEventQueue {
        guard let depth = UInt32(exactly: depth) else {
            throw IOMMUFDError(.allocateEventQueue, request: .veventqAlloc, reason: .invalidArgument("depth \(depth) does not fit 32 bits"))
        }
        var cmd = makeCommand(cio_iommu_veventq_alloc.self)
        cmd.viommu_id = viommu.rawValue
        cmd.type = type.rawValue
        cmd.veventq_depth = UInt32(depth)
        try ioctl(.veventqAlloc, &cmd, .allocateEventQueue)
        return VEventQueue(id: VEventQueueID(cmd.out_veventq_id), descriptor: CInt(bitPattern: cmd.out_veventq_fd),
                           type: type, kernel: kernel)
    }
}
