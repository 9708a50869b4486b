import CIOMMUFD
import Testing

@Test func importsIOASMap() {
    #expect(MemoryLayout<cio_iommu_ioas_map>.size == 40)
    #expect(CIO_IOMMU_IOAS_MAP == 15237)
    var info = cio_iommu_hw_info()
    info.out_data_type = CIO_IOMMU_HW_INFO_TYPE_INTEL_VTD
    #expect(info.in_data_type == 1)
    #expect(CIO_IOMMU_HW_CAP_DIRTY_TRACKING == UInt64(1))
}
