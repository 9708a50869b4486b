#if canImport(Glibc)
import Glibc
#endif
import IOMMUFD
import SystemPackage
import CIOMMUFD

typealias Field = IOMMUFDModel.Field

/// The lowest address a process can map (`vm.mmap_min_addr`'s default): below it every
/// access faults.
let minimumUserAddress: UInt64 = 65536

/// The end of a struct member, as the kernel's `offsetofend`.
func offsetEnd<T, V>(_ member: KeyPath<T, V>) -> Int {
    MemoryLayout<T>.offset(of: member)! + MemoryLayout<V>.size
}

extension Context {
    /// One ioctl on this open iommufd: counted, then an injected failure if one is pending,
    /// else the command. Traced through `model` when tracing.
    mutating func ioctl(
        _ fd: CInt, _ request: IoctlRequest, _ argument: UnsafeMutableRawPointer?, _ model: IOMMUFDModel
    ) -> Result<CInt, Errno> {
        counts[request, default: 0] += 1
        if let e = model.takeInjection(for: request) {
            model.record(fd, .ioctl(request), [], e, injected: true)
            return .failure(e)
        }
        var fields = FieldLog(enabled: configuration.tracing)
        let result: Result<CInt, Errno>
        do throws(Errno) { result = .success(try dispatch(request, argument, &fields)) } catch { result = .failure(error) }
        let errno: Errno? = if case .failure(let e) = result { e } else { nil }
        model.record(fd, .ioctl(request), fields.fields, errno)
        return result
    }

