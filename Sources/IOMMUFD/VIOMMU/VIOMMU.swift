import CIOMMUFD

/// The kind of a vIOMMU (`enum iommu_viommu_type`).
public struct VIOMMUType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// The core's generic vIOMMU (`IOMMU_VIOMMU_TYPE_DEFAULT`); 7.3 refuses it (`EOPNOTSUPP`).
    public static let `default` = Self(rawValue: CIO_IOMMU_VIOMMU_TYPE_DEFAULT)
    /// Arm SMMUv3. `IOMMU_VIOMMU_TYPE_ARM_SMMUV3`.
    public static let armSMMUv3 = Self(rawValue: CIO_IOMMU_VIOMMU_TYPE_ARM_SMMUV3)
    /// NVIDIA Tegra241 CMDQV. `IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV`.
    public static let tegra241CMDQV = Self(rawValue: CIO_IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV)
    /// The mock IOMMU's. `IOMMU_VIOMMU_TYPE_SELFTEST`.
    public static let selftest = Self(rawValue: CIO_IOMMU_VIOMMU_TYPE_SELFTEST)
    public var description: String {
        switch self {
        case .default: "default"
        case .armSMMUv3: "armSMMUv3"
        case .tegra241CMDQV: "tegra241CMDQV"
        case .selftest: "selftest"
        default: "VIOMMUType(0x\(String(rawValue, radix: 16)))"
        }
    }
}

/// Driver data of `IOMMU_VIOMMU_ALLOC`, in and out: the kernel fills the `out` fields.
public enum VIOMMUData: Hashable, Sendable {
    /// `struct iommu_viommu_tegra241_cmdqv`: where to mmap the VINTF page (out).
    case tegra241CMDQV(mmapOffset: UInt64, mmapLength: UInt64)
    /// `struct iommu_viommu_selftest`: the mock echoes `input` in `output` and offers a
    /// two-page mmap whose first word is `input`.
    case selftest(input: UInt32, output: UInt32, mmapOffset: UInt64, mmapLength: UInt64)
}

/// The kind of a vIOMMU hardware queue (`enum iommu_hw_queue_type`).
public struct HWQueueType: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// Refused by 7.3 (`EOPNOTSUPP`). `IOMMU_HW_QUEUE_TYPE_DEFAULT`.
    public static let `default` = Self(rawValue: CIO_IOMMU_HW_QUEUE_TYPE_DEFAULT)
    /// A Tegra241 CMDQV virtual command queue. `IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV`.
    public static let tegra241CMDQV = Self(rawValue: CIO_IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV)
    /// The mock's queue. `IOMMU_HW_QUEUE_TYPE_SELFTEST`.
    public static let selftest = Self(rawValue: CIO_IOMMU_HW_QUEUE_TYPE_SELFTEST)
}

extension IOMMUFDContext {
    /// Allocates a vIOMMU: the per-VM slice of a physical IOMMU behind `device`, on top of a
    /// nesting parent HWPT (the VM's stage 2).
    ///
    /// - Throws: ``IOMMUFDError``; from the kernel `EOPNOTSUPP` for a type the IOMMU lacks,
    ///   `EINVAL` when `hwpt` is not a nesting parent, `ENOENT` for unknown ids.
    ///
    /// The corresponding ioctl is `IOMMU_VIOMMU_ALLOC`.
    public func allocateVIOMMU(type: VIOMMUType, device: DeviceID, hwpt: HWPTID) throws(IOMMUFDError) -> VIOMMUID {
        var cmd = makeCommand(cio_iommu_viommu_alloc.self)
        cmd.type = type.rawValue
        cmd.dev_id = device.rawValue
        cmd.hwpt_id = hwpt.rawValue
        try ioctl(.viommuAlloc, &cmd, .allocateVIOMMU)
        return VIOMMUID(cmd.out_viommu_id)
    }

