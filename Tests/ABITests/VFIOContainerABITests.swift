import CIOMMUFD
import Testing

// Golden facts of the VFIO container ioctls an iommufd answers (vfio_compat.c): layouts worked
// out by hand from <linux/vfio.h>, constants and request numbers. Structs ending in a flexible
// array import without it, so their size is the array's offset.

let vfioContainerLayouts: [StructCheck] = [
    // iova_pgsizes is an __aligned_u64: 8-aligned at 8; the struct is 24 bytes.
    layout(cio_vfio_iommu_type1_info.self, size: 24, align: 8, [
        u32(\.argsz, 0), u32(\.flags, 4), u64(\.iova_pgsizes, 8), u32(\.cap_offset, 16), u32(\.pad, 20),
    ]),
    layout(cio_vfio_iova_range.self, size: 16, align: 8, [u64(\.start, 0), u64(\.end, 8)]),
    // iova_ranges[] (8-aligned on x86-64) starts at 16.
    layout(cio_vfio_iommu_type1_info_cap_iova_range.self, size: 16, align: 8, [
        u16(\.header.id, 0), u16(\.header.version, 2), u32(\.header.next, 4), u32(\.nr_iovas, 8),
        u32(\.reserved, 12),
    ]),
    // flags at 8, then 4 bytes of padding before the 64-bit fields (x86-64).
    layout(cio_vfio_iommu_type1_info_cap_migration.self, size: 32, align: 8, [
        u16(\.header.id, 0), u32(\.header.next, 4), u32(\.flags, 8), u64(\.pgsize_bitmap, 16),
        u64(\.max_dirty_bitmap_size, 24),
    ]),
    layout(cio_vfio_iommu_type1_info_dma_avail.self, size: 12, align: 4, [
        u16(\.header.id, 0), u32(\.header.next, 4), u32(\.avail, 8),
    ]),
    layout(cio_vfio_iommu_type1_dma_map.self, size: 32, align: 8, [
        u32(\.argsz, 0), u32(\.flags, 4), u64(\.vaddr, 8), u64(\.iova, 16), u64(\.size, 24),
    ]),
    // data[] starts at 24.
    layout(cio_vfio_iommu_type1_dma_unmap.self, size: 24, align: 8, [
        u32(\.argsz, 0), u32(\.flags, 4), u64(\.iova, 8), u64(\.size, 16),
    ]),
]

let vfioContainer32: [Constant<UInt32>] = [
    .init("VFIO_IOMMU_INFO_PGSIZES", CIO_VFIO_IOMMU_INFO_PGSIZES, 0x1),
    .init("VFIO_IOMMU_INFO_CAPS", CIO_VFIO_IOMMU_INFO_CAPS, 0x2),
    .init("VFIO_DMA_MAP_FLAG_READ", CIO_VFIO_DMA_MAP_FLAG_READ, 0x1),
    .init("VFIO_DMA_MAP_FLAG_WRITE", CIO_VFIO_DMA_MAP_FLAG_WRITE, 0x2),
    .init("VFIO_DMA_MAP_FLAG_VADDR", CIO_VFIO_DMA_MAP_FLAG_VADDR, 0x4),
    .init("VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP", CIO_VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, 0x1),
    .init("VFIO_DMA_UNMAP_FLAG_ALL", CIO_VFIO_DMA_UNMAP_FLAG_ALL, 0x2),
    .init("VFIO_DMA_UNMAP_FLAG_VADDR", CIO_VFIO_DMA_UNMAP_FLAG_VADDR, 0x4),
]

let vfioContainer16: [Constant<UInt16>] = [
    .init("VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE", CIO_VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 1),
    .init("VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION", CIO_VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, 2),
    .init("VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL", CIO_VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, 3),
]

// The ioctl's integer argument: unsigned long.
let vfioExtensions: [Constant<UInt>] = [
    .init("VFIO_TYPE1_IOMMU", CIO_VFIO_TYPE1_IOMMU, 1),
    .init("VFIO_SPAPR_TCE_IOMMU", CIO_VFIO_SPAPR_TCE_IOMMU, 2),
    .init("VFIO_TYPE1v2_IOMMU", CIO_VFIO_TYPE1v2_IOMMU, 3),
    .init("VFIO_DMA_CC_IOMMU", CIO_VFIO_DMA_CC_IOMMU, 4),
    .init("VFIO_EEH", CIO_VFIO_EEH, 5),
    .init("__VFIO_RESERVED_TYPE1_NESTING_IOMMU", CIO___VFIO_RESERVED_TYPE1_NESTING_IOMMU, 6),
    .init("VFIO_SPAPR_TCE_v2_IOMMU", CIO_VFIO_SPAPR_TCE_v2_IOMMU, 7),
    .init("VFIO_NOIOMMU_IOMMU", CIO_VFIO_NOIOMMU_IOMMU, 8),
    .init("VFIO_UNMAP_ALL", CIO_VFIO_UNMAP_ALL, 9),
    .init("VFIO_UPDATE_VADDR", CIO_VFIO_UPDATE_VADDR, 10),
]

let vfioContainerRequests: [Request] = [
    Request(name: "VFIO_SET_IOMMU", value: CIO_VFIO_SET_IOMMU, nr: vfioBase + 2),
    Request(name: "VFIO_IOMMU_GET_INFO", value: CIO_VFIO_IOMMU_GET_INFO, nr: vfioBase + 12),
    Request(name: "VFIO_IOMMU_MAP_DMA", value: CIO_VFIO_IOMMU_MAP_DMA, nr: vfioBase + 13),
    Request(name: "VFIO_IOMMU_UNMAP_DMA", value: CIO_VFIO_IOMMU_UNMAP_DMA, nr: vfioBase + 14),
    Request(name: "VFIO_IOMMU_DIRTY_PAGES", value: CIO_VFIO_IOMMU_DIRTY_PAGES, nr: vfioBase + 17),
]

@Suite("VFIO container ABI")
struct VFIOContainerABITests {
    @Test func everyContainerStructHasTheKernelsLayout() {
        expectLayouts(vfioContainerLayouts)
    }

    @Test(arguments: vfioContainer32)
    func value32(_ constant: Constant<UInt32>) { #expect(constant.value == constant.expected) }

    @Test(arguments: vfioContainer16)
    func value16(_ constant: Constant<UInt16>) { #expect(constant.value == constant.expected) }

    @Test(arguments: vfioExtensions)
    func extensionNumber(_ constant: Constant<UInt>) { #expect(constant.value == constant.expected) }

    @Test(arguments: vfioContainerRequests)
    func requestNumber(_ request: Request) { #expect(request.value == io(semicolon, request.nr)) }

    // A container ioctl and a device ioctl with the same number: only the descriptor tells
    // them apart, so a table keyed by number cannot name both.
    @Test func containerRequestsShareNumbersWithDeviceRequests() {
        #expect(CIO_VFIO_IOMMU_GET_INFO == CIO_VFIO_DEVICE_GET_PCI_HOT_RESET_INFO)
        #expect(CIO_VFIO_IOMMU_MAP_DMA == CIO_VFIO_DEVICE_PCI_HOT_RESET)
        #expect(CIO_VFIO_IOMMU_DIRTY_PAGES == CIO_VFIO_DEVICE_FEATURE)
    }
}
