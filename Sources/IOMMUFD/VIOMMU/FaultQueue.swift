import CIOMMUFD

/// Flags of an I/O page fault (`IOMMU_PGFAULT_FLAGS_*`).
public struct PageFaultFlags: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// ``PageFault/pasid`` is meaningful.
    public static let pasidValid = Self(rawValue: CIO_IOMMU_PGFAULT_FLAGS_PASID_VALID)
    /// The last fault of its group: the group wants one response.
    public static let lastPage = Self(rawValue: CIO_IOMMU_PGFAULT_FLAGS_LAST_PAGE)
    public var description: String {
        flagDescription(rawValue, [(Self.pasidValid.rawValue, "pasidValid"), (Self.lastPage.rawValue, "lastPage")])
    }
}

/// What the faulting access wanted (`IOMMU_PGFAULT_PERM_*`).
public struct PageFaultPermissions: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let read = Self(rawValue: CIO_IOMMU_PGFAULT_PERM_READ)
    public static let write = Self(rawValue: CIO_IOMMU_PGFAULT_PERM_WRITE)
    public static let execute = Self(rawValue: CIO_IOMMU_PGFAULT_PERM_EXEC)
    public static let privileged = Self(rawValue: CIO_IOMMU_PGFAULT_PERM_PRIV)
    public var description: String {
        flagDescription(rawValue, [(Self.read.rawValue, "read"), (Self.write.rawValue, "write"),
                                   (Self.execute.rawValue, "execute"), (Self.privileged.rawValue, "privileged")])
    }
}

/// One I/O page fault read from a fault queue (`struct iommu_hwpt_pgfault`).
public struct PageFault: Hashable, Sendable {
    public var flags: PageFaultFlags
    public var device: DeviceID
    public var pasid: UInt32
    public var groupID: UInt32
    public var permissions: PageFaultPermissions
    /// The faulting address in the device's (guest's stage-1) address space.
    public var address: UInt64
    /// Bytes the fault covers (informational).
    public var length: UInt32
    /// Pass back in the response to the group.
    public var cookie: UInt32
}

/// The answer to a fault group (`enum iommufd_page_response_code`).
public struct PageResponseCode: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// The page is there now; the device retries. `IOMMUFD_PAGE_RESP_SUCCESS`.
    public static let success = Self(rawValue: CIO_IOMMUFD_PAGE_RESP_SUCCESS)
    /// The fault cannot be resolved. `IOMMUFD_PAGE_RESP_INVALID`.
    public static let invalid = Self(rawValue: CIO_IOMMUFD_PAGE_RESP_INVALID)
}

/// The owner of a fault queue's file descriptor, closed when the owner ends (the queue object
/// lives until ``IOMMUFDContext/destroy(_:)``). Faults of devices attached to a HWPT allocated with
/// this queue are read here and answered with ``respond(cookie:code:)``.
public struct FaultQueue: ~Copyable, Sendable {
    public let id: FaultQueueID
    let handle: KernelDescriptor
    public var descriptor: CInt { handle.rawValue }
    var kernel: any KernelInterface { handle.kernel }

    init(id: FaultQueueID, descriptor: CInt, kernel: any KernelInterface) {
        self.id = id
        self.handle = KernelDescriptor(descriptor, kernel: kernel)
    }

    /// Closes the descriptor now. The queue object stays until ``IOMMUFDContext/destroy(_:)``, which
    /// answers `EBUSY` while the descriptor is open.
    public consuming func close() throws(IOMMUFDError) { try handle.close() }

    /// The most records one ``read(maximum:_:)`` takes (they land on the stack).
    public static let maximumRead = 1024

    /// Waits up to `milliseconds` for a fault to be readable; true when one is.
    public func wait(milliseconds: Int32) throws(IOMMUFDError) -> Bool {
        try handle.waitReadable(milliseconds: milliseconds, .readEvents)
    }

