import CIOMMUFD
import Testing

// Golden layouts of the VFIO cdev structs and of the mock IOMMU's, worked out by hand as
// in IOMMUFDLayoutTests. Structs that end in a flexible array member import without it,
// so their size here is the header's size, which is also the offset of the array.

let vfioLayouts: [StructCheck] = [
    layout(cio_vfio_info_cap_header.self, size: 8, align: 4, [
        u16(\.id, 0), u16(\.version, 2), u32(\.next, 4),
    ]),
    layout(cio_vfio_device_info.self, size: 24, align: 4, [
        u32(\.argsz, 0), u32(\.flags, 4), u32(\.num_regions, 8), u32(\.num_irqs, 12),
        u32(\.cap_offset, 16), u32(\.pad, 20),
    ]),
    layout(cio_vfio_device_info_cap_pci_atomic_comp.self, size: 16, align: 4, [
        u16(\.header.id, 0), u16(\.header.version, 2), u32(\.header.next, 4),
        u32(\.flags, 8), u32(\.reserved, 12),
    ]),
    layout(cio_vfio_region_info.self, size: 32, align: 8, [
        u32(\.argsz, 0), u32(\.flags, 4), u32(\.index, 8), u32(\.cap_offset, 12),
        u64(\.size, 16), u64(\.offset, 24),
    ]),
    layout(cio_vfio_region_sparse_mmap_area.self, size: 16, align: 8, [
        u64(\.offset, 0), u64(\.size, 8),
    ]),
    // areas[] (8-aligned) starts at 16.
    layout(cio_vfio_region_info_cap_sparse_mmap.self, size: 16, align: 8, [
        u16(\.header.id, 0), u16(\.header.version, 2), u32(\.header.next, 4),
        u32(\.nr_areas, 8), u32(\.reserved, 12),
    ]),
    layout(cio_vfio_region_info_cap_type.self, size: 16, align: 4, [
        u16(\.header.id, 0), u32(\.header.next, 4), u32(\.type, 8), u32(\.subtype, 12),
    ]),
    layout(cio_vfio_irq_info.self, size: 16, align: 4, [
        u32(\.argsz, 0), u32(\.flags, 4), u32(\.index, 8), u32(\.count, 12),
    ]),
    // data[] starts at 20.
    layout(cio_vfio_irq_set.self, size: 20, align: 4, [
        u32(\.argsz, 0), u32(\.flags, 4), u32(\.index, 8), u32(\.start, 12), u32(\.count, 16),
    ]),
    layout(cio_vfio_pci_dependent_device.self, size: 8, align: 4, [
        u32(\.group_id, 0), u32(\.devid, 0), u16(\.segment, 4), u8(\.bus, 6), u8(\.devfn, 7),
    ]),
    // devices[] starts at 12.
    layout(cio_vfio_pci_hot_reset_info.self, size: 12, align: 4, [
        u32(\.argsz, 0), u32(\.flags, 4), u32(\.count, 8),
    ]),
    // group_fds[] starts at 12.
    layout(cio_vfio_pci_hot_reset.self, size: 12, align: 4, [
        u32(\.argsz, 0), u32(\.flags, 4), u32(\.count, 8),
    ]),
    // data[] starts at 8.
    layout(cio_vfio_device_feature.self, size: 8, align: 4, [u32(\.argsz, 0), u32(\.flags, 4)]),
    layout(cio_vfio_device_bind_iommufd.self, size: 24, align: 8, [
        u32(\.argsz, 0), u32(\.flags, 4), s32(\.iommufd, 8), u32(\.out_devid, 12),
        u64(\.token_uuid_ptr, 16),
    ]),
    layout(cio_vfio_device_attach_iommufd_pt.self, size: 16, align: 4, [
        u32(\.argsz, 0), u32(\.flags, 4), u32(\.pt_id, 8), u32(\.pasid, 12),
    ]),
    layout(cio_vfio_device_detach_iommufd_pt.self, size: 12, align: 4, [
        u32(\.argsz, 0), u32(\.flags, 4), u32(\.pasid, 8),
    ]),
]