    /// `iommufd_fops_ioctl`: the command table by number, then the size rules, then the op.
    private mutating func dispatch(
        _ request: IoctlRequest, _ argument: UnsafeMutableRawPointer?, _ fields: inout FieldLog
    ) throws(Errno) -> CInt {
        let nr = request.rawValue & 0xff
        // With CONFIG_IOMMUFD_TEST the table reaches IOMMU_TEST_CMD (0xa0), else IOAS_NOIOMMU_GET_PA (0x95).
        let tableEnd: UInt = configuration.selftest ? 0xa1 : 0x96
        guard nr >= 0x80, nr < tableEnd else { return try vfioCompat(request, argument, &fields) }
        guard let argument, UInt64(UInt(bitPattern: argument)) >= minimumUserAddress else { throw .badAddress }
        let size = argument.loadUnaligned(as: UInt32.self)
        fields.append(Field("size", UInt64(size)))

        switch request {
        case .destroy:
            var cmd = try decode(cio_iommu_destroy.self, offsetEnd(\cio_iommu_destroy.id), argument, size)
            fields.append(Field("id", UInt64(cmd.id)))
            try destroy(&cmd)
            respond(cmd, argument, size)
        case .ioasAlloc:
            var cmd = try decode(cio_iommu_ioas_alloc.self, offsetEnd(\cio_iommu_ioas_alloc.out_ioas_id), argument, size)
            fields.append(Field("flags", UInt64(cmd.flags)))
            try allocateIOAS(&cmd)
            fields.append(Field("out_ioas_id", UInt64(cmd.out_ioas_id)))
            respond(cmd, argument, size)
        case .ioasAllowIOVAs:
            var cmd = try decode(cio_iommu_ioas_allow_iovas.self, offsetEnd(\cio_iommu_ioas_allow_iovas.allowed_iovas), argument, size)
            fields += [Field("ioas_id", UInt64(cmd.ioas_id)), Field("num_iovas", UInt64(cmd.num_iovas))]
            try allowIOVAs(&cmd)
            respond(cmd, argument, size)
        case .ioasCopy:
            var cmd = try decode(cio_iommu_ioas_copy.self, offsetEnd(\cio_iommu_ioas_copy.src_iova), argument, size)
            fields += [Field("flags", UInt64(cmd.flags)), Field("dst_ioas_id", UInt64(cmd.dst_ioas_id)),
                       Field("src_ioas_id", UInt64(cmd.src_ioas_id)), Field("length", cmd.length),
                       Field("dst_iova", cmd.dst_iova), Field("src_iova", cmd.src_iova)]
            try copy(&cmd)
            fields.append(Field("out_dst_iova", cmd.dst_iova))
            respond(cmd, argument, size)
        case .ioasIOVARanges:
            var cmd = try decode(cio_iommu_ioas_iova_ranges.self, offsetEnd(\cio_iommu_ioas_iova_ranges.out_iova_alignment), argument, size)
            fields += [Field("ioas_id", UInt64(cmd.ioas_id)), Field("num_iovas", UInt64(cmd.num_iovas))]
            let capacity = cmd.num_iovas
            try iovaRanges(&cmd)
            fields += [Field("out_num_iovas", UInt64(cmd.num_iovas)), Field("out_iova_alignment", cmd.out_iova_alignment)]
            respond(cmd, argument, size)
            if cmd.num_iovas > capacity { throw .messageTooLong }
        case .ioasMap:
            var cmd = try decode(cio_iommu_ioas_map.self, offsetEnd(\cio_iommu_ioas_map.iova), argument, size)
            fields += [Field("flags", UInt64(cmd.flags)), Field("ioas_id", UInt64(cmd.ioas_id)),
                       Field("user_va", cmd.user_va), Field("length", cmd.length), Field("iova", cmd.iova)]
            try map(&cmd)
            fields.append(Field("out_iova", cmd.iova))
            respond(cmd, argument, size)
        case .ioasMapFile:
            var cmd = try decode(cio_iommu_ioas_map_file.self, offsetEnd(\cio_iommu_ioas_map_file.iova), argument, size)
            fields += [Field("flags", UInt64(cmd.flags)), Field("ioas_id", UInt64(cmd.ioas_id)),
                       Field("fd", UInt64(bitPattern: Int64(cmd.fd))), Field("start", cmd.start),
                       Field("length", cmd.length), Field("iova", cmd.iova)]
            try mapFile(&cmd)
            fields.append(Field("out_iova", cmd.iova))
            respond(cmd, argument, size)
        case .ioasUnmap:
            var cmd = try decode(cio_iommu_ioas_unmap.self, offsetEnd(\cio_iommu_ioas_unmap.length), argument, size)
            fields += [Field("ioas_id", UInt64(cmd.ioas_id)), Field("iova", cmd.iova), Field("length", cmd.length)]
            try unmap(&cmd)
            fields.append(Field("out_length", cmd.length))
            respond(cmd, argument, size)
        case .option:
            var cmd = try decode(cio_iommu_option.self, offsetEnd(\cio_iommu_option.val64), argument, size)
            fields += [Field("option_id", UInt64(cmd.option_id)), Field("op", UInt64(cmd.op)),
                       Field("object_id", UInt64(cmd.object_id)), Field("val64", cmd.val64)]
            try option(&cmd)
            fields.append(Field("out_val64", cmd.val64))
            respond(cmd, argument, size)
        case .vfioIOAS:
            var cmd = try decode(cio_iommu_vfio_ioas.self, offsetEnd(\cio_iommu_vfio_ioas.__reserved), argument, size)
            fields += [Field("op", UInt64(cmd.op)), Field("ioas_id", UInt64(cmd.ioas_id))]
            try vfioIOAS(&cmd)
            fields.append(Field("out_ioas_id", UInt64(cmd.ioas_id)))
            respond(cmd, argument, size)
        case .ioasChangeProcess:
            let cmd = try decode(cio_iommu_ioas_change_process.self, offsetEnd(\cio_iommu_ioas_change_process.__reserved), argument, size)
            try changeProcess(cmd)
        case .ioasNoIOMMUGetPA:
            var cmd = try decode(cio_iommu_ioas_noiommu_get_pa.self, offsetEnd(\cio_iommu_ioas_noiommu_get_pa.out_phys), argument, size)
            fields += [Field("ioas_id", UInt64(cmd.ioas_id)), Field("iova", cmd.iova), Field("length", cmd.length)]
            try noIOMMUPhysicalAddress(&cmd)
        case .testCommand where configuration.selftest:
            let cmd = try decode(cio_iommu_test_cmd.self, offsetEnd(\cio_iommu_test_cmd.last), argument, size)
            fields += [Field("op", UInt64(cmd.op)), Field("id", UInt64(cmd.id))]
            try selftest(cmd, &fields)
        case .faultQueueAlloc:
            _ = try decode(cio_iommu_fault_alloc.self, offsetEnd(\cio_iommu_fault_alloc.out_fault_fd), argument, size)
            throw .notSupportedOnSocket
        case .hwptAlloc:
            _ = try decode(cio_iommu_hwpt_alloc.self, offsetEnd(\cio_iommu_hwpt_alloc.__reserved), argument, size)
            throw .noSuchFileOrDirectory
        case .getHWInfo:
            _ = try decode(cio_iommu_hw_info.self, offsetEnd(\cio_iommu_hw_info.__reserved), argument, size)
            throw .noSuchFileOrDirectory
        case .hwptSetDirtyTracking:
            _ = try decode(cio_iommu_hwpt_set_dirty_tracking.self, offsetEnd(\cio_iommu_hwpt_set_dirty_tracking.__reserved), argument, size)
            throw .noSuchFileOrDirectory
        case .hwptGetDirtyBitmap:
            _ = try decode(cio_iommu_hwpt_get_dirty_bitmap.self, offsetEnd(\cio_iommu_hwpt_get_dirty_bitmap.data), argument, size)
            throw .noSuchFileOrDirectory
        case .hwptInvalidate:
            _ = try decode(cio_iommu_hwpt_invalidate.self, offsetEnd(\cio_iommu_hwpt_invalidate.__reserved), argument, size)
            throw .noSuchFileOrDirectory
        case .viommuAlloc:
            _ = try decode(cio_iommu_viommu_alloc.self, offsetEnd(\cio_iommu_viommu_alloc.out_viommu_id), argument, size)
            throw .noSuchFileOrDirectory
        case .vdeviceAlloc:
            _ = try decode(cio_iommu_vdevice_alloc.self, offsetEnd(\cio_iommu_vdevice_alloc.virt_id), argument, size)
            throw .noSuchFileOrDirectory
        case .veventqAlloc:
            _ = try decode(cio_iommu_veventq_alloc.self, offsetEnd(\cio_iommu_veventq_alloc.out_veventq_fd), argument, size)
            throw .noSuchFileOrDirectory
        case .hwQueueAlloc:
            _ = try decode(cio_iommu_hw_queue_alloc.self, offsetEnd(\cio_iommu_hw_queue_alloc.length), argument, size)
            throw .noSuchFileOrDirectory
        default:
            // A hole in the table, or a number whose type, direction or size bits differ.
            throw .inappropriateIOCTLForDevice
        }
        return 0
    }

