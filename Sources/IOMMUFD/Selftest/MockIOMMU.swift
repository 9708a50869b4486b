import CIOMMUFD

/// A mock device of the kernel's own test IOMMU (`CONFIG_IOMMUFD_TEST`), made by
/// ``IOMMUFDContext/addMockDevice(to:flags:)``: a device bound to the iommufd and attached to a page
/// table, whose mock page table the kernel can be asked to check.
public struct MockDevice: Hashable, Sendable {
    /// The selftest object (`stdev_id`); destroying it (``IOMMUFDContext/destroy(_:)``) removes
    /// the device.
    public let id: MockDeviceID
    /// The raw value of ``id``.
    public var selftestID: UInt32 { id.rawValue }
    /// The HWPT the device was attached to (auto-allocated for an IOAS).
    public let hwpt: HWPTID
    /// The device's id, usable wherever a bound VFIO device's id is (HW info, HWPT alloc, ...).
    public let device: DeviceID
}

/// The selftest object of a mock device (`MOCK_DOMAIN`'s `out_stdev_id`): an object of the
/// iommufd like an IOAS, whose destruction removes the device.
public struct MockDeviceID: IOMMUObjectID {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
}

/// Flags of a mock device (`MOCK_FLAGS_DEVICE_*`).
public struct MockDeviceFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// The mock device cannot track dirty pages.
    public static let noDirtyTracking = Self(rawValue: CIO_MOCK_FLAGS_DEVICE_NO_DIRTY)
    /// The mock device supports PASID.
    public static let pasid = Self(rawValue: CIO_MOCK_FLAGS_DEVICE_PASID)
}

extension IOMMUFDContext {
    /// Whether this kernel has the test IOMMU (it knows `IOMMU_TEST_CMD`).
    public var hasMockIOMMU: Bool { supports(.testCommand) }