    /// Reads up to `maximum` faults without blocking, calling `body` for each; returns how
    /// many (0 when none is queued). Whole groups only: a group larger than `maximum` is
    /// refused by the kernel (`EINVAL`).
    ///
    /// The corresponding call is `read(2)` on the fault queue fd.
    @discardableResult
    public func read(maximum: Int = 16, _ body: (PageFault) -> Void) throws(IOMMUFDError) -> Int {
        guard maximum > 0, maximum <= FaultQueue.maximumRead else {
            throw IOMMUFDError(.readEvents, reason: .invalidArgument("maximum \(maximum) is outside 1...\(FaultQueue.maximumRead)"))
        }
        let size = MemoryLayout<cio_iommu_hwpt_pgfault>.size
        return try withUnsafeTemporaryAllocation(byteCount: maximum * size, alignment: 8) {
            (buffer) throws(IOMMUFDError) -> Int in
            let n: Int
            switch kernel.read(descriptor, into: buffer) {
            case .success(let count): n = count
            case .failure(let e): throw IOMMUFDError(.readEvents, errno: e)
            }
            for i in 0..<(n / size) {
                let f = buffer.loadUnaligned(fromByteOffset: i * size, as: cio_iommu_hwpt_pgfault.self)
                body(PageFault(flags: PageFaultFlags(rawValue: f.flags), device: DeviceID(f.dev_id), pasid: f.pasid,
                               groupID: f.grpid, permissions: PageFaultPermissions(rawValue: f.perm), address: f.addr,
                               length: f.length, cookie: f.cookie))
            }
            return n / size
        }
    }

    /// Reads up to `maximum` faults into an array; see ``read(maximum:_:)``.
    public func readFaults(maximum: Int = 16) throws(IOMMUFDError) -> [PageFault] {
        var faults: [PageFault] = []
        try read(maximum: maximum) { faults.append($0) }
        return faults
    }

    /// Answers one fault group.
    ///
    /// - Throws: ``IOMMUFDError``; `EINVAL` for a cookie with no outstanding group.
    ///
    /// The corresponding call is `write(2)` of a `struct iommu_hwpt_page_response`.
    public func respond(cookie: UInt32, code: PageResponseCode) throws(IOMMUFDError) {
        var response = cio_iommu_hwpt_page_response(cookie: cookie, code: code.rawValue)
        let r = withUnsafeBytes(of: &response) { kernel.write(descriptor, from: $0) }
        switch r {
        case .success(let n) where n == MemoryLayout<cio_iommu_hwpt_page_response>.size: return
        case .success(let n): throw IOMMUFDError(.respondToFaults, reason: .unexpectedResult("wrote \(n) bytes"))
        case .failure(let e): throw IOMMUFDError(.respondToFaults, errno: e)
        }
    }
}

/// Flags of `IOMMU_FAULT_QUEUE_ALLOC`. 7.3 defines none; bits given here reach the kernel
/// unchanged (it answers `EOPNOTSUPP`), so a newer flag can be probed.
public struct FaultQueueFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
}

extension IOMMUFDContext {
    /// Allocates a fault queue for I/O page faults; pass its ``FaultQueue/id`` to
    /// ``allocateNestedHWPT(for:parent:data:flags:faultQueue:)-(_,PageTableID,_,_,_)``.
    ///
    /// - Throws: ``IOMMUFDError``; from the kernel `EOPNOTSUPP` for any flag (7.3 knows none).
    ///
    /// The corresponding ioctl is `IOMMU_FAULT_QUEUE_ALLOC`.
    public func allocateFaultQueue(flags: FaultQueueFlags = []) throws(IOMMUFDError) -> FaultQueue {
        var cmd = makeCommand(cio_iommu_fault_alloc.self)
        cmd.flags = flags.rawValue
        try ioctl(.faultQueueAlloc, &cmd, .allocateFaultQueue)
        return FaultQueue(id: FaultQueueID(cmd.out_fault_id), descriptor: CInt(bitPattern: cmd.out_fault_fd), kernel: kernel)
    }
}
