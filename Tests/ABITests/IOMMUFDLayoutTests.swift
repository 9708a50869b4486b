import CIOMMUFD
import Testing

// Golden layouts of the iommufd structs. The numbers are worked out by hand from the
// kernel's field list and the C rules (a field at the next multiple of its alignment,
// __aligned_u64 8-aligned, the size rounded up to the largest alignment); they are not
// printed from a compiler.

let iommufdLayouts: [StructCheck] = [
    layout(cio_iommu_destroy.self, size: 8, align: 4, [u32(\.size, 0), u32(\.id, 4)]),
    layout(cio_iommu_ioas_alloc.self, size: 12, align: 4, [
        u32(\.size, 0), u32(\.flags, 4), u32(\.out_ioas_id, 8),
    ]),
    layout(cio_iommu_iova_range.self, size: 16, align: 8, [u64(\.start, 0), u64(\.last, 8)]),
    layout(cio_iommu_ioas_iova_ranges.self, size: 32, align: 8, [
        u32(\.size, 0), u32(\.ioas_id, 4), u32(\.num_iovas, 8), u32(\.__reserved, 12),
        u64(\.allowed_iovas, 16), u64(\.out_iova_alignment, 24),
    ]),
    layout(cio_iommu_ioas_allow_iovas.self, size: 24, align: 8, [
        u32(\.size, 0), u32(\.ioas_id, 4), u32(\.num_iovas, 8), u32(\.__reserved, 12),
        u64(\.allowed_iovas, 16),
    ]),
    layout(cio_iommu_ioas_map.self, size: 40, align: 8, [
        u32(\.size, 0), u32(\.flags, 4), u32(\.ioas_id, 8), u32(\.__reserved, 12),
        u64(\.user_va, 16), u64(\.length, 24), u64(\.iova, 32),
    ]),
    layout(cio_iommu_ioas_noiommu_get_pa.self, size: 40, align: 8, [
        u32(\.size, 0), u32(\.flags, 4), u32(\.ioas_id, 8), u32(\.__reserved, 12),
        u64(\.iova, 16), u64(\.length, 24), u64(\.out_phys, 32),
    ]),
    layout(cio_iommu_ioas_map_file.self, size: 40, align: 8, [
        u32(\.size, 0), u32(\.flags, 4), u32(\.ioas_id, 8), s32(\.fd, 12),
        u64(\.start, 16), u64(\.length, 24), u64(\.iova, 32),
    ]),
    layout(cio_iommu_ioas_copy.self, size: 40, align: 8, [
        u32(\.size, 0), u32(\.flags, 4), u32(\.dst_ioas_id, 8), u32(\.src_ioas_id, 12),
        u64(\.length, 16), u64(\.dst_iova, 24), u64(\.src_iova, 32),
    ]),
    layout(cio_iommu_ioas_unmap.self, size: 24, align: 8, [
        u32(\.size, 0), u32(\.ioas_id, 4), u64(\.iova, 8), u64(\.length, 16),
    ]),
    layout(cio_iommu_option.self, size: 24, align: 8, [
        u32(\.size, 0), u32(\.option_id, 4), u16(\.op, 8), u16(\.__reserved, 10),
        u32(\.object_id, 12), u64(\.val64, 16),
    ]),
    layout(cio_iommu_vfio_ioas.self, size: 12, align: 4, [
        u32(\.size, 0), u32(\.ioas_id, 4), u16(\.op, 8), u16(\.__reserved, 10),
    ]),
    layout(cio_iommu_hwpt_vtd_s1.self, size: 24, align: 8, [
        u64(\.flags, 0), u64(\.pgtbl_addr, 8), u32(\.addr_width, 16), u32(\.__reserved, 20),
    ]),
    layout(cio_iommu_hwpt_arm_smmuv3.self, size: 16, align: 8, [u64(\.ste.0, 0), u64(\.ste.1, 8)]),
    layout(cio_iommu_hwpt_amd_guest.self, size: 32, align: 8, [
        u64(\.dte.0, 0), u64(\.dte.1, 8), u64(\.dte.2, 16), u64(\.dte.3, 24),
    ]),
    layout(cio_iommu_hwpt_alloc.self, size: 48, align: 8, [
        u32(\.size, 0), u32(\.flags, 4), u32(\.dev_id, 8), u32(\.pt_id, 12),
        u32(\.out_hwpt_id, 16), u32(\.__reserved, 20), u32(\.data_type, 24), u32(\.data_len, 28),
        u64(\.data_uptr, 32), u32(\.fault_id, 40), u32(\.__reserved2, 44),
    ]),
    layout(cio_iommu_hw_info_vtd.self, size: 24, align: 8, [
        u32(\.flags, 0), u32(\.__reserved, 4), u64(\.cap_reg, 8), u64(\.ecap_reg, 16),
    ]),
    layout(cio_iommu_hw_info_arm_smmuv3.self, size: 40, align: 4, [
        u32(\.flags, 0), u32(\.__reserved, 4),
        u32(\.idr.0, 8), u32(\.idr.1, 12), u32(\.idr.2, 16), u32(\.idr.3, 20), u32(\.idr.4, 24),
        u32(\.idr.5, 28), u32(\.iidr, 32), u32(\.aidr, 36),
    ]),
    layout(cio_iommu_hw_info_tegra241_cmdqv.self, size: 8, align: 4, [
        u32(\.flags, 0), u8(\.version, 4), u8(\.log2vcmdqs, 5), u8(\.log2vsids, 6),
        u8(\.__reserved, 7),
    ]),
    layout(cio_iommu_hw_info_amd.self, size: 16, align: 8, [u64(\.efr, 0), u64(\.efr2, 8)]),
    layout(cio_iommu_hw_info.self, size: 40, align: 8, [
        u32(\.size, 0), u32(\.flags, 4), u32(\.dev_id, 8), u32(\.data_len, 12),
        u64(\.data_uptr, 16), u32(\.in_data_type, 24), u32(\.out_data_type, 24),
        u8(\.out_max_pasid_log2, 28), u8(\.__reserved.0, 29), u8(\.__reserved.1, 30),
        u8(\.__reserved.2, 31), u64(\.out_capabilities, 32),
    ]),
    layout(cio_iommu_hwpt_set_dirty_tracking.self, size: 16, align: 4, [
        u32(\.size, 0), u32(\.flags, 4), u32(\.hwpt_id, 8), u32(\.__reserved, 12),
    ]),
    layout(cio_iommu_hwpt_get_dirty_bitmap.self, size: 48, align: 8, [
        u32(\.size, 0), u32(\.hwpt_id, 4), u32(\.flags, 8), u32(\.__reserved, 12),
        u64(\.iova, 16), u64(\.length, 24), u64(\.page_size, 32), u64(\.data, 40),
    ]),
    layout(cio_iommu_hwpt_vtd_s1_invalidate.self, size: 24, align: 8, [
        u64(\.addr, 0), u64(\.npages, 8), u32(\.flags, 16), u32(\.__reserved, 20),
    ]),
    layout(cio_iommu_viommu_arm_smmuv3_invalidate.self, size: 16, align: 8, [
        u64(\.cmd.0, 0), u64(\.cmd.1, 8),
    ]),
    layout(cio_iommu_hwpt_invalidate.self, size: 32, align: 8, [
        u32(\.size, 0), u32(\.hwpt_id, 4), u64(\.data_uptr, 8), u32(\.data_type, 16),
        u32(\.entry_len, 20), u32(\.entry_num, 24), u32(\.__reserved, 28),
    ]),
    layout(cio_iommu_hwpt_pgfault.self, size: 40, align: 8, [
        u32(\.flags, 0), u32(\.dev_id, 4), u32(\.pasid, 8), u32(\.grpid, 12), u32(\.perm, 16),
        u32(\.__reserved, 20), u64(\.addr, 24), u32(\.length, 32), u32(\.cookie, 36),
    ]),
    layout(cio_iommu_hwpt_page_response.self, size: 8, align: 4, [u32(\.cookie, 0), u32(\.code, 4)]),
    layout(cio_iommu_fault_alloc.self, size: 16, align: 4, [
        u32(\.size, 0), u32(\.flags, 4), u32(\.out_fault_id, 8), u32(\.out_fault_fd, 12),
    ]),
    layout(cio_iommu_viommu_tegra241_cmdqv.self, size: 16, align: 8, [
        u64(\.out_vintf_mmap_offset, 0), u64(\.out_vintf_mmap_length, 8),
    ]),
    layout(cio_iommu_viommu_alloc.self, size: 40, align: 8, [
        u32(\.size, 0), u32(\.flags, 4), u32(\.type, 8), u32(\.dev_id, 12), u32(\.hwpt_id, 16),
        u32(\.out_viommu_id, 20), u32(\.data_len, 24), u32(\.__reserved, 28), u64(\.data_uptr, 32),
    ]),
    layout(cio_iommu_vdevice_alloc.self, size: 24, align: 8, [
        u32(\.size, 0), u32(\.viommu_id, 4), u32(\.dev_id, 8), u32(\.out_vdevice_id, 12),
        u64(\.virt_id, 16),
    ]),
    layout(cio_iommu_ioas_change_process.self, size: 8, align: 4, [
        u32(\.size, 0), u32(\.__reserved, 4),
    ]),
    layout(cio_iommufd_vevent_header.self, size: 8, align: 4, [u32(\.flags, 0), u32(\.sequence, 4)]),
    layout(cio_iommu_vevent_arm_smmuv3.self, size: 32, align: 8, [
        u64(\.evt.0, 0), u64(\.evt.1, 8), u64(\.evt.2, 16), u64(\.evt.3, 24),
    ]),
    layout(cio_iommu_vevent_tegra241_cmdqv.self, size: 16, align: 8, [
        u64(\.lvcmdq_err_map.0, 0), u64(\.lvcmdq_err_map.1, 8),
    ]),
    layout(cio_iommu_veventq_alloc.self, size: 32, align: 4, [
        u32(\.size, 0), u32(\.flags, 4), u32(\.viommu_id, 8), u32(\.type, 12),
        u32(\.veventq_depth, 16), u32(\.out_veventq_id, 20), u32(\.out_veventq_fd, 24),
        u32(\.__reserved, 28),
    ]),
    layout(cio_iommu_hw_queue_alloc.self, size: 40, align: 8, [
        u32(\.size, 0), u32(\.flags, 4), u32(\.viommu_id, 8), u32(\.type, 12), u32(\.index, 16),
        u32(\.out_hw_queue_id, 20), u64(\.nesting_parent_iova, 24), u64(\.length, 32),
    ]),
]

func expectLayouts(_ checks: [StructCheck]) {
    for check in checks {
        #expect(check.foundSize == check.expectedSize, "size of \(check.name)")
        #expect(check.foundAlignment == check.expectedAlignment, "alignment of \(check.name)")
        for field in check.fields {
            #expect(field.matches, "\(field)")
        }
    }
}

@Suite("iommufd layouts")
struct IOMMUFDLayoutTests {
    @Test func everyStructHasTheKernelsLayout() {
        expectLayouts(iommufdLayouts)
    }

    @Test func ioasMapIsFortyBytes() {
        #expect(MemoryLayout<cio_iommu_ioas_map>.size == 40)
        #expect(MemoryLayout<cio_iommu_ioas_map>.offset(of: \.iova) == 32)
    }

    // The two names of the anonymous union in iommu_hw_info are one 32-bit word.
    @Test func hwInfoDataTypeIsOneWord() {
        var info = cio_iommu_hw_info()
        info.in_data_type = CIO_IOMMU_HW_INFO_TYPE_ARM_SMMUV3
        #expect(info.out_data_type == 2)
    }
}
