import CIOMMUFD

/// An ioctl request number of the iommufd or VFIO uAPI.
///
/// The numbers come from the package's own ABI declarations (`CShims/`), which the C build
/// checks against the kernel's headers and the golden tests pin.
public struct IoctlRequest: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }

    /// The kernel's name for the request, or its number in hex.
    public var description: String { Self.names[self] ?? "ioctl(0x\(String(rawValue, radix: 16)))" }

    // iommufd, /dev/iommu
    public static let destroy = Self(rawValue: CIO_IOMMU_DESTROY)
    public static let ioasAlloc = Self(rawValue: CIO_IOMMU_IOAS_ALLOC)
    public static let ioasAllowIOVAs = Self(rawValue: CIO_IOMMU_IOAS_ALLOW_IOVAS)
    public static let ioasCopy = Self(rawValue: CIO_IOMMU_IOAS_COPY)
    public static let ioasIOVARanges = Self(rawValue: CIO_IOMMU_IOAS_IOVA_RANGES)
    public static let ioasMap = Self(rawValue: CIO_IOMMU_IOAS_MAP)
    public static let ioasUnmap = Self(rawValue: CIO_IOMMU_IOAS_UNMAP)
    public static let option = Self(rawValue: CIO_IOMMU_OPTION)
    public static let vfioIOAS = Self(rawValue: CIO_IOMMU_VFIO_IOAS)
    public static let hwptAlloc = Self(rawValue: CIO_IOMMU_HWPT_ALLOC)
    public static let getHWInfo = Self(rawValue: CIO_IOMMU_GET_HW_INFO)
    public static let hwptSetDirtyTracking = Self(rawValue: CIO_IOMMU_HWPT_SET_DIRTY_TRACKING)
    public static let hwptGetDirtyBitmap = Self(rawValue: CIO_IOMMU_HWPT_GET_DIRTY_BITMAP)
    public static let hwptInvalidate = Self(rawValue: CIO_IOMMU_HWPT_INVALIDATE)
    public static let faultQueueAlloc = Self(rawValue: CIO_IOMMU_FAULT_QUEUE_ALLOC)
    public static let ioasMapFile = Self(rawValue: CIO_IOMMU_IOAS_MAP_FILE)
    public static let viommuAlloc = Self(rawValue: CIO_IOMMU_VIOMMU_ALLOC)
    public static let vdeviceAlloc = Self(rawValue: CIO_IOMMU_VDEVICE_ALLOC)
    public static let ioasChangeProcess = Self(rawValue: CIO_IOMMU_IOAS_CHANGE_PROCESS)
    public static let veventqAlloc = Self(rawValue: CIO_IOMMU_VEVENTQ_ALLOC)
    public static let hwQueueAlloc = Self(rawValue: CIO_IOMMU_HW_QUEUE_ALLOC)
    public static let ioasNoIOMMUGetPA = Self(rawValue: CIO_IOMMU_IOAS_NOIOMMU_GET_PA)
    /// The kernel's mock IOMMU (`CONFIG_IOMMUFD_TEST`), not part of the stable uAPI.
    public static let testCommand = Self(rawValue: CIO_IOMMU_TEST_CMD)

    // VFIO, /dev/vfio/devices/vfioN
    public static let vfioGetAPIVersion = Self(rawValue: CIO_VFIO_GET_API_VERSION)
    public static let vfioCheckExtension = Self(rawValue: CIO_VFIO_CHECK_EXTENSION)
    public static let vfioDeviceGetInfo = Self(rawValue: CIO_VFIO_DEVICE_GET_INFO)
    public static let vfioDeviceGetRegionInfo = Self(rawValue: CIO_VFIO_DEVICE_GET_REGION_INFO)
    public static let vfioDeviceGetIRQInfo = Self(rawValue: CIO_VFIO_DEVICE_GET_IRQ_INFO)
    public static let vfioDeviceSetIRQs = Self(rawValue: CIO_VFIO_DEVICE_SET_IRQS)
    public static let vfioDeviceReset = Self(rawValue: CIO_VFIO_DEVICE_RESET)
    public static let vfioDeviceGetPCIHotResetInfo = Self(rawValue: CIO_VFIO_DEVICE_GET_PCI_HOT_RESET_INFO)
    public static let vfioDevicePCIHotReset = Self(rawValue: CIO_VFIO_DEVICE_PCI_HOT_RESET)
    public static let vfioDeviceFeature = Self(rawValue: CIO_VFIO_DEVICE_FEATURE)
    public static let vfioDeviceBindIOMMUFD = Self(rawValue: CIO_VFIO_DEVICE_BIND_IOMMUFD)
    public static let vfioDeviceAttachIOMMUFDPT = Self(rawValue: CIO_VFIO_DEVICE_ATTACH_IOMMUFD_PT)
    public static let vfioDeviceDetachIOMMUFDPT = Self(rawValue: CIO_VFIO_DEVICE_DETACH_IOMMUFD_PT)

    /// Every iommufd request of the 7.3 uAPI, in command-number order.
    public static let iommufdRequests: [IoctlRequest] = [
        .destroy, .ioasAlloc, .ioasAllowIOVAs, .ioasCopy, .ioasIOVARanges, .ioasMap, .ioasUnmap, .option,
        .vfioIOAS, .hwptAlloc, .getHWInfo, .hwptSetDirtyTracking, .hwptGetDirtyBitmap, .hwptInvalidate,
        .faultQueueAlloc, .ioasMapFile, .viommuAlloc, .vdeviceAlloc, .ioasChangeProcess, .veventqAlloc,
        .hwQueueAlloc, .ioasNoIOMMUGetPA,
    ]

    static let names: [IoctlRequest: String] = [
        .destroy: "IOMMU_DESTROY", .ioasAlloc: "IOMMU_IOAS_ALLOC", .ioasAllowIOVAs: "IOMMU_IOAS_ALLOW_IOVAS",
        .ioasCopy: "IOMMU_IOAS_COPY", .ioasIOVARanges: "IOMMU_IOAS_IOVA_RANGES", .ioasMap: "IOMMU_IOAS_MAP",
        .ioasUnmap: "IOMMU_IOAS_UNMAP", .option: "IOMMU_OPTION", .vfioIOAS: "IOMMU_VFIO_IOAS",
        .hwptAlloc: "IOMMU_HWPT_ALLOC", .getHWInfo: "IOMMU_GET_HW_INFO",
        .hwptSetDirtyTracking: "IOMMU_HWPT_SET_DIRTY_TRACKING", .hwptGetDirtyBitmap: "IOMMU_HWPT_GET_DIRTY_BITMAP",
        .hwptInvalidate: "IOMMU_HWPT_INVALIDATE", .faultQueueAlloc: "IOMMU_FAULT_QUEUE_ALLOC",
        .ioasMapFile: "IOMMU_IOAS_MAP_FILE", .viommuAlloc: "IOMMU_VIOMMU_ALLOC", .vdeviceAlloc: "IOMMU_VDEVICE_ALLOC",
        .ioasChangeProcess: "IOMMU_IOAS_CHANGE_PROCESS", .veventqAlloc: "IOMMU_VEVENTQ_ALLOC",
        .hwQueueAlloc: "IOMMU_HW_QUEUE_ALLOC", .ioasNoIOMMUGetPA: "IOMMU_IOAS_NOIOMMU_GET_PA",
        .testCommand: "IOMMU_TEST_CMD",
        .vfioGetAPIVersion: "VFIO_GET_API_VERSION", .vfioCheckExtension: "VFIO_CHECK_EXTENSION",
        .vfioDeviceGetInfo: "VFIO_DEVICE_GET_INFO", .vfioDeviceGetRegionInfo: "VFIO_DEVICE_GET_REGION_INFO",
        .vfioDeviceGetIRQInfo: "VFIO_DEVICE_GET_IRQ_INFO", .vfioDeviceSetIRQs: "VFIO_DEVICE_SET_IRQS",
        .vfioDeviceReset: "VFIO_DEVICE_RESET", .vfioDeviceGetPCIHotResetInfo: "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO",
        .vfioDevicePCIHotReset: "VFIO_DEVICE_PCI_HOT_RESET", .vfioDeviceFeature: "VFIO_DEVICE_FEATURE",
        .vfioDeviceBindIOMMUFD: "VFIO_DEVICE_BIND_IOMMUFD", .vfioDeviceAttachIOMMUFDPT: "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
        .vfioDeviceDetachIOMMUFDPT: "VFIO_DEVICE_DETACH_IOMMUFD_PT",
    ]
}
