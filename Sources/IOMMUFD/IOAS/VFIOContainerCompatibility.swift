import CIOMMUFD
import SystemPackage

/// An extension or IOMMU type of the VFIO container API: the argument of
/// `VFIO_CHECK_EXTENSION`, and for the IOMMU types also of `VFIO_SET_IOMMU`.
public struct VFIOContainerExtension: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }
    /// The type1 IOMMU: unmaps may split mappings (an iommufd turns huge pages off for it).
    public static let type1 = Self(rawValue: CIO_VFIO_TYPE1_IOMMU)
    public static let spaprTCE = Self(rawValue: CIO_VFIO_SPAPR_TCE_IOMMU)
    /// The type1 IOMMU, version 2: unmaps take whole mappings.
    public static let type1v2 = Self(rawValue: CIO_VFIO_TYPE1v2_IOMMU)
    /// Every domain of the container enforces cache coherency of DMA.
    public static let dmaCacheCoherent = Self(rawValue: CIO_VFIO_DMA_CC_IOMMU)
    public static let eeh = Self(rawValue: CIO_VFIO_EEH)
    /// The withdrawn type1 nesting type (`__VFIO_RESERVED_TYPE1_NESTING_IOMMU`).
    public static let reservedType1Nesting = Self(rawValue: CIO___VFIO_RESERVED_TYPE1_NESTING_IOMMU)
    public static let spaprTCEv2 = Self(rawValue: CIO_VFIO_SPAPR_TCE_v2_IOMMU)
    /// No IOMMU: unsafe DMA to physical addresses (`CONFIG_VFIO_NOIOMMU`).
    public static let noIOMMU = Self(rawValue: CIO_VFIO_NOIOMMU_IOMMU)
    /// `VFIO_DMA_UNMAP_FLAG_ALL`.
    public static let unmapAll = Self(rawValue: CIO_VFIO_UNMAP_ALL)
    /// `VFIO_DMA_MAP_FLAG_VADDR` (an iommufd never offers it).
    public static let updateVAddr = Self(rawValue: CIO_VFIO_UPDATE_VADDR)

    public var description: String {
        switch self {
        case .type1: "type1"
        case .spaprTCE: "spaprTCE"
        case .type1v2: "type1v2"
        case .dmaCacheCoherent: "dmaCacheCoherent"
        case .eeh: "eeh"
        case .reservedType1Nesting: "reservedType1Nesting"
        case .spaprTCEv2: "spaprTCEv2"
        case .noIOMMU: "noIOMMU"
        case .unmapAll: "unmapAll"
        case .updateVAddr: "updateVAddr"
        default: "VFIOContainerExtension(\(rawValue))"
        }
    }
}

/// Flags of `VFIO_IOMMU_MAP_DMA` (`VFIO_DMA_MAP_FLAG_*`). Bits this type does not name reach
/// the kernel unchanged.
public struct VFIODMAMapFlags: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// The device may read. `VFIO_DMA_MAP_FLAG_READ`.
    public static let read = Self(rawValue: CIO_VFIO_DMA_MAP_FLAG_READ)
    /// The device may write. `VFIO_DMA_MAP_FLAG_WRITE`.
    public static let write = Self(rawValue: CIO_VFIO_DMA_MAP_FLAG_WRITE)
    /// Update the process address of a mapping (an iommufd refuses it, `EINVAL`).
    /// `VFIO_DMA_MAP_FLAG_VADDR`.
    public static let vaddr = Self(rawValue: CIO_VFIO_DMA_MAP_FLAG_VADDR)
    public var description: String {
        flagDescription(rawValue, [(Self.read.rawValue, "read"), (Self.write.rawValue, "write"), (Self.vaddr.rawValue, "vaddr")])
    }
}

/// Flags of a `VFIO_IOMMU_GET_INFO` answer (`VFIO_IOMMU_INFO_*`).
public struct VFIOContainerInfoFlags: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// ``VFIOContainerInfo/pageSizes`` is valid. `VFIO_IOMMU_INFO_PGSIZES`.
    public static let pageSizes = Self(rawValue: CIO_VFIO_IOMMU_INFO_PGSIZES)
    /// A capability chain follows. `VFIO_IOMMU_INFO_CAPS`.
    public static let capabilities = Self(rawValue: CIO_VFIO_IOMMU_INFO_CAPS)
    public var description: String {
        flagDescription(rawValue, [(Self.pageSizes.rawValue, "pageSizes"), (Self.capabilities.rawValue, "capabilities")])
    }
}

