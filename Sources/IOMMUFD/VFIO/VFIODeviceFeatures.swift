import CIOMMUFD
import SystemPackage

/// A feature of `VFIO_DEVICE_FEATURE`: the low 16 bits of its `flags`. Open: any number
/// reaches the kernel, which answers `ENOTTY` for a feature the device's driver lacks.
public struct VFIODeviceFeature: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// The VF token of an SR-IOV PF (set, 16-byte UUID). `VFIO_DEVICE_FEATURE_PCI_VF_TOKEN`.
    public static let pciVFToken = Self(rawValue: CIO_VFIO_DEVICE_FEATURE_PCI_VF_TOKEN)
    /// Which migration protocols the device offers (get, 8 bytes).
    public static let migration = Self(rawValue: CIO_VFIO_DEVICE_FEATURE_MIGRATION)
    /// The migration state (get/set; set returns a data descriptor).
    public static let migrationDeviceState = Self(rawValue: CIO_VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE)
    /// Enter runtime low power (set, no payload).
    public static let lowPowerEntry = Self(rawValue: CIO_VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY)
    /// Enter runtime low power, waking on an eventfd (set).
    public static let lowPowerEntryWithWakeup = Self(rawValue: CIO_VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP)
    /// Leave runtime low power (set, no payload).
    public static let lowPowerExit = Self(rawValue: CIO_VFIO_DEVICE_FEATURE_LOW_POWER_EXIT)
    public static let dmaLoggingStart = Self(rawValue: CIO_VFIO_DEVICE_FEATURE_DMA_LOGGING_START)
    public static let dmaLoggingStop = Self(rawValue: CIO_VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP)
    public static let dmaLoggingReport = Self(rawValue: CIO_VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT)
    public static let migrationDataSize = Self(rawValue: CIO_VFIO_DEVICE_FEATURE_MIG_DATA_SIZE)
    /// Bus mastering of a CDX device (set).
    public static let busMaster = Self(rawValue: CIO_VFIO_DEVICE_FEATURE_BUS_MASTER)
    /// Export part of a BAR as a dma-buf (get; returns the new descriptor).
    public static let dmaBuf = Self(rawValue: CIO_VFIO_DEVICE_FEATURE_DMA_BUF)
    public static let migrationPrecopyInfoV2 = Self(rawValue: CIO_VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2)
    public static let zpciError = Self(rawValue: CIO_VFIO_DEVICE_FEATURE_ZPCI_ERROR)

    public var description: String {
        let names: [Self: String] = [
            .pciVFToken: "pciVFToken", .migration: "migration", .migrationDeviceState: "migrationDeviceState",
            .lowPowerEntry: "lowPowerEntry", .lowPowerEntryWithWakeup: "lowPowerEntryWithWakeup",
            .lowPowerExit: "lowPowerExit", .dmaLoggingStart: "dmaLoggingStart", .dmaLoggingStop: "dmaLoggingStop",
            .dmaLoggingReport: "dmaLoggingReport", .migrationDataSize: "migrationDataSize", .busMaster: "busMaster",
            .dmaBuf: "dmaBuf", .migrationPrecopyInfoV2: "migrationPrecopyInfoV2", .zpciError: "zpciError",
        ]
        return names[self] ?? "VFIODeviceFeature(\(rawValue))"
    }
}

/// The directions a feature call asks about (`VFIO_DEVICE_FEATURE_GET` / `_SET`).
public struct VFIODeviceFeatureAccess: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let get = Self(rawValue: CIO_VFIO_DEVICE_FEATURE_GET)
    public static let set = Self(rawValue: CIO_VFIO_DEVICE_FEATURE_SET)
}

/// Flags of a hot-reset answer (`VFIO_PCI_HOT_RESET_FLAG_*`).
public struct PCIHotResetInfoFlags: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// The devices are named by iommufd device ids, not groups (the device was opened as a cdev).
    public static let deviceIDs = Self(rawValue: CIO_VFIO_PCI_HOT_RESET_FLAG_DEV_ID)
    /// This iommufd owns every affected device: a cdev hot reset may go ahead.
    public static let allOwned = Self(rawValue: CIO_VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED)
    public var description: String {
        flagDescription(rawValue, [(Self.deviceIDs.rawValue, "deviceIDs"), (Self.allOwned.rawValue, "allOwned")])
    }
}

/// One device a hot reset of the slot or bus would reset too.
public struct PCIHotResetDevice: Hashable, Sendable {
    /// Who holds it, as the kernel says.
    public enum Owner: Hashable, Sendable {
        /// Bound to this iommufd with this id.
        case device(DeviceID)
        /// Opened by this iommufd's user but not bound to it (`VFIO_PCI_DEVID_OWNED`).
        case ownedWithoutID
        /// Not owned by this iommufd (`VFIO_PCI_DEVID_NOT_OWNED`).
        case notOwned
        /// Its IOMMU group, when the device was opened through a group.
        case group(UInt32)
    }
    public var address: PCIAddress
    public var owner: Owner
    public init(address: PCIAddress, owner: Owner) {
        self.address = address
        self.owner = owner
    }
}