    /// Adds a mock device attached to `pageTable` (an IOAS or HWPT).
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS`).
    public func addMockDevice(to pageTable: PageTableID, flags: MockDeviceFlags = []) throws(IOMMUFDError) -> MockDevice {
        var cmd = makeCommand(cio_iommu_test_cmd.self)
        cmd.op = CIO_IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS
        cmd.id = pageTable.rawValue
        cmd.mock_domain_flags.dev_flags = flags.rawValue
        try ioctl(.testCommand, &cmd, .addMockDevice)
        return MockDevice(id: MockDeviceID(cmd.mock_domain_flags.out_stdev_id), hwpt: HWPTID(cmd.mock_domain_flags.out_hwpt_id),
                          device: DeviceID(cmd.mock_domain_flags.out_idev_id))
    }

    /// Moves a mock device to another page table.
    ///
    /// - Returns: The HWPT the device uses now (auto-allocated when `pageTable` is an IOAS).
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE`).
    @discardableResult
    public func replaceMockDevicePageTable(_ device: MockDevice, with pageTable: PageTableID) throws(IOMMUFDError) -> HWPTID {
        var cmd = makeCommand(cio_iommu_test_cmd.self)
        cmd.op = CIO_IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE
        cmd.id = device.id.rawValue
        cmd.mock_domain_replace.pt_id = pageTable.rawValue
        try ioctl(.testCommand, &cmd, .replaceMockDevicePageTable)
        return HWPTID(cmd.mock_domain_replace.pt_id)
    }

    /// Asks the kernel whether the mock page table of `hwpt` maps `range` to the process memory
    /// at `host`, page by page. Throws (`EINVAL`) when any page differs, `ENOENT` when `hwpt`
    /// is not a mock paging HWPT.
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_MD_CHECK_MAP`).
    public func mockCheckMap(_ hwpt: HWPTID, _ range: IOVARange, maps host: HostAddress) throws(IOMMUFDError) {
        var cmd = makeCommand(cio_iommu_test_cmd.self)
        cmd.op = CIO_IOMMU_TEST_OP_MD_CHECK_MAP
        cmd.id = hwpt.rawValue
        cmd.check_map.iova = range.first.rawValue
        cmd.check_map.length = range.length ?? 0
        cmd.check_map.uptr = host.rawValue
        try ioctl(.testCommand, &cmd, .mockCheckMap)
    }

    /// Reserves an IOVA range in `ioas`, as a device's reserved region would.
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_ADD_RESERVED`).
    public func mockAddReserved(_ range: IOVARange, in ioas: IOASID) throws(IOMMUFDError) {
        var cmd = makeCommand(cio_iommu_test_cmd.self)
        cmd.op = CIO_IOMMU_TEST_OP_ADD_RESERVED
        cmd.id = ioas.rawValue
        cmd.add_reserved.start = range.first.rawValue
        cmd.add_reserved.length = range.length ?? 0
        try ioctl(.testCommand, &cmd, .mockAddReserved)
    }

    /// Marks pages of a mock paging HWPT dirty, as a device write would: page `i` of `range`
    /// (in `pageSize` pages) for each index in `pageIndices`. The HWPT must have dirty tracking on.
    ///
    /// - Returns: How many pages the mock marked.
    /// - Throws: ``IOMMUFDError``; before the call for an index outside the range (`EINVAL`);
    ///   from the kernel `EINVAL` when tracking is off or the range is misaligned.
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_DIRTY`).
    @discardableResult
    public func mockMarkDirty(
        _ hwpt: HWPTID, range: IOVARange, pageSize: PageSize, pageIndices: [Int]
    ) throws(IOMMUFDError) -> UInt64 {
        let words64 = Int(Self.dirtyBitmapBytes(range, pageSize) / 8)
        let pages = Int((range.last.rawValue - range.first.rawValue) >> UInt64(pageSize.shift)) + 1
        var words = [UInt64](repeating: 0, count: words64)
        for i in pageIndices {
            guard i >= 0, i < pages else {
                throw IOMMUFDError(.mockMarkDirty, reason: .invalidArgument("page \(i) is outside the \(pages) pages of \(range)"))
            }
            words[i / 64] |= 1 << UInt64(i % 64)
        }
        var cmd = makeCommand(cio_iommu_test_cmd.self)
        cmd.op = CIO_IOMMU_TEST_OP_DIRTY
        cmd.id = hwpt.rawValue
        cmd.dirty.iova = range.first.rawValue
        cmd.dirty.length = range.length ?? 0
        cmd.dirty.page_size = pageSize.bytes
        let r: Result<Void, IOMMUFDError> = words.withUnsafeMutableBytes { b in
            cmd.dirty.uptr = UInt64(UInt(bitPattern: b.baseAddress))
            return withUnsafeMutableBytes(of: &cmd) { ioctl(.testCommand, buffer: $0.baseAddress!, .mockMarkDirty) }
        }
        try r.get()
        return cmd.dirty.out_nr_dirty
    }

    /// Asks the kernel whether IOTLB entry `entry` (0...3) of a mock nested HWPT holds `value`.
    /// Throws `EINVAL` when it does not, `ENOENT` when `hwpt` is not a nested HWPT.
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_MD_CHECK_IOTLB`).
    public func mockCheckIOTLB(_ hwpt: HWPTID, entry: Int, equals value: UInt32) throws(IOMMUFDError) {
        guard entry >= 0, entry <= Int(CIO_MOCK_NESTED_DOMAIN_IOTLB_ID_MAX) else {
            throw IOMMUFDError(.mockCheckIOTLB, reason: .invalidArgument("IOTLB entry \(entry) is outside 0...\(CIO_MOCK_NESTED_DOMAIN_IOTLB_ID_MAX)"))
        }
        var cmd = makeCommand(cio_iommu_test_cmd.self)
        cmd.op = CIO_IOMMU_TEST_OP_MD_CHECK_IOTLB
        cmd.id = hwpt.rawValue
        cmd.check_iotlb.id = UInt32(entry)
        cmd.check_iotlb.iotlb = value
        try ioctl(.testCommand, &cmd, .mockCheckIOTLB)
    }

    /// Asks the kernel whether cache entry `entry` (0...3) of a mock device holds `value`.
    /// Throws `EINVAL` when it does not.
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_DEV_CHECK_CACHE`).
    public func mockCheckDeviceCache(_ device: DeviceID, entry: Int, equals value: UInt32) throws(IOMMUFDError) {
        guard entry >= 0, entry <= Int(CIO_MOCK_DEV_CACHE_ID_MAX) else {
            throw IOMMUFDError(.mockCheckDeviceCache, reason: .invalidArgument("cache entry \(entry) is outside 0...\(CIO_MOCK_DEV_CACHE_ID_MAX)"))
        }
        var cmd = makeCommand(cio_iommu_test_cmd.self)
        cmd.op = CIO_IOMMU_TEST_OP_DEV_CHECK_CACHE
        cmd.id = device.rawValue
        cmd.check_dev_cache.id = UInt32(entry)
        cmd.check_dev_cache.cache = value
        try ioctl(.testCommand, &cmd, .mockCheckDeviceCache)
    }

    /// Makes a mock device report an I/O page fault (a page request, last of its group) to the
    /// fault queue of the HWPT it is attached to.
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_TRIGGER_IOPF`).
    public func mockTriggerPageFault(
        device: DeviceID, pasid: UInt32 = 0, groupID: UInt32, permissions: PageFaultPermissions, address: UInt64
    ) throws(IOMMUFDError) {
        var cmd = makeCommand(cio_iommu_test_cmd.self)
        cmd.op = CIO_IOMMU_TEST_OP_TRIGGER_IOPF
        cmd.trigger_iopf.dev_id = device.rawValue
        cmd.trigger_iopf.pasid = pasid
        cmd.trigger_iopf.grpid = groupID
        cmd.trigger_iopf.perm = permissions.rawValue
        cmd.trigger_iopf.addr = address
        try ioctl(.testCommand, &cmd, .mockTriggerPageFault)
    }

    /// Makes a mock device raise one vEVENT (its virtual id) on its vIOMMU's selftest event
    /// queue. Throws `ENOENT` when the device has no vDEVICE or is not attached to a nested
    /// HWPT of the vIOMMU.
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_TRIGGER_VEVENT`).
    public func mockTriggerVEvent(device: DeviceID) throws(IOMMUFDError) {
        var cmd = makeCommand(cio_iommu_test_cmd.self)
        cmd.op = CIO_IOMMU_TEST_OP_TRIGGER_VEVENT
        cmd.trigger_vevent.dev_id = device.rawValue
        try ioctl(.testCommand, &cmd, .mockTriggerVEvent)
    }

    /// Attaches PASID `pasid` of a mock device to a page table (or replaces it when already
    /// attached and `replace` is set).
    ///
    /// - Returns: The HWPT now in use (auto-allocated for an IOAS).
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_PASID_ATTACH` / `_REPLACE`).
    @discardableResult
    public func mockAttachPASID(
        _ device: MockDevice, pasid: UInt32, to pageTable: PageTableID, replace: Bool = false
    ) throws(IOMMUFDError) -> HWPTID {
        var cmd = makeCommand(cio_iommu_test_cmd.self)
        cmd.op = replace ? CIO_IOMMU_TEST_OP_PASID_REPLACE : CIO_IOMMU_TEST_OP_PASID_ATTACH
        cmd.id = device.id.rawValue
        cmd.pasid_attach.pasid = pasid
        cmd.pasid_attach.pt_id = pageTable.rawValue
        try ioctl(.testCommand, &cmd, .mockAttachPASID)
        return HWPTID(cmd.pasid_attach.pt_id)
    }

    /// Detaches PASID `pasid` of a mock device.
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_PASID_DETACH`).
    public func mockDetachPASID(_ device: MockDevice, pasid: UInt32) throws(IOMMUFDError) {
        var cmd = makeCommand(cio_iommu_test_cmd.self)
        cmd.op = CIO_IOMMU_TEST_OP_PASID_DETACH
        cmd.id = device.id.rawValue
        cmd.pasid_detach.pasid = pasid
        try ioctl(.testCommand, &cmd, .mockDetachPASID)
    }

    /// Asks the kernel whether PASID `pasid` of a mock device is attached to `hwpt` (`nil`:
    /// detached). Throws `EINVAL` when it is not.
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_PASID_CHECK_HWPT`).
    public func mockCheckPASID(_ device: MockDevice, pasid: UInt32, attachedTo hwpt: HWPTID?) throws(IOMMUFDError) {
        var cmd = makeCommand(cio_iommu_test_cmd.self)
        cmd.op = CIO_IOMMU_TEST_OP_PASID_CHECK_HWPT
        cmd.id = device.id.rawValue
        cmd.pasid_check.pasid = pasid
        cmd.pasid_check.hwpt_id = hwpt?.rawValue ?? 0
        try ioctl(.testCommand, &cmd, .mockCheckPASID)
    }
}