/// What `VFIO_IOMMU_GET_INFO` reports for the compatibility IOAS.
public struct VFIOContainerInfo: Hashable, Sendable {
    public var flags: VFIOContainerInfoFlags
    /// Page sizes the container maps with, one bit per size (`iova_pgsizes`).
    public var pageSizes: UInt64
    /// Usable IOVA ranges (`VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`), when reported.
    public var iovaRanges: [IOVARange]?
    /// How many more DMA mappings may be made (`VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL`), when reported.
    public var dmaMappingsAvailable: UInt32?
}

extension IoctlRequest {
    // The VFIO container ioctls an iommufd answers. GET_INFO, MAP_DMA and DIRTY_PAGES share
    // their numbers with VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, VFIO_DEVICE_PCI_HOT_RESET and
    // VFIO_DEVICE_FEATURE: equal values, told apart only by the descriptor.
    public static let vfioSetIOMMU = Self(rawValue: CIO_VFIO_SET_IOMMU)
    public static let vfioIOMMUGetInfo = Self(rawValue: CIO_VFIO_IOMMU_GET_INFO)
    public static let vfioIOMMUMapDMA = Self(rawValue: CIO_VFIO_IOMMU_MAP_DMA)
    public static let vfioIOMMUUnmapDMA = Self(rawValue: CIO_VFIO_IOMMU_UNMAP_DMA)
    public static let vfioIOMMUDirtyPages = Self(rawValue: CIO_VFIO_IOMMU_DIRTY_PAGES)
}

extension IOMMUFDContext {
    /// The VFIO API version the iommufd's container emulation speaks (`VFIO_API_VERSION`, 0).
    ///
    /// The corresponding ioctl is `VFIO_GET_API_VERSION`.
    public func vfioAPIVersion() throws(IOMMUFDError) -> Int32 {
        try handle.ioctlValue(.vfioGetAPIVersion, integer: 0, .vfioAPIVersion)
    }

    /// Whether the container emulation offers `extension`. Most answers need no compatibility
    /// IOAS; ``VFIOContainerExtension/dmaCacheCoherent`` asks about its domains.
    ///
    /// - Throws: ``IOMMUFDError``; from the kernel `ENODEV` for
    ///   ``VFIOContainerExtension/dmaCacheCoherent`` without a compatibility IOAS.
    ///
    /// The corresponding ioctl is `VFIO_CHECK_EXTENSION`.
    public func vfioCheckExtension(_ extension: VFIOContainerExtension) throws(IOMMUFDError) -> Bool {
        try handle.ioctlValue(.vfioCheckExtension, integer: `extension`.rawValue, .vfioCheckExtension) != 0
    }

    /// Selects the container's IOMMU type. ``VFIOContainerExtension/type1`` also turns huge
    /// pages off in the compatibility IOAS, so unmaps may split mappings.
    ///
    /// - Throws: ``IOMMUFDError``; from the kernel `ENODEV` without a compatibility IOAS
    ///   (``setVFIOCompatibilityIOAS(_:)``), `EINVAL` for a type other than type1 or type1v2,
    ///   or for type1 once a domain holds mappings.
    ///
    /// The corresponding ioctl is `VFIO_SET_IOMMU`.
    public func setVFIOIOMMU(_ type: VFIOContainerExtension) throws(IOMMUFDError) {
        _ = try handle.ioctlValue(.vfioSetIOMMU, integer: type.rawValue, .vfioSetIOMMU)
    }