// The union of cio_iommu_test_cmd starts at 16 (its members hold 64-bit fields) and is
// 48 bytes, the size of `dirty`; `last` follows at 64 and the struct pads to 72.
let mockLayouts: [StructCheck] = [
    layout(cio_iommu_test_cmd.self, size: 72, align: 8, [
        u32(\.size, 0), u32(\.op, 4), u32(\.id, 8), u32(\.__reserved, 12),
        u64(\.add_reserved.start, 16), u64(\.add_reserved.length, 24),
        u32(\.mock_domain.out_stdev_id, 16), u32(\.mock_domain.out_hwpt_id, 20),
        u32(\.mock_domain.out_idev_id, 24),
        u32(\.mock_domain_flags.out_stdev_id, 16), u32(\.mock_domain_flags.out_hwpt_id, 20),
        u32(\.mock_domain_flags.out_idev_id, 24), u32(\.mock_domain_flags.dev_flags, 28),
        u32(\.mock_domain_replace.pt_id, 16),
        u64(\.check_map.iova, 16), u64(\.check_map.length, 24), u64(\.check_map.uptr, 32),
        u64(\.check_refs.length, 16), u64(\.check_refs.uptr, 24), u32(\.check_refs.refs, 32),
        u32(\.create_access.out_access_fd, 16), u32(\.create_access.flags, 20),
        u32(\.destroy_access_pages.access_pages_id, 16),
        u32(\.access_pages.flags, 16), u32(\.access_pages.out_access_pages_id, 20),
        u64(\.access_pages.iova, 24), u64(\.access_pages.length, 32), u64(\.access_pages.uptr, 40),
        u64(\.access_rw.iova, 16), u64(\.access_rw.length, 24), u64(\.access_rw.uptr, 32),
        u32(\.access_rw.flags, 40),
        u32(\.memory_limit.limit, 16),
        u32(\.access_replace_ioas.ioas_id, 16),
        u32(\.dirty.flags, 16), u64(\.dirty.iova, 24), u64(\.dirty.length, 32),
        u64(\.dirty.page_size, 40), u64(\.dirty.uptr, 48), u64(\.dirty.out_nr_dirty, 56),
        u32(\.check_iotlb.id, 16), u32(\.check_iotlb.iotlb, 20),
        u32(\.trigger_iopf.dev_id, 16), u32(\.trigger_iopf.pasid, 20),
        u32(\.trigger_iopf.grpid, 24), u32(\.trigger_iopf.perm, 28), u64(\.trigger_iopf.addr, 32),
        u32(\.check_dev_cache.id, 16), u32(\.check_dev_cache.cache, 20),
        u32(\.trigger_vevent.dev_id, 16),
        u32(\.pasid_attach.pasid, 16), u32(\.pasid_attach.pt_id, 20),
        u32(\.pasid_replace.pasid, 16), u32(\.pasid_replace.pt_id, 20),
        u32(\.pasid_detach.pasid, 16),
        u32(\.pasid_check.pasid, 16), u32(\.pasid_check.hwpt_id, 20),
        u32(\.dmabuf_get.length, 16), u32(\.dmabuf_get.open_flags, 20),
        s32(\.dmabuf_revoke.dmabuf_fd, 16), u32(\.dmabuf_revoke.revoked, 20),
        u32(\.last, 64),
    ]),
    // The per-op argument structs on their own.
    layout(cio_iommu_test_cmd_add_reserved.self, size: 16, align: 8, []),
    layout(cio_iommu_test_cmd_mock_domain.self, size: 12, align: 4, []),
    layout(cio_iommu_test_cmd_mock_domain_flags.self, size: 16, align: 4, []),
    layout(cio_iommu_test_cmd_mock_domain_replace.self, size: 4, align: 4, []),
    layout(cio_iommu_test_cmd_check_map.self, size: 24, align: 8, []),
    layout(cio_iommu_test_cmd_check_refs.self, size: 24, align: 8, []),
    layout(cio_iommu_test_cmd_create_access.self, size: 8, align: 4, []),
    layout(cio_iommu_test_cmd_destroy_access_pages.self, size: 4, align: 4, []),
    layout(cio_iommu_test_cmd_access_pages.self, size: 32, align: 8, []),
    layout(cio_iommu_test_cmd_access_rw.self, size: 32, align: 8, []),
    layout(cio_iommu_test_cmd_memory_limit.self, size: 4, align: 4, []),
    layout(cio_iommu_test_cmd_access_replace_ioas.self, size: 4, align: 4, []),
    layout(cio_iommu_test_cmd_dirty.self, size: 48, align: 8, []),
    layout(cio_iommu_test_cmd_check_iotlb.self, size: 8, align: 4, []),
    layout(cio_iommu_test_cmd_trigger_iopf.self, size: 24, align: 8, []),
    layout(cio_iommu_test_cmd_check_dev_cache.self, size: 8, align: 4, []),
    layout(cio_iommu_test_cmd_trigger_vevent.self, size: 4, align: 4, []),
    layout(cio_iommu_test_cmd_pasid_attach.self, size: 8, align: 4, []),
    layout(cio_iommu_test_cmd_pasid_replace.self, size: 8, align: 4, []),
    layout(cio_iommu_test_cmd_pasid_detach.self, size: 4, align: 4, []),
    layout(cio_iommu_test_cmd_pasid_check.self, size: 8, align: 4, []),
    layout(cio_iommu_test_cmd_dmabuf_get.self, size: 8, align: 4, []),
    layout(cio_iommu_test_cmd_dmabuf_revoke.self, size: 8, align: 4, []),
    layout(cio_iommu_test_hw_info.self, size: 8, align: 4, [u32(\.flags, 0), u32(\.test_reg, 4)]),
    layout(cio_iommu_hwpt_selftest.self, size: 8, align: 4, [
        u32(\.iotlb, 0), u32(\.pagetable_type, 4),
    ]),
    layout(cio_iommu_hwpt_invalidate_selftest.self, size: 8, align: 4, [
        u32(\.flags, 0), u32(\.iotlb_id, 4),
    ]),
    layout(cio_iommu_viommu_selftest.self, size: 24, align: 8, [
        u32(\.in_data, 0), u32(\.out_data, 4), u64(\.out_mmap_offset, 8),
        u64(\.out_mmap_length, 16),
    ]),
    layout(cio_iommu_viommu_invalidate_selftest.self, size: 12, align: 4, [
        u32(\.flags, 0), u32(\.vdev_id, 4), u32(\.cache_id, 8),
    ]),
    layout(cio_iommu_viommu_event_selftest.self, size: 4, align: 4, [u32(\.virt_id, 0)]),
]

@Suite("VFIO and mock-IOMMU layouts")
struct VFIOAndMockLayoutTests {
    @Test func everyVFIOStructHasTheKernelsLayout() {
        expectLayouts(vfioLayouts)
    }

    @Test func everyMockStructHasTheSelftestLayout() {
        expectLayouts(mockLayouts)
    }

    // The probe itself must notice a wrong expectation, or the tables above prove nothing.
    @Test func probeReportsAWrongOffset() {
        let wrong = layout(cio_iommu_ioas_map.self, size: 40, align: 8, [u64(\.iova, 24)])
        #expect(wrong.fields.allSatisfy { !$0.matches })
        #expect(wrong.fields.first?.foundOffset == 32)
        #expect(wrong.fields.first?.foundWidth == 8)
    }
}
