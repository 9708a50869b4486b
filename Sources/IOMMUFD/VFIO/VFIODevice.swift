#if canImport(Glibc)
import Glibc
#endif
import CIOMMUFD
import SystemPackage

/// The owner of one VFIO device file (the cdev `/dev/vfio/devices/vfioN`).
///
/// A device is useful once bound to an iommufd (``bind(to:)``) and attached to an IOAS or HWPT
/// (``attach(to:pasid:)``); its DMA is then translated by that page table. Closing the device
/// unbinds it. Register access goes through ``read(region:offset:into:)`` and
/// ``write(region:offset:from:)`` or a ``RegionMapping``.
public struct VFIODevice: ~Copyable, Sendable {
    let handle: KernelDescriptor
    public var descriptor: CInt { handle.rawValue }
    public var kernel: any KernelInterface { handle.kernel }
    /// The cdev path this device was opened from.
    public let path: String

    /// Opens a VFIO device cdev.
    /// - Throws: ``IOMMUFDError`` with operation `openDevice` (`ENOENT`: no such device,
    ///   `EBUSY`: opened through its group).
    public init(path: String, kernel: any KernelInterface = LinuxKernel()) throws(IOMMUFDError) {
        switch kernel.open(path, flags: O_RDWR) {
        case .success(let fd):
            self.handle = KernelDescriptor(fd, kernel: kernel)
            self.path = path
        case .failure(let e):
            throw IOMMUFDError(.openDevice, reason: .kernel(e, subject: path))
        }
    }

    /// Opens the VFIO cdev of a PCI device bound to a VFIO driver, found through sysfs
    /// (`/sys/bus/pci/devices/BDF/vfio-dev/vfioN`).
    public init(pciAddress: PCIAddress, kernel: any KernelInterface = LinuxKernel()) throws(IOMMUFDError) {
        try self.init(path: try pciAddress.vfioDevicePath(kernel: kernel), kernel: kernel)
    }

    /// Closes the device file, which also unbinds it from its iommufd.
    public consuming func close() throws(IOMMUFDError) { try handle.close() }

    // MARK: iommufd

    /// Binds the device to `iommufd`; DMA is blocked until it is attached to a page table.
    ///
    /// - Returns: The device's id inside `iommufd`.
    /// - Throws: ``IOMMUFDError``; `EPERM` without interrupt remapping, `EINVAL` when this file
    ///   (or another open file of the same device) is already bound.
    ///
    /// The corresponding ioctl is `VFIO_DEVICE_BIND_IOMMUFD`.
    public func bind(to iommufd: borrowing IOMMUFDContext) throws(IOMMUFDError) -> DeviceID {
        var cmd = makeCommand(cio_vfio_device_bind_iommufd.self)
        cmd.iommufd = iommufd.descriptor
        try ioctl(.vfioDeviceBindIOMMUFD, &cmd, .bind)
        return DeviceID(cmd.out_devid)
    }

    /// Attaches the device (or one of its PASIDs) to an IOAS, HWPT or vIOMMU; attaching again
    /// while attached replaces the page table without a window of blocked DMA.
    ///
    /// - Returns: The page table now in use: for an IOAS, the HWPT the kernel made or reused.
    /// - Throws: ``IOMMUFDError``; `EINVAL` for an incompatible HWPT, `ENOENT` for an unknown id.
    ///
    /// The corresponding ioctl is `VFIO_DEVICE_ATTACH_IOMMUFD_PT`.
    @discardableResult
    public func attach(to pageTable: PageTableID, pasid: UInt32? = nil) throws(IOMMUFDError) -> HWPTID {
        var cmd = makeCommand(cio_vfio_device_attach_iommufd_pt.self)
        cmd.pt_id = pageTable.rawValue
        if let pasid {
            cmd.flags = CIO_VFIO_DEVICE_ATTACH_PASID
            cmd.pasid = pasid
        }
        try ioctl(.vfioDeviceAttachIOMMUFDPT, &cmd, .attach)
        return HWPTID(cmd.pt_id)
    }