    /// Allocates a vIOMMU with driver data; the kernel's output fields are written back into `data`.
    ///
    /// The corresponding ioctl is `IOMMU_VIOMMU_ALLOC`.
    public func allocateVIOMMU(
        type: VIOMMUType, device: DeviceID, hwpt: HWPTID, data: inout VIOMMUData
    ) throws(IOMMUFDError) -> VIOMMUID {
        var cmd = makeCommand(cio_iommu_viommu_alloc.self)
        cmd.type = type.rawValue
        cmd.dev_id = device.rawValue
        cmd.hwpt_id = hwpt.rawValue
        func call<T>(_ s: inout T) throws(IOMMUFDError) {
            let r: Result<Void, IOMMUFDError> = withUnsafeMutableBytes(of: &s) { b in
                cmd.data_len = UInt32(b.count)
                cmd.data_uptr = UInt64(UInt(bitPattern: b.baseAddress))
                return withUnsafeMutableBytes(of: &cmd) { ioctl(.viommuAlloc, buffer: $0.baseAddress!, .allocateVIOMMU) }
            }
            try r.get()
        }
        switch data {
        case .tegra241CMDQV:
            var s = cio_iommu_viommu_tegra241_cmdqv()
            try call(&s)
            data = .tegra241CMDQV(mmapOffset: s.out_vintf_mmap_offset, mmapLength: s.out_vintf_mmap_length)
        case .selftest(let input, _, _, _):
            var s = cio_iommu_viommu_selftest()
            s.in_data = input
            try call(&s)
            data = .selftest(input: input, output: s.out_data, mmapOffset: s.out_mmap_offset, mmapLength: s.out_mmap_length)
        }
        return VIOMMUID(cmd.out_viommu_id)
    }

    /// Tells a vIOMMU which id the guest uses for `device` (a virtual stream id, device id or
    /// RID), so invalidations and events can name it.
    ///
    /// - Throws: ``IOMMUFDError``; `EEXIST` when the device or the virtual id already has a
    ///   vDEVICE in this vIOMMU, `EINVAL` when the device sits behind another IOMMU.
    ///
    /// The corresponding ioctl is `IOMMU_VDEVICE_ALLOC`.
    public func allocateVDevice(viommu: VIOMMUID, device: DeviceID, virtualID: UInt64) throws(IOMMUFDError) -> VDeviceID {
        var cmd = makeCommand(cio_iommu_vdevice_alloc.self)
        cmd.viommu_id = viommu.rawValue
        cmd.dev_id = device.rawValue
        cmd.virt_id = virtualID
        try ioctl(.vdeviceAlloc, &cmd, .allocateVDevice)
        return VDeviceID(cmd.out_vdevice_id)
    }

    /// Gives a vIOMMU a hardware queue that reads guest memory directly: `length` bytes at
    /// `iova` of the vIOMMU's nesting parent, which stay pinned (unmapping them answers
    /// `EBUSY`) until the queue is destroyed.
    ///
    /// - Throws: ``IOMMUFDError``; before the call for a zero length or a range passing
    ///   2^64; from the kernel `EOPNOTSUPP` for a type the vIOMMU lacks, `ENOENT` when
    ///   nothing is mapped there, `EEXIST` for an index in use.
    ///
    /// The corresponding ioctl is `IOMMU_HW_QUEUE_ALLOC`.
    public func allocateHWQueue(
        viommu: VIOMMUID, type: HWQueueType, index: UInt32, at iova: IOVA, length: UInt64
    ) throws(IOMMUFDError) -> HWQueueID {
        do {
            _ = try IOVARange(base: iova, length: length)
        } catch {
            throw IOMMUFDError(.allocateHWQueue, request: .hwQueueAlloc, reason: .invalidRange(error))
        }
        var cmd = makeCommand(cio_iommu_hw_queue_alloc.self)
        cmd.viommu_id = viommu.rawValue
        cmd.type = type.rawValue
        cmd.index = index
        cmd.nesting_parent_iova = iova.rawValue
        cmd.length = length
        try ioctl(.hwQueueAlloc, &cmd, .allocateHWQueue)
        return HWQueueID(cmd.out_hw_queue_id)
    }
}

extension IOMMUFDError.Operation {
    public static let allocateVIOMMU = Self(rawValue: "allocateVIOMMU")
    public static let allocateVDevice = Self(rawValue: "allocateVDevice")
    public static let allocateHWQueue = Self(rawValue: "allocateHWQueue")
    public static let allocateEventQueue = Self(rawValue: "allocateEventQueue")
    public static let allocateFaultQueue = Self(rawValue: "allocateFaultQueue")
    public static let readEvents = Self(rawValue: "readEvents")
    public static let respondToFaults = Self(rawValue: "respondToFaults")
}