    /// `copy_struct_from_user` after the minimum-size check: the caller's `size` bytes, zero
    /// extended; bytes past the kernel's struct must be zero (`E2BIG`).
    private func decode<T>(_ type: T.Type, _ minimum: Int, _ argument: UnsafeMutableRawPointer, _ size: UInt32) throws(Errno) -> T {
        guard Int(size) >= minimum else { throw .invalidArgument }
        let known = MemoryLayout<T>.size
        if Int(size) > known {
            var extra = [UInt8](repeating: 0, count: Int(size) - known)
            let at = UInt64(UInt(bitPattern: argument + known))
            let read: Result<Void, Errno> = extra.withUnsafeMutableBytes { b in
                Result { () throws(Errno) in try UserMemory.read(at, into: b.baseAddress!, b.count) }
            }
            try read.get()
            guard extra.allSatisfy({ $0 == 0 }) else { throw .argListTooLong }
        }
        return withUnsafeTemporaryAllocation(of: T.self, capacity: 1) { p in
            let raw = UnsafeMutableRawBufferPointer(p)
            raw.initializeMemory(as: UInt8.self, repeating: 0)
            raw.copyMemory(from: UnsafeRawBufferPointer(start: argument, count: min(Int(size), known)))
            return raw.load(as: T.self)
        }
    }

    /// `iommufd_ucmd_respond`: the command back, as many bytes as the caller's struct has.
    private func respond<T>(_ command: T, _ argument: UnsafeMutableRawPointer, _ size: UInt32) {
        withUnsafeBytes(of: command) { bytes in
            argument.copyMemory(from: bytes.baseAddress!, byteCount: min(Int(size), bytes.count))
        }
    }

    /// `iommufd_vfio_ioctl`: the VFIO container ioctls an iommufd answers.
    private func vfioCompat(_ request: IoctlRequest, _ argument: UnsafeMutableRawPointer?, _ fields: inout FieldLog) throws(Errno) -> CInt {
        switch request {
        case .vfioGetAPIVersion:
            return 0  // VFIO_API_VERSION
        case .vfioCheckExtension:
            let type = UInt(bitPattern: argument)
            fields.append(Field("extension", UInt64(type)))
            // VFIO_TYPE1_IOMMU, VFIO_TYPE1v2_IOMMU, VFIO_UNMAP_ALL.
            return [1, 3, 9].contains(type) ? 1 : 0
        default:
            throw .inappropriateIOCTLForDevice
        }
    }
}
