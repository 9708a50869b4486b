/// The id of an object inside one iommufd (IOAS, HWPT, device, ...).
///
/// Ids are plain numbers, valid only for the iommufd that made them; closing that iommufd
/// destroys every object in it. Use ``IOMMUFDContext/destroy(_:)`` to destroy one earlier.
public protocol IOMMUObjectID: RawRepresentable<UInt32>, Hashable, Sendable, CustomStringConvertible {
    init(rawValue: UInt32)
}

extension IOMMUObjectID {
    public init(_ rawValue: UInt32) { self.init(rawValue: rawValue) }
    public var description: String { "\(Self.self)(\(rawValue))" }
}

/// An I/O address space: IOVA-to-memory mappings the kernel manages.
public struct IOASID: IOMMUObjectID {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
}

/// A hardware page table (paging or nested) allocated by `IOMMU_HWPT_ALLOC`.
public struct HWPTID: IOMMUObjectID {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
}

/// A device bound to an iommufd (`VFIO_DEVICE_BIND_IOMMUFD`'s `out_devid`).
public struct DeviceID: IOMMUObjectID {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
}

/// A page-table object a device can attach to: an IOAS, a HWPT or a vIOMMU.
public struct PageTableID: IOMMUObjectID {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public init(_ ioas: IOASID) { self.rawValue = ioas.rawValue }
    public init(_ hwpt: HWPTID) { self.rawValue = hwpt.rawValue }
    public init(_ viommu: VIOMMUID) { self.rawValue = viommu.rawValue }
}

/// A fault queue for I/O page faults (`IOMMU_FAULT_QUEUE_ALLOC`).
public struct FaultQueueID: IOMMUObjectID {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
}

/// A virtual IOMMU instance (`IOMMU_VIOMMU_ALLOC`).
public struct VIOMMUID: IOMMUObjectID {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
}

/// A device's presence in a vIOMMU (`IOMMU_VDEVICE_ALLOC`).
public struct VDeviceID: IOMMUObjectID {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
}

/// A vIOMMU event queue (`IOMMU_VEVENTQ_ALLOC`).
public struct VEventQueueID: IOMMUObjectID {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
}

/// A hardware queue of a vIOMMU (`IOMMU_HW_QUEUE_ALLOC`).
public struct HWQueueID: IOMMUObjectID {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
}
