import CIOMMUFD

/// What kind of device a VFIO device is and what it offers (`VFIO_DEVICE_GET_INFO`).
public struct VFIODeviceInfo: Hashable, Sendable {
    public var flags: VFIODeviceFlags
    public var regionCount: Int
    public var irqCount: Int
}

/// `VFIO_DEVICE_FLAGS_*`.
public struct VFIODeviceFlags: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let reset = Self(rawValue: CIO_VFIO_DEVICE_FLAGS_RESET)
    public static let pci = Self(rawValue: CIO_VFIO_DEVICE_FLAGS_PCI)
    public static let platform = Self(rawValue: CIO_VFIO_DEVICE_FLAGS_PLATFORM)
    public static let amba = Self(rawValue: CIO_VFIO_DEVICE_FLAGS_AMBA)
    public static let ccw = Self(rawValue: CIO_VFIO_DEVICE_FLAGS_CCW)
    public static let ap = Self(rawValue: CIO_VFIO_DEVICE_FLAGS_AP)
    public static let fslMC = Self(rawValue: CIO_VFIO_DEVICE_FLAGS_FSL_MC)
    public static let capabilities = Self(rawValue: CIO_VFIO_DEVICE_FLAGS_CAPS)
    public static let cdx = Self(rawValue: CIO_VFIO_DEVICE_FLAGS_CDX)
    public var description: String {
        flagDescription(rawValue, [(Self.reset.rawValue, "reset"), (Self.pci.rawValue, "pci"),
                                   (Self.platform.rawValue, "platform"), (Self.amba.rawValue, "amba"),
                                   (Self.ccw.rawValue, "ccw"), (Self.ap.rawValue, "ap"), (Self.fslMC.rawValue, "fslMC"),
                                   (Self.capabilities.rawValue, "capabilities"), (Self.cdx.rawValue, "cdx")])
    }
}

/// A region of a VFIO device; for vfio-pci the BARs, ROM, config space and VGA.
public struct VFIORegionIndex: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// PCI BAR `n` (0...5).
    public static func bar(_ n: Int) -> Self {
        precondition((0...5).contains(n), "PCI has BARs 0 through 5")
        return Self(rawValue: CIO_VFIO_PCI_BAR0_REGION_INDEX + UInt32(n))
    }
    public static let rom = Self(rawValue: CIO_VFIO_PCI_ROM_REGION_INDEX)
    public static let config = Self(rawValue: CIO_VFIO_PCI_CONFIG_REGION_INDEX)
    public static let vga = Self(rawValue: CIO_VFIO_PCI_VGA_REGION_INDEX)
    public var description: String {
        switch rawValue {
        case 0...5: "BAR\(rawValue)"
        case Self.rom.rawValue: "ROM"
        case Self.config.rawValue: "config"
        case Self.vga.rawValue: "VGA"
        default: "region \(rawValue)"
        }
    }
}

/// `VFIO_REGION_INFO_FLAG_*`.
public struct VFIORegionFlags: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let readable = Self(rawValue: CIO_VFIO_REGION_INFO_FLAG_READ)
    public static let writeable = Self(rawValue: CIO_VFIO_REGION_INFO_FLAG_WRITE)
    public static let mappable = Self(rawValue: CIO_VFIO_REGION_INFO_FLAG_MMAP)
    public static let capabilities = Self(rawValue: CIO_VFIO_REGION_INFO_FLAG_CAPS)
    public var description: String {
        flagDescription(rawValue, [(Self.readable.rawValue, "readable"), (Self.writeable.rawValue, "writeable"),
                                   (Self.mappable.rawValue, "mappable"), (Self.capabilities.rawValue, "capabilities")])
    }
}

/// One region: where it sits in the device file and how it may be accessed.
public struct VFIORegionInfo: Hashable, Sendable {
    /// A window of the region that can be mapped (sparse mmap capability).
    public struct Area: Hashable, Sendable {
        public var offset: UInt64
        public var size: UInt64
    }
    public var index: VFIORegionIndex
    public var flags: VFIORegionFlags
    /// Bytes in the region; 0 when the device lacks it (an unimplemented BAR).
    public var size: UInt64
    /// Where the region starts in the device file (for `pread`/`pwrite`/`mmap`).
    public var offset: UInt64
    /// The only parts that may be mapped, when the region has holes (an MSI-X table, say).
    public var sparseAreas: [Area]?
    /// Device-specific type and subtype, when the region has them.
    public var type: RegionType?

    /// A device-specific region's type (`VFIO_REGION_INFO_CAP_TYPE`).
    public struct RegionType: Hashable, Sendable {
        public var type: UInt32
        public var subtype: UInt32
    }
}

/// An interrupt kind of a VFIO device; for vfio-pci INTx, MSI, MSI-X, error and request.
public struct VFIOIRQIndex: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let intx = Self(rawValue: CIO_VFIO_PCI_INTX_IRQ_INDEX)
    public static let msi = Self(rawValue: CIO_VFIO_PCI_MSI_IRQ_INDEX)
    public static let msix = Self(rawValue: CIO_VFIO_PCI_MSIX_IRQ_INDEX)
    public static let error = Self(rawValue: CIO_VFIO_PCI_ERR_IRQ_INDEX)
    public static let request = Self(rawValue: CIO_VFIO_PCI_REQ_IRQ_INDEX)
}

/// `VFIO_IRQ_INFO_*`.
public struct VFIOIRQFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let eventfd = Self(rawValue: CIO_VFIO_IRQ_INFO_EVENTFD)
    public static let maskable = Self(rawValue: CIO_VFIO_IRQ_INFO_MASKABLE)
    public static let automasked = Self(rawValue: CIO_VFIO_IRQ_INFO_AUTOMASKED)
    public static let noResize = Self(rawValue: CIO_VFIO_IRQ_INFO_NORESIZE)
}

/// How many vectors of one interrupt kind a device has.
public struct VFIOIRQInfo: Hashable, Sendable {
    public var index: VFIOIRQIndex
    public var flags: VFIOIRQFlags
    public var count: Int
}