    /// Attaches to an IOAS; see ``attach(to:pasid:)``.
    @discardableResult
    public func attach(to ioas: IOASID, pasid: UInt32? = nil) throws(IOMMUFDError) -> HWPTID {
        try attach(to: PageTableID(ioas), pasid: pasid)
    }

    /// Attaches to a HWPT; see ``attach(to:pasid:)``.
    @discardableResult
    public func attach(to hwpt: HWPTID, pasid: UInt32? = nil) throws(IOMMUFDError) -> HWPTID {
        try attach(to: PageTableID(hwpt), pasid: pasid)
    }

    /// Detaches the device (or a PASID) from its page table; its DMA is blocked again.
    ///
    /// The corresponding ioctl is `VFIO_DEVICE_DETACH_IOMMUFD_PT`.
    public func detach(pasid: UInt32? = nil) throws(IOMMUFDError) {
        var cmd = makeCommand(cio_vfio_device_detach_iommufd_pt.self)
        if let pasid {
            cmd.flags = CIO_VFIO_DEVICE_DETACH_PASID
            cmd.pasid = pasid
        }
        try ioctl(.vfioDeviceDetachIOMMUFDPT, &cmd, .detach)
    }

    // MARK: Device, regions, interrupts

    /// The device's kind, regions and interrupts.
    ///
    /// The corresponding ioctl is `VFIO_DEVICE_GET_INFO`.
    public func info() throws(IOMMUFDError) -> VFIODeviceInfo {
        var cmd = makeCommand(cio_vfio_device_info.self)
        try ioctl(.vfioDeviceGetInfo, &cmd, .deviceInfo)
        return VFIODeviceInfo(flags: VFIODeviceFlags(rawValue: cmd.flags), regionCount: Int(cmd.num_regions),
                              irqCount: Int(cmd.num_irqs))
    }