    /// Page sizes and usable IOVA ranges of the compatibility IOAS, as a VFIO container reports
    /// them.
    ///
    /// - Throws: ``IOMMUFDError``; from the kernel `ENODEV` without a compatibility IOAS;
    ///   ``IOMMUFDError/Reason/unexpectedResult(_:)`` for a capability chain that leaves the buffer.
    ///
    /// The corresponding ioctl is `VFIO_IOMMU_GET_INFO` (repeated with the size the kernel
    /// asks for when the capabilities do not fit).
    public func vfioIOMMUInfo() throws(IOMMUFDError) -> VFIOContainerInfo {
        var size = MemoryLayout<cio_vfio_iommu_type1_info>.size + 256
        while true {
            let result = try withUnsafeTemporaryAllocation(byteCount: size, alignment: 8) {
                (buffer) throws(IOMMUFDError) -> VFIOContainerInfo? in
                buffer.initializeMemory(as: UInt8.self, repeating: 0)
                buffer.storeBytes(of: UInt32(size), as: UInt32.self)
                try handle.ioctl(.vfioIOMMUGetInfo, buffer: buffer.baseAddress, .vfioIOMMUInfo).get()
                let head = buffer.load(as: cio_vfio_iommu_type1_info.self)
                if Int(head.argsz) > size {
                    size = Int(head.argsz)
                    return nil
                }
                var info = VFIOContainerInfo(flags: VFIOContainerInfoFlags(rawValue: head.flags), pageSizes: head.iova_pgsizes)
                if head.flags & CIO_VFIO_IOMMU_INFO_CAPS != 0 {
                    try Self.parseContainerCapabilities(UnsafeRawBufferPointer(buffer), first: Int(head.cap_offset), into: &info)
                }
                return info
            }
            if let result { return result }
        }
    }

    private static func parseContainerCapabilities(
        _ buffer: UnsafeRawBufferPointer, first: Int, into info: inout VFIOContainerInfo
    ) throws(IOMMUFDError) {
        let headerSize = MemoryLayout<cio_vfio_info_cap_header>.size
        func check(_ offset: Int, _ size: Int) throws(IOMMUFDError) {
            guard offset >= MemoryLayout<cio_vfio_iommu_type1_info>.size, offset + size <= buffer.count else {
                throw IOMMUFDError(.vfioIOMMUInfo, request: .vfioIOMMUGetInfo,
                                   reason: .unexpectedResult("a \(size)-byte capability at offset \(offset) leaves the \(buffer.count)-byte buffer"))
            }
        }
        var offset = first
        var seen = 0
        while offset != 0, seen < 64 {
            seen += 1
            try check(offset, headerSize)
            let header = buffer.loadUnaligned(fromByteOffset: offset, as: cio_vfio_info_cap_header.self)
            switch header.id {
            case CIO_VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE:
                let capSize = MemoryLayout<cio_vfio_iommu_type1_info_cap_iova_range>.size
                try check(offset, capSize)
                let cap = buffer.loadUnaligned(fromByteOffset: offset, as: cio_vfio_iommu_type1_info_cap_iova_range.self)
                let rangeSize = MemoryLayout<cio_vfio_iova_range>.size
                try check(offset, capSize + Int(cap.nr_iovas) * rangeSize)
                var ranges: [IOVARange] = []
                for i in 0..<Int(cap.nr_iovas) {
                    let r = buffer.loadUnaligned(fromByteOffset: offset + capSize + i * rangeSize, as: cio_vfio_iova_range.self)
                    guard let range = try? IOVARange(first: IOVA(r.start), last: IOVA(r.end)) else {
                        throw IOMMUFDError(.vfioIOMMUInfo, request: .vfioIOMMUGetInfo,
                                           reason: .unexpectedResult("IOVA range start 0x\(String(r.start, radix: 16)) above its end"))
                    }
                    ranges.append(range)
                }
                info.iovaRanges = ranges
            case CIO_VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL:
                try check(offset, MemoryLayout<cio_vfio_iommu_type1_info_dma_avail>.size)
                info.dmaMappingsAvailable = buffer.loadUnaligned(fromByteOffset: offset, as: cio_vfio_iommu_type1_info_dma_avail.self).avail
            default:
                break
            }
            offset = Int(header.next)
        }
    }

