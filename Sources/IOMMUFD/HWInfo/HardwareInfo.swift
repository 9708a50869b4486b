import CIOMMUFD

/// Which vendor format the data of an `IOMMU_GET_HW_INFO` answer has (`enum iommu_hw_info_type`).
///
/// An open set: a newer kernel may answer a type this package does not name.
public struct HardwareInfoKind: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// No vendor data (`IOMMU_HW_INFO_TYPE_NONE`); as a request, the IOMMU's default type.
    public static let none = Self(rawValue: CIO_IOMMU_HW_INFO_TYPE_NONE)
    /// Intel VT-d capability registers (`struct iommu_hw_info_vtd`).
    public static let intelVTd = Self(rawValue: CIO_IOMMU_HW_INFO_TYPE_INTEL_VTD)
    /// Arm SMMUv3 ID registers (`struct iommu_hw_info_arm_smmuv3`).
    public static let armSMMUv3 = Self(rawValue: CIO_IOMMU_HW_INFO_TYPE_ARM_SMMUV3)
    /// NVIDIA Tegra241 CMDQV (`struct iommu_hw_info_tegra241_cmdqv`).
    public static let tegra241CMDQV = Self(rawValue: CIO_IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV)
    /// AMD IOMMU extended features (`struct iommu_hw_info_amd`).
    public static let amd = Self(rawValue: CIO_IOMMU_HW_INFO_TYPE_AMD)
    /// The kernel's mock IOMMU (`IOMMU_HW_INFO_TYPE_SELFTEST`).
    public static let selftest = Self(rawValue: CIO_IOMMU_HW_INFO_TYPE_SELFTEST)

    public var description: String {
        switch self {
        case .none: "none"
        case .intelVTd: "intelVTd"
        case .armSMMUv3: "armSMMUv3"
        case .tegra241CMDQV: "tegra241CMDQV"
        case .amd: "amd"
        case .selftest: "selftest"
        default: "HardwareInfoKind(0x\(String(rawValue, radix: 16)))"
        }
    }
}

/// The generic capability bits of an `IOMMU_GET_HW_INFO` answer (`enum iommufd_hw_capabilities`).
public struct IOMMUHardwareCapabilities: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// HWPTs can track dirty pages (`IOMMU_HW_CAP_DIRTY_TRACKING`).
    public static let dirtyTracking = Self(rawValue: CIO_IOMMU_HW_CAP_DIRTY_TRACKING)
    /// The device's PASID capability allows execute requests (`IOMMU_HW_CAP_PCI_PASID_EXEC`).
    public static let pasidExecute = Self(rawValue: CIO_IOMMU_HW_CAP_PCI_PASID_EXEC)
    /// The device's PASID capability allows privileged requests (`IOMMU_HW_CAP_PCI_PASID_PRIV`).
    public static let pasidPrivileged = Self(rawValue: CIO_IOMMU_HW_CAP_PCI_PASID_PRIV)
    /// ATS must not be used with this device (`IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED`).
    public static let atsNotSupported = Self(rawValue: CIO_IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED)

    public var description: String {
        flagDescription(rawValue, [(Self.dirtyTracking.rawValue, "dirtyTracking"),
                                   (Self.pasidExecute.rawValue, "pasidExecute"),
                                   (Self.pasidPrivileged.rawValue, "pasidPrivileged"),
                                   (Self.atsNotSupported.rawValue, "atsNotSupported")])
    }
}

/// The raw answer of `IOMMU_GET_HW_INFO`: the vendor data as the kernel wrote it, undecoded.
///
/// Decode ``data`` with the `HostIOMMUCapabilities` module (`HardwareInfoReport`).
public struct RawHardwareInfo: Hashable, Sendable {
    /// The format of ``data`` (`out_data_type`).
    public var type: HardwareInfoKind
    /// The vendor data the kernel filled in: the first `min(capacity, kernelDataLength)` bytes.
    public var data: [UInt8]
    /// How many bytes of vendor data the kernel has (`data_len` after the call); more than
    /// `data.count` when the buffer passed was smaller.
    public var kernelDataLength: Int
    /// Generic capability bits (`out_capabilities`).
    public var capabilities: IOMMUHardwareCapabilities
    /// PASID width usable by this device; 0 means no PASID (`out_max_pasid_log2`).
    public var maxPASIDLog2: UInt8

    public init(type: HardwareInfoKind, data: [UInt8], kernelDataLength: Int,
                capabilities: IOMMUHardwareCapabilities, maxPASIDLog2: UInt8) {
        self.type = type
        self.data = data
        self.kernelDataLength = kernelDataLength
        self.capabilities = capabilities
        self.maxPASIDLog2 = maxPASIDLog2
    }
}

extension IOMMUFDContext {
    /// The largest vendor-data buffer ``hardwareInfo(of:requesting:capacity:)`` accepts.
    public static let maximumHardwareInfoCapacity = 4096

    /// What the IOMMU behind a bound device is and can do.
    ///
    /// The vendor data is read into a stack buffer of `capacity` bytes (every 7.3 format fits
    /// in 64); the kernel zeroes what it does not use and reports how much it has. Costs one
    /// ioctl and one small array for the answer.
    ///
    /// - Parameters:
    ///   - device: A device bound to this iommufd (a VFIO device or a mock device).
    ///   - type: Ask for one format when the IOMMU offers several (`IOMMU_HW_INFO_FLAG_INPUT_TYPE`);
    ///     `nil` takes the IOMMU's default.
    ///   - capacity: Bytes of vendor data to accept, at most ``maximumHardwareInfoCapacity``.
    /// - Throws: ``IOMMUFDError`` before the call for a capacity out of range; from the kernel
    ///   `ENOENT` for an unknown device, `EOPNOTSUPP` for a requested type the IOMMU lacks.
    ///
    /// The corresponding ioctl is `IOMMU_GET_HW_INFO`.
    public func hardwareInfo(
        of device: DeviceID, requesting type: HardwareInfoKind? = nil, capacity: Int = 256
    ) throws(IOMMUFDError) -> RawHardwareInfo {
        guard capacity >= 0, capacity <= Self.maximumHardwareInfoCapacity else {
            throw IOMMUFDError(.hardwareInfo, request: .getHWInfo,
                               reason: .invalidArgument("capacity \(capacity) is outside 0...\(Self.maximumHardwareInfoCapacity)"))
        }
        return try withUnsafeTemporaryAllocation(byteCount: max(capacity, 8), alignment: 8) {
            (buffer) throws(IOMMUFDError) -> RawHardwareInfo in
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            var cmd = makeCommand(cio_iommu_hw_info.self)
            cmd.dev_id = device.rawValue
            cmd.data_len = UInt32(capacity)
            cmd.data_uptr = UInt64(UInt(bitPattern: buffer.baseAddress))
            if let type {
                cmd.flags = CIO_IOMMU_HW_INFO_FLAG_INPUT_TYPE
                cmd.in_data_type = type.rawValue
            }
            try ioctl(.getHWInfo, &cmd, .hardwareInfo)
            let filled = min(Int(cmd.data_len), capacity)
            return RawHardwareInfo(type: HardwareInfoKind(rawValue: cmd.out_data_type),
                                   data: Array(UnsafeRawBufferPointer(rebasing: buffer[..<filled])),
                                   kernelDataLength: Int(cmd.data_len),
                                   capabilities: IOMMUHardwareCapabilities(rawValue: cmd.out_capabilities),
                                   maxPASIDLog2: cmd.out_max_pasid_log2)
        }
    }
}

extension IOMMUFDError.Operation {
    public static let hardwareInfo = Self(rawValue: "hardwareInfo")
}