    /// Size, offset, access and capabilities of one region (a BAR, config space, ...).
    ///
    /// The corresponding ioctl is `VFIO_DEVICE_GET_REGION_INFO` (repeated with a larger buffer
    /// when the capability chain does not fit).
    public func regionInfo(_ index: VFIORegionIndex) throws(IOMMUFDError) -> VFIORegionInfo {
        var size = MemoryLayout<cio_vfio_region_info>.size + 256
        while true {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 8)
            defer { buffer.deallocate() }
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            var head = cio_vfio_region_info()
            head.argsz = UInt32(size)
            head.index = index.rawValue
            buffer.storeBytes(of: head, as: cio_vfio_region_info.self)
            try handle.ioctl(.vfioDeviceGetRegionInfo, buffer: buffer.baseAddress, .regionInfo).get()
            let out = buffer.load(as: cio_vfio_region_info.self)
            if Int(out.argsz) > size {
                size = Int(out.argsz)
                continue
            }
            var info = VFIORegionInfo(index: index, flags: VFIORegionFlags(rawValue: out.flags), size: out.size,
                                      offset: out.offset, sparseAreas: nil, type: nil)
            if info.flags.contains(.capabilities) {
                try parseRegionCapabilities(UnsafeRawBufferPointer(buffer), first: Int(out.cap_offset), into: &info)
            }
            return info
        }
    }

    private func parseRegionCapabilities(
        _ buffer: UnsafeRawBufferPointer, first: Int, into info: inout VFIORegionInfo
    ) throws(IOMMUFDError) {
        var offset = first
        var seen = 0
        let headerSize = MemoryLayout<cio_vfio_info_cap_header>.size
        while offset != 0 {
            guard offset >= MemoryLayout<cio_vfio_region_info>.size, offset + headerSize <= buffer.count, seen < 64 else {
                throw IOMMUFDError(.regionInfo, request: .vfioDeviceGetRegionInfo,
                                   reason: .unexpectedResult("capability chain leaves the buffer at offset \(offset)"))
            }
            seen += 1
            let header = buffer.loadUnaligned(fromByteOffset: offset, as: cio_vfio_info_cap_header.self)
            switch header.id {
            case CIO_VFIO_REGION_INFO_CAP_SPARSE_MMAP:
                try requireCapability(buffer, offset, MemoryLayout<cio_vfio_region_info_cap_sparse_mmap>.size)
                let count = Int(buffer.loadUnaligned(fromByteOffset: offset + headerSize, as: UInt32.self))
                let areaSize = MemoryLayout<cio_vfio_region_sparse_mmap_area>.size
                let areasStart = offset + headerSize + 8
                guard areasStart + count * areaSize <= buffer.count else {
                    throw IOMMUFDError(.regionInfo, request: .vfioDeviceGetRegionInfo,
                                       reason: .unexpectedResult("sparse mmap capability with \(count) areas overruns the buffer"))
                }
                info.sparseAreas = (0..<count).map { i in
                    let a = buffer.loadUnaligned(fromByteOffset: areasStart + i * areaSize, as: cio_vfio_region_sparse_mmap_area.self)
                    return VFIORegionInfo.Area(offset: a.offset, size: a.size)
                }
            case CIO_VFIO_REGION_INFO_CAP_TYPE:
                try requireCapability(buffer, offset, MemoryLayout<cio_vfio_region_info_cap_type>.size)
                let t = buffer.loadUnaligned(fromByteOffset: offset, as: cio_vfio_region_info_cap_type.self)
                info.type = .init(type: t.type, subtype: t.subtype)
            default:
                break
            }
            offset = Int(header.next)
        }
    }

    private func requireCapability(_ buffer: UnsafeRawBufferPointer, _ offset: Int, _ size: Int) throws(IOMMUFDError) {
        guard offset + size <= buffer.count else {
            throw IOMMUFDError(.regionInfo, request: .vfioDeviceGetRegionInfo,
                               reason: .unexpectedResult("a \(size)-byte capability at offset \(offset) overruns the buffer"))
        }
    }

    /// How many interrupts of one kind the device has and how they can be signalled.
    ///
    /// The corresponding ioctl is `VFIO_DEVICE_GET_IRQ_INFO`.
    public func irqInfo(_ index: VFIOIRQIndex) throws(IOMMUFDError) -> VFIOIRQInfo {
        var cmd = makeCommand(cio_vfio_irq_info.self)
        cmd.index = index.rawValue
        try ioctl(.vfioDeviceGetIRQInfo, &cmd, .irqInfo)
        return VFIOIRQInfo(index: index, flags: VFIOIRQFlags(rawValue: cmd.flags), count: Int(cmd.count))
    }

    /// Routes interrupts `start..<start+eventfds.count` of one kind to eventfds (`-1` leaves a
    /// vector unrouted). An empty list turns the interrupts of that kind off.
    ///
    /// The corresponding ioctl is `VFIO_DEVICE_SET_IRQS` (`DATA_EVENTFD | ACTION_TRIGGER`, or
    /// `DATA_NONE | ACTION_TRIGGER` with count 0 to disable).
    public func setIRQs(_ index: VFIOIRQIndex, start: UInt32 = 0, eventfds: [CInt]) throws(IOMMUFDError) {
        let header = MemoryLayout<cio_vfio_irq_set>.size
        let size = header + eventfds.count * MemoryLayout<Int32>.size
        try withUnsafeTemporaryAllocation(byteCount: size, alignment: 8) { (buffer) throws(IOMMUFDError) in
            var head = cio_vfio_irq_set()
            head.argsz = UInt32(size)
            head.flags = (eventfds.isEmpty ? CIO_VFIO_IRQ_SET_DATA_NONE : CIO_VFIO_IRQ_SET_DATA_EVENTFD)
                | CIO_VFIO_IRQ_SET_ACTION_TRIGGER
            head.index = index.rawValue
            head.start = start
            head.count = UInt32(eventfds.count)
            buffer.storeBytes(of: head, as: cio_vfio_irq_set.self)
            for (i, fd) in eventfds.enumerated() {
                buffer.storeBytes(of: Int32(fd), toByteOffset: header + i * 4, as: Int32.self)
            }
            try handle.ioctl(.vfioDeviceSetIRQs, buffer: buffer.baseAddress, .setIRQs).get()
        }
    }

    /// Resets the device (function-level reset or the best the kernel can do).
    ///
    /// The corresponding ioctl is `VFIO_DEVICE_RESET`.
    public func reset() throws(IOMMUFDError) {
        try handle.ioctl(.vfioDeviceReset, buffer: nil, .reset).get()
    }

    // MARK: Register access

    /// Reads bytes of a region at `offset` (config space, a BAR), as the device answers them.
    public func read(region: borrowing VFIORegionInfo, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(IOMMUFDError) {
        let position = try checkAccess(region, offset, buffer.count, .readable)
        let n = try handle.pread(into: buffer, at: position, .regionAccess)
        guard n == buffer.count else {
            throw IOMMUFDError(.regionAccess, reason: .unexpectedResult("read \(n) of \(buffer.count) bytes"))
        }
    }

    /// Writes bytes to a region at `offset`.
    public func write(region: borrowing VFIORegionInfo, offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(IOMMUFDError) {
        let position = try checkAccess(region, offset, buffer.count, .writeable)
        let n = try handle.pwrite(from: buffer, at: position, .regionAccess)
        guard n == buffer.count else {
            throw IOMMUFDError(.regionAccess, reason: .unexpectedResult("wrote \(n) of \(buffer.count) bytes"))
        }
    }

    /// Reads one little-endian value of a region (a register, a config-space field).
    public func read<T: FixedWidthInteger>(_ type: T.Type, region: VFIORegionInfo, offset: UInt64) throws(IOMMUFDError) -> T {
        var value = T.zero
        try withUnsafeMutableBytes(of: &value) { (b) throws(IOMMUFDError) in try read(region: region, offset: offset, into: b) }
        return T(littleEndian: value)
    }

    /// Writes one little-endian value to a region.
    public func write<T: FixedWidthInteger>(_ value: T, region: VFIORegionInfo, offset: UInt64) throws(IOMMUFDError) {
        let le = value.littleEndian
        try withUnsafeBytes(of: le) { (b) throws(IOMMUFDError) in try write(region: region, offset: offset, from: b) }
    }

    /// Checks access and bounds; returns the position in the device file.
    private func checkAccess(
        _ region: VFIORegionInfo, _ offset: UInt64, _ count: Int, _ need: VFIORegionFlags
    ) throws(IOMMUFDError) -> Int64 {
        guard region.flags.contains(need) else {
            throw IOMMUFDError(.regionAccess, reason: .invalidArgument("region \(region.index) is not \(need)"))
        }
        let (end, overflow) = offset.addingReportingOverflow(UInt64(count))
        let (position, pastFile) = region.offset.addingReportingOverflow(offset)
        guard !overflow, end <= region.size, !pastFile, let position = Int64(exactly: position) else {
            throw IOMMUFDError(.regionAccess,
                               reason: .invalidArgument("\(count) bytes at 0x\(String(offset, radix: 16)) pass the end of region \(region.index) (\(region.size) bytes)"))
        }
        return position
    }

    @inline(__always)
    func ioctl<Argument>(
        _ request: IoctlRequest, _ argument: inout Argument, _ operation: IOMMUFDError.Operation
    ) throws(IOMMUFDError) {
        try handle.ioctl(request, &argument, operation)
    }
}

extension IOMMUFDError.Operation {
    public static let openDevice = Self(rawValue: "openDevice")
    public static let bind = Self(rawValue: "bind")
    public static let attach = Self(rawValue: "attach")
    public static let detach = Self(rawValue: "detach")
    public static let deviceInfo = Self(rawValue: "deviceInfo")
    public static let regionInfo = Self(rawValue: "regionInfo")
    public static let irqInfo = Self(rawValue: "irqInfo")
    public static let setIRQs = Self(rawValue: "setIRQs")
    public static let reset = Self(rawValue: "reset")
    public static let regionAccess = Self(rawValue: "regionAccess")
    public static let mapRegion = Self(rawValue: "mapRegion")
    public static let sysfs = Self(rawValue: "sysfs")
    public static let eventfd = Self(rawValue: "eventfd")
}