/// What a PCI hot reset of a device would affect (`VFIO_DEVICE_GET_PCI_HOT_RESET_INFO`).
public struct PCIHotResetInfo: Hashable, Sendable {
    public var flags: PCIHotResetInfoFlags
    public var devices: [PCIHotResetDevice]
}

extension VFIODevice {
    /// Asks whether the device's driver has `feature`, for the directions in `access` (none:
    /// the feature at all), without using it.
    ///
    /// - Throws: ``IOMMUFDError``; from the kernel `ENOTTY` for a feature the driver lacks,
    ///   `EINVAL` when it lacks a direction asked for, `EOPNOTSUPP` when the device cannot
    ///   offer a feature its driver knows.
    ///
    /// The corresponding ioctl is `VFIO_DEVICE_FEATURE` (`VFIO_DEVICE_FEATURE_PROBE`).
    public func probeFeature(_ feature: VFIODeviceFeature, for access: VFIODeviceFeatureAccess = []) throws(IOMMUFDError) {
        _ = try featureCall(feature.rawValue | access.rawValue | CIO_VFIO_DEVICE_FEATURE_PROBE, nil, .probeFeature)
    }

    /// Whether ``probeFeature(_:for:)`` succeeds: false when the kernel answers `ENOTTY`,
    /// `EOPNOTSUPP` or `EINVAL`.
    ///
    /// - Throws: ``IOMMUFDError`` for any other answer.
    ///
    /// The corresponding ioctl is `VFIO_DEVICE_FEATURE` (`VFIO_DEVICE_FEATURE_PROBE`).
    public func supportsFeature(_ feature: VFIODeviceFeature, for access: VFIODeviceFeatureAccess = []) throws(IOMMUFDError) -> Bool {
        do {
            try probeFeature(feature, for: access)
            return true
        } catch where error.errno == .inappropriateIOCTLForDevice || error.errno == .invalidArgument
            || error.errno?.rawValue == Errno.notSupported.rawValue {
            return false
        }
    }

    /// Reads a feature's payload into `payload` (its size is the feature's: the kernel refuses
    /// a short one with `EINVAL`).
    ///
    /// - Returns: The ioctl's result: 0, or what the feature returns (``VFIODeviceFeature/dmaBuf``
    ///   returns a new descriptor, which the caller then owns).
    /// - Throws: ``IOMMUFDError``; from the kernel `ENOTTY` for a feature the driver lacks,
    ///   `EINVAL` when it cannot be read.
    ///
    /// The corresponding ioctl is `VFIO_DEVICE_FEATURE` (`VFIO_DEVICE_FEATURE_GET`).
    @discardableResult
    public func getFeature(_ feature: VFIODeviceFeature, into payload: UnsafeMutableRawBufferPointer) throws(IOMMUFDError) -> CInt {
        try featureCall(feature.rawValue | CIO_VFIO_DEVICE_FEATURE_GET, payload, .getFeature)
    }

    /// Sets a feature with `payload`, which the kernel may write back (a migration state
    /// change returns a data descriptor there). Features without payload take an empty one.
    ///
    /// - Returns: The ioctl's result.
    /// - Throws: ``IOMMUFDError``; from the kernel `ENOTTY` for a feature the driver lacks,
    ///   `EINVAL` when it cannot be set or the payload is short.
    ///
    /// The corresponding ioctl is `VFIO_DEVICE_FEATURE` (`VFIO_DEVICE_FEATURE_SET`).
    @discardableResult
    public func setFeature(
        _ feature: VFIODeviceFeature, payload: UnsafeMutableRawBufferPointer = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    ) throws(IOMMUFDError) -> CInt {
        try featureCall(feature.rawValue | CIO_VFIO_DEVICE_FEATURE_SET, payload, .setFeature)
    }

    /// One `VFIO_DEVICE_FEATURE` with the header and payload in one stack buffer.
    private func featureCall(
        _ flags: UInt32, _ payload: UnsafeMutableRawBufferPointer?, _ operation: IOMMUFDError.Operation
    ) throws(IOMMUFDError) -> CInt {
        let header = MemoryLayout<cio_vfio_device_feature>.size
        let count = payload?.count ?? 0
        let size = header + count
        return try withUnsafeTemporaryAllocation(byteCount: size, alignment: 8) { (buffer) throws(IOMMUFDError) -> CInt in
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            buffer.storeBytes(of: UInt32(size), as: UInt32.self)
            buffer.storeBytes(of: flags, toByteOffset: MemoryLayout<cio_vfio_device_feature>.offset(of: \.flags)!, as: UInt32.self)
            if let payload, count > 0 {
                UnsafeMutableRawBufferPointer(rebasing: buffer[header...]).copyMemory(from: UnsafeRawBufferPointer(payload))
            }
            let result = try handle.ioctlValue(.vfioDeviceFeature, buffer: buffer.baseAddress, operation)
            if let payload, count > 0 {
                payload.copyMemory(from: UnsafeRawBufferPointer(rebasing: buffer[header...]))
            }
            return result
        }
    }

