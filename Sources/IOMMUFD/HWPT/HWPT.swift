import CIOMMUFD

extension IOMMUFDContext {
    /// Allocates a paging HWPT: a page table the kernel builds from the mappings of `ioas`,
    /// made for the IOMMU behind `device`.
    ///
    /// Attach devices to it with ``VFIODevice/attach(to:pasid:)-(HWPTID,_)``; it lives until
    /// ``destroy(_:)`` (`EBUSY` while attached or a parent).
    ///
    /// - Parameters:
    ///   - flags: `nestParent`, `dirtyTracking`, `pasid`.
    ///   - data: Driver data for a paging HWPT, where the driver takes some (the mock IOMMU's
    ///     page-table type); `nil` for none.
    /// - Throws: ``IOMMUFDError``; from the kernel `EOPNOTSUPP` for flags or data this IOMMU
    ///   lacks (``IOMMUFDError/isNotSupported``), `EINVAL` for an unknown `ioas`, `ENOENT`
    ///   for an unknown device.
    ///
    /// The corresponding ioctl is `IOMMU_HWPT_ALLOC`.
    public func allocateHWPT(
        for device: DeviceID, in ioas: IOASID, flags: HWPTAllocationFlags = [], data: HWPTData? = nil
    ) throws(IOMMUFDError) -> HWPTID {
        try allocateHWPT(device, PageTableID(ioas), flags.rawValue, data, .allocateHWPT)
    }

    /// Allocates a nested HWPT: a stage-1 table owned by a guest (described by `data`) on top of
    /// a nesting parent HWPT or a vIOMMU.
    ///
    /// - Parameters:
    ///   - parent: A HWPT allocated with ``HWPTAllocationFlags/nestParent``, or a vIOMMU.
    ///   - data: The guest table in the IOMMU's format.
    ///   - flags: Only ``HWPTAllocationFlags/pasid`` makes sense here.
    ///   - faultQueue: Deliver I/O page faults of devices attached to this HWPT to that queue
    ///     (sets `IOMMU_HWPT_FAULT_ID_VALID`).
    /// - Throws: ``IOMMUFDError``; from the kernel `EOPNOTSUPP` for a data type the IOMMU does
    ///   not take, `EINVAL` for data too short or a parent that is not a nesting parent,
    ///   `E2BIG` for longer data with nonzero bytes past the kernel's struct, `ENOENT` for an
    ///   unknown fault queue.
    ///
    /// The corresponding ioctl is `IOMMU_HWPT_ALLOC`.
    public func allocateNestedHWPT(
        for device: DeviceID, parent: PageTableID, data: HWPTData, flags: HWPTAllocationFlags = [],
        faultQueue: FaultQueueID? = nil
    ) throws(IOMMUFDError) -> HWPTID {
        var raw = flags.rawValue
        if faultQueue != nil { raw |= HWPTAllocationFlags.faultIDValid }
        return try allocateHWPT(device, parent, raw, data, .allocateNestedHWPT, fault: faultQueue)
    }

    /// ``allocateNestedHWPT(for:parent:data:flags:faultQueue:)-(_,PageTableID,_,_,_)`` on a nesting parent HWPT.
    public func allocateNestedHWPT(
        for device: DeviceID, parent: HWPTID, data: HWPTData, flags: HWPTAllocationFlags = [],
        faultQueue: FaultQueueID? = nil
    ) throws(IOMMUFDError) -> HWPTID {
        try allocateNestedHWPT(for: device, parent: PageTableID(parent), data: data, flags: flags, faultQueue: faultQueue)
    }

    /// ``allocateNestedHWPT(for:parent:data:flags:faultQueue:)-(_,PageTableID,_,_,_)`` on a vIOMMU.
    public func allocateNestedHWPT(
        for device: DeviceID, parent: VIOMMUID, data: HWPTData, flags: HWPTAllocationFlags = [],
        faultQueue: FaultQueueID? = nil
    ) throws(IOMMUFDError) -> HWPTID {
        try allocateNestedHWPT(for: device, parent: PageTableID(parent), data: data, flags: flags, faultQueue: faultQueue)
    }

    private func allocateHWPT(
        _ device: DeviceID, _ pageTable: PageTableID, _ flags: UInt32, _ data: HWPTData?,
        _ operation: IOMMUFDError.Operation, fault: FaultQueueID? = nil
    ) throws(IOMMUFDError) -> HWPTID {
        var cmd = makeCommand(cio_iommu_hwpt_alloc.self)
        cmd.flags = flags
        cmd.dev_id = device.rawValue
        cmd.pt_id = pageTable.rawValue
        cmd.fault_id = fault?.rawValue ?? 0
        guard let data else {
            try ioctl(.hwptAlloc, &cmd, operation)
            return HWPTID(cmd.out_hwpt_id)
        }
        return try data.withEncoded(operation) { (bytes) throws(IOMMUFDError) -> HWPTID in
            cmd.data_type = data.type.rawValue
            cmd.data_len = UInt32(bytes.count)
            cmd.data_uptr = UInt64(UInt(bitPattern: bytes.baseAddress))
            try ioctl(.hwptAlloc, &cmd, operation)
            return HWPTID(cmd.out_hwpt_id)
        }
    }
}

extension IOMMUFDError.Operation {
    public static let allocateHWPT = Self(rawValue: "allocateHWPT")
    public static let allocateNestedHWPT = Self(rawValue: "allocateNestedHWPT")
    public static let invalidate = Self(rawValue: "invalidate")
    public static let setDirtyTracking = Self(rawValue: "setDirtyTracking")
    public static let dirtyBitmap = Self(rawValue: "dirtyBitmap")
}
