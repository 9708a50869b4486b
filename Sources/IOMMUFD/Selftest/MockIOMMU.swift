import CIOMMUFD

/// A mock device of the kernel's own test IOMMU (`CONFIG_IOMMUFD_TEST`), made by
/// ``IOMMUFD/addMockDevice(to:flags:)``: a device bound to the iommufd and attached to a page
/// table, whose mock page table the kernel can be asked to check.
public struct MockDevice: Hashable, Sendable {
    /// The selftest object; destroying it removes the device.
    public let selftestID: UInt32
    /// The HWPT the device was attached to (auto-allocated for an IOAS).
    public let hwpt: HWPTID
    /// The device's id, usable wherever a bound VFIO device's id is (HW info, HWPT alloc, ...).
    public let device: DeviceID
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

extension IOMMUFD {
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
        try ioctl(.testCommand, &cmd, .mockIOMMU)
        return MockDevice(selftestID: cmd.mock_domain_flags.out_stdev_id, hwpt: HWPTID(cmd.mock_domain_flags.out_hwpt_id),
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
        cmd.id = device.selftestID
        cmd.mock_domain_replace.pt_id = pageTable.rawValue
        try ioctl(.testCommand, &cmd, .mockIOMMU)
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
        try ioctl(.testCommand, &cmd, .mockIOMMU)
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
        try ioctl(.testCommand, &cmd, .mockIOMMU)
    }
}

extension IOMMUFDError.Operation {
    public static let mockIOMMU = Self(rawValue: "mockIOMMU")
}