    /// Maps process memory at a fixed IOVA of the compatibility IOAS, as a VFIO container
    /// would. Such mappings are charged to the process's locked-memory limit the way VFIO does.
    ///
    /// - Parameters:
    ///   - host: The memory; page-aligned base and length (the kernel answers `EINVAL` otherwise).
    ///   - flags: Passed to the kernel as given; it knows only ``VFIODMAMapFlags/read`` and
    ///     ``VFIODMAMapFlags/write`` (`EINVAL` for others).
    /// - Throws: ``IOMMUFDError``; before the call for the whole address space (no length can
    ///   say it); from the kernel `ENODEV` without a compatibility IOAS, `EEXIST` when the
    ///   range overlaps a mapping, `EINVAL` for a misaligned range or unknown flags.
    ///
    /// The corresponding ioctl is `VFIO_IOMMU_MAP_DMA`.
    public func vfioMapDMA(
        _ host: HostRange, at iova: IOVA, flags: VFIODMAMapFlags = [.read, .write]
    ) throws(IOMMUFDError) {
        guard let length = host.length else {
            throw IOMMUFDError(.vfioMapDMA, request: .vfioIOMMUMapDMA, reason: .invalidRange(.wholeSpace))
        }
        var cmd = makeCommand(cio_vfio_iommu_type1_dma_map.self)
        cmd.flags = flags.rawValue
        cmd.vaddr = host.first.rawValue
        cmd.iova = iova.rawValue
        cmd.size = length
        _ = try handle.ioctlValue(.vfioIOMMUMapDMA, &cmd, .vfioMapDMA)
    }

    /// Unmaps the mappings inside `range` of the compatibility IOAS and returns the bytes
    /// unmapped: 0 when it maps nothing (where `IOMMU_IOAS_UNMAP` answers `ENOENT`). In
    /// type1v2 mode a range must cover whole mappings; in type1 mode it may split them. The
    /// whole space (``AddressRange/all``) unmaps everything, as ``vfioUnmapAllDMA()``.
    ///
    /// - Throws: ``IOMMUFDError``; from the kernel `ENODEV` without a compatibility IOAS,
    ///   `ENOENT` when the range cuts a mapping in type1v2 mode.
    ///
    /// The corresponding ioctl is `VFIO_IOMMU_UNMAP_DMA`.
    @discardableResult
    public func vfioUnmapDMA(_ range: IOVARange) throws(IOMMUFDError) -> UInt64 {
        guard let length = range.length else { return try vfioUnmapAllDMA() }
        return try vfioUnmap(iova: range.first.rawValue, size: length, flags: 0)
    }

    /// Unmaps everything in the compatibility IOAS and returns the bytes unmapped.
    ///
    /// - Throws: ``IOMMUFDError``; from the kernel `ENODEV` without a compatibility IOAS.
    ///
    /// The corresponding ioctl is `VFIO_IOMMU_UNMAP_DMA` (`VFIO_DMA_UNMAP_FLAG_ALL`).
    @discardableResult
    public func vfioUnmapAllDMA() throws(IOMMUFDError) -> UInt64 {
        try vfioUnmap(iova: 0, size: 0, flags: CIO_VFIO_DMA_UNMAP_FLAG_ALL)
    }

    private func vfioUnmap(iova: UInt64, size: UInt64, flags: UInt32) throws(IOMMUFDError) -> UInt64 {
        var cmd = makeCommand(cio_vfio_iommu_type1_dma_unmap.self)
        cmd.flags = flags
        cmd.iova = iova
        cmd.size = size
        _ = try handle.ioctlValue(.vfioIOMMUUnmapDMA, &cmd, .vfioUnmapDMA)
        return cmd.size
    }
}

extension IOMMUFDError.Operation {
    public static let vfioAPIVersion = Self(rawValue: "vfioAPIVersion")
    public static let vfioCheckExtension = Self(rawValue: "vfioCheckExtension")
    public static let vfioSetIOMMU = Self(rawValue: "vfioSetIOMMU")
    public static let vfioIOMMUInfo = Self(rawValue: "vfioIOMMUInfo")
    public static let vfioMapDMA = Self(rawValue: "vfioMapDMA")
    public static let vfioUnmapDMA = Self(rawValue: "vfioUnmapDMA")
}