    /// The devices a hot reset of this device's slot or bus would reset, and who owns them.
    /// The device must be bound (`EINVAL` before ``bind(to:)``).
    ///
    /// - Throws: ``IOMMUFDError``; from the kernel `ENODEV` when neither the slot nor the bus
    ///   can be reset (a device on a root bus), `EINVAL` before the device is bound.
    ///
    /// The corresponding ioctl is `VFIO_DEVICE_GET_PCI_HOT_RESET_INFO` (repeated with the
    /// count the kernel asks for when the devices do not fit).
    public func pciHotResetInfo() throws(IOMMUFDError) -> PCIHotResetInfo {
        let header = MemoryLayout<cio_vfio_pci_hot_reset_info>.size
        let entry = MemoryLayout<cio_vfio_pci_dependent_device>.size
        var capacity = 8
        while true {
            let size = header + capacity * entry
            let answer = try withUnsafeTemporaryAllocation(byteCount: size, alignment: 8) {
                (buffer) throws(IOMMUFDError) -> PCIHotResetInfo? in
                buffer.initializeMemory(as: UInt8.self, repeating: 0)
                buffer.storeBytes(of: UInt32(size), as: UInt32.self)
                let r = handle.ioctl(.vfioDeviceGetPCIHotResetInfo, buffer: buffer.baseAddress, .pciHotResetInfo)
                let head = buffer.load(as: cio_vfio_pci_hot_reset_info.self)
                switch r {
                case .failure(let e) where e.errno == .noSpace && Int(head.count) > capacity:
                    capacity = Int(head.count)
                    return nil
                case .failure(let e):
                    throw e
                case .success:
                    break
                }
                guard Int(head.count) <= capacity else {
                    throw IOMMUFDError(.pciHotResetInfo, request: .vfioDeviceGetPCIHotResetInfo,
                                       reason: .unexpectedResult("\(head.count) devices in room for \(capacity)"))
                }
                let flags = PCIHotResetInfoFlags(rawValue: head.flags)
                let devices = (0..<Int(head.count)).map { i in
                    let d = buffer.loadUnaligned(fromByteOffset: header + i * entry, as: cio_vfio_pci_dependent_device.self)
                    let owner: PCIHotResetDevice.Owner =
                        if !flags.contains(.deviceIDs) { .group(d.group_id) }
                        else if d.devid == CIO_VFIO_PCI_DEVID_NOT_OWNED { .notOwned }
                        else if d.devid == CIO_VFIO_PCI_DEVID_OWNED { .ownedWithoutID }
                        else { .device(DeviceID(d.devid)) }
                    return PCIHotResetDevice(
                        address: PCIAddress(domain: d.segment, bus: d.bus, device: d.devfn >> 3, function: d.devfn & 7),
                        owner: owner)
                }
                return PCIHotResetInfo(flags: flags, devices: devices)
            }
            if let answer { return answer }
        }
    }

    /// Resets the slot or bus of the device, and with it every device of
    /// ``pciHotResetInfo()``. A device opened as a cdev passes no group descriptors (the
    /// kernel checks that this iommufd owns every affected device); one opened through its
    /// group passes the group descriptors of all of them.
    ///
    /// - Throws: ``IOMMUFDError``; from the kernel `ENODEV` when neither slot nor bus can be
    ///   reset, `EINVAL` for group descriptors on a cdev or none on a group device, `EPERM`
    ///   when an affected device is not owned.
    ///
    /// The corresponding ioctl is `VFIO_DEVICE_PCI_HOT_RESET`.
    public func pciHotReset(groupDescriptors: [CInt] = []) throws(IOMMUFDError) {
        let header = MemoryLayout<cio_vfio_pci_hot_reset>.size
        let size = header + groupDescriptors.count * MemoryLayout<Int32>.size
        try withUnsafeTemporaryAllocation(byteCount: size, alignment: 8) { (buffer) throws(IOMMUFDError) in
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            buffer.storeBytes(of: UInt32(size), as: UInt32.self)
            buffer.storeBytes(of: UInt32(groupDescriptors.count), toByteOffset: MemoryLayout<cio_vfio_pci_hot_reset>.offset(of: \.count)!, as: UInt32.self)
            for (i, fd) in groupDescriptors.enumerated() {
                buffer.storeBytes(of: Int32(fd), toByteOffset: header + i * 4, as: Int32.self)
            }
            try handle.ioctl(.vfioDevicePCIHotReset, buffer: buffer.baseAddress, .pciHotReset).get()
        }
    }
}

extension IOMMUFDError.Operation {
    public static let probeFeature = Self(rawValue: "probeFeature")
    public static let getFeature = Self(rawValue: "getFeature")
    public static let setFeature = Self(rawValue: "setFeature")
    public static let pciHotResetInfo = Self(rawValue: "pciHotResetInfo")
    public static let pciHotReset = Self(rawValue: "pciHotReset")
}
