import IOMMUFD
import Testing

/// `mmap` of the region a mock vIOMMU offers (`IOMMU_VIOMMU_ALLOC`'s out mmap offset and
/// length): only the exact region maps, its first word is the vIOMMU's input, and the mapping
/// keeps the vIOMMU alive.
@Suite(.serialized, .enabled(if: KernelTier.enabled, "needs /dev/iommu"))
struct IOMMUFDRegionMappingKernelTests {
    @Test func mockVIOMMURegion() throws {
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        let mock = try fd.addMockDevice(to: PageTableID(ioas))
        let parent = try fd.allocateHWPT(for: mock.device, in: ioas, flags: .nestParent)
        var data = VIOMMUData.selftest(input: 0xbeef_cafe, output: 0, mmapOffset: 0, mmapLength: 0)
        let viommu = try fd.allocateVIOMMU(type: .selftest, device: mock.device, hwpt: parent, data: &data)
        guard case .selftest(_, _, let offset, let length) = data else { Issue.record("\(data)"); return }
        print("mock vIOMMU region: offset 0x\(String(offset, radix: 16)), length \(length)")
        #expect(length == UInt64(2 * page))
        #expect(offset % UInt64(page) == 0)

        // Anything but the exact region: ENXIO (the kernel's own negative cases).
        let p = UInt64(page)
        for (o, l) in [(offset + p, length), (offset + 2 * p, length), (offset, length / 2), (offset, length * 2)] {
            expectKernelError(.noSuchAddressOrDevice, .mapIOMMUFDRegion) { try fd.mapRegion(offset: o, length: l) }
        }
        // A length short of whole pages: mmap(2) rounds it up, so the whole region maps.
        do {
            let rounded = try fd.mapRegion(offset: offset, length: length - 8)
            #expect(rounded.length == Int(length) - 8)
            #expect(rounded.load(UInt32.self, at: 0) == 0xbeef_cafe)
        }

        do {
            let region = try fd.mapRegion(of: data)
            #expect(region.length == 2 * page)
            #expect(region.load(UInt32.self, at: 0) == 0xbeef_cafe)
            // Shared with the kernel's pages: a store reads back, in both pages.
            region.store(UInt32(0x1234_5678), at: 4)
            region.store(UInt64(0x0102_0304_0506_0708), at: page + 8)
            #expect(region.load(UInt32.self, at: 4) == 0x1234_5678)
            #expect(region.load(UInt64.self, at: page + 8) == 0x0102_0304_0506_0708)
            // A second mapping of the same region sees the same memory.
            let again = try fd.mapRegion(offset: offset, length: length, writable: false)
            #expect(again.load(UInt32.self, at: 4) == 0x1234_5678)
            // While mapped, the vIOMMU cannot be destroyed.
            expectKernelError(.resourceBusy, .destroy) { try fd.destroy(viommu) }
            try again.unmap()
            expectKernelError(.resourceBusy, .destroy) { try fd.destroy(viommu) }
        }
        // Both mappings ended (one by unmap, one by its owner's end).
        try fd.destroy(viommu)
        // Its region is gone with it.
        expectKernelError(.noSuchAddressOrDevice, .mapIOMMUFDRegion) { try fd.mapRegion(offset: offset, length: length) }
        try fd.destroy(parent)
    }
}
