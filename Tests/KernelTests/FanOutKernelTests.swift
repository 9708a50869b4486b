import IOMMUFD
import IOMMUMirror
import Testing

extension EduKernelTests {
    /// `IOMMU_IOAS_COPY` against a second map, measured on two IOAS with mock devices (both
    /// pin and fill a mock page table), and an engine fanning out by the measured choice.
    @Suite struct FanOutKernelTests {
        @Test func copyOrMapIsChosenByMeasurement() throws {
            let shared = SharedIOMMUFDContext(try IOMMUFDContext())
            let hasMock = shared.iommufd.hasMockIOMMU
            try #require(hasMock, "the kernel has no mock IOMMU (CONFIG_IOMMUFD_TEST)")
            let a = try shared.iommufd.allocateIOAS(), b = try shared.iommufd.allocateIOAS()
            let mockA = try shared.iommufd.addMockDevice(to: PageTableID(a))
            let mockB = try shared.iommufd.addMockDevice(to: PageTableID(b))
            let base = IOVA(0x100_0000)
            for areaBytes: UInt64 in [4096, 2 << 20] {
                let m = try FanOutMeasurement.measure(shared.iommufd, from: a, to: b, at: base, areaBytes: areaBytes, samples: 8)
                print("fan-out on the mock domain: \(m)")
                #expect(m.mapNanoseconds > 0 && m.copyNanoseconds > 0)
                #expect(m.choice == (m.copyNanoseconds < m.mapNanoseconds ? .copy : .map))
                // Everything it mapped is gone again from both.
                #expect(try shared.iommufd.unmapAll(from: a) == 0 && shared.iommufd.unmapAll(from: b) == 0)
            }
            // Both IOAS still hold nothing the mock domains can see.
            #expect(throws: IOMMUFDError.self) { try shared.iommufd.mockCheckMap(mockA.hwpt, try IOVARange(base: base, length: 4096), maps: HostAddress(0x1000)) }
            #expect(throws: IOMMUFDError.self) { try shared.iommufd.mockCheckMap(mockB.hwpt, try IOVARange(base: base, length: 4096), maps: HostAddress(0x1000)) }
        }
    }
}