extension IOMMUFDContext {
    /// Asks the kernel whether every page of `host` is pinned `pins` times (each pin by
    /// iommufd or an access adds `GUP_PIN_COUNTING_BIAS` references; the kernel compares the
    /// page's reference count divided by that bias). Pages of a huge (compound) page are not
    /// checked. The memory must be mapped in this process.
    ///
    /// - Throws: ``IOMMUFDError``; before the call for a range that is not aligned to the system
    ///   page size or is the whole space (the kernel answers `EINVAL`); from the kernel `EIO`
    ///   when a page's count differs, `EFAULT` for memory not mapped in the process.
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_MD_CHECK_REFS`).
    public func mockCheckPins(_ host: HostRange, equal pins: UInt32) throws(IOMMUFDError) {
        guard let length = host.length else {
            throw IOMMUFDError(.mockCheckRefs, request: .testCommand, reason: .invalidRange(.wholeSpace))
        }
        do { try host.checkAligned(to: .system) } catch {
            throw IOMMUFDError(.mockCheckRefs, request: .testCommand, reason: .invalidRange(error))
        }
        var cmd = makeCommand(cio_iommu_test_cmd.self)
        cmd.op = CIO_IOMMU_TEST_OP_MD_CHECK_REFS
        cmd.check_refs.length = length
        cmd.check_refs.uptr = host.first.rawValue
        cmd.check_refs.refs = pins
        try ioctl(.testCommand, &cmd, .mockCheckRefs)
    }

    /// The mock's temporary-memory limit at boot, in bytes.
    public static let mockDefaultTemporaryMemoryLimit: UInt32 = 65536

    /// Sets how much temporary memory the kernel's page-pinning batches may use, so a test can
    /// drive the paths taken when a batch is small. The limit is global to the kernel, not to
    /// this iommufd: set ``mockDefaultTemporaryMemoryLimit`` again afterwards.
    ///
    /// - Throws: ``IOMMUFDError``; from the kernel `EINVAL` below 12 bytes (one batch element).
    ///
    /// The corresponding ioctl is `IOMMU_TEST_CMD` (`IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT`).
    public func mockSetTemporaryMemoryLimit(_ bytes: UInt32) throws(IOMMUFDError) {
        var cmd = makeCommand(cio_iommu_test_cmd.self)
        cmd.op = CIO_IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT
        cmd.memory_limit.limit = bytes
        try ioctl(.testCommand, &cmd, .mockSetTemporaryMemoryLimit)
    }
}

extension IOMMUFDError.Operation {
    public static let addMockDevice = Self(rawValue: "addMockDevice")
    public static let replaceMockDevicePageTable = Self(rawValue: "replaceMockDevicePageTable")
    public static let mockCheckMap = Self(rawValue: "mockCheckMap")
    public static let mockAddReserved = Self(rawValue: "mockAddReserved")
    public static let mockMarkDirty = Self(rawValue: "mockMarkDirty")
    public static let mockCheckIOTLB = Self(rawValue: "mockCheckIOTLB")
    public static let mockCheckDeviceCache = Self(rawValue: "mockCheckDeviceCache")
    public static let mockTriggerPageFault = Self(rawValue: "mockTriggerPageFault")
    public static let mockTriggerVEvent = Self(rawValue: "mockTriggerVEvent")
    public static let mockAttachPASID = Self(rawValue: "mockAttachPASID")
    public static let mockDetachPASID = Self(rawValue: "mockDetachPASID")
    public static let mockCheckPASID = Self(rawValue: "mockCheckPASID")
    public static let mockCheckRefs = Self(rawValue: "mockCheckRefs")
    public static let mockSetTemporaryMemoryLimit = Self(rawValue: "mockSetTemporaryMemoryLimit")
    public static let mockCreateAccess = Self(rawValue: "mockCreateAccess")
    public static let mockAccessReplaceIOAS = Self(rawValue: "mockAccessReplaceIOAS")
    public static let mockAccessRead = Self(rawValue: "mockAccessRead")
    public static let mockAccessWrite = Self(rawValue: "mockAccessWrite")
    public static let mockAccessPinPages = Self(rawValue: "mockAccessPinPages")
    public static let mockAccessUnpinPages = Self(rawValue: "mockAccessUnpinPages")
    public static let mockDMABufGet = Self(rawValue: "mockDMABufGet")
    public static let mockDMABufRevoke = Self(rawValue: "mockDMABufRevoke")
}
