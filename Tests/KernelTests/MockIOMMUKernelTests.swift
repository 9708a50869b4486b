import IOMMUFD
import Testing

/// The kernel's own mock IOMMU (`CONFIG_IOMMUFD_TEST`): a device in a page table the kernel
/// can check, so mappings are verified by the kernel itself.
@Suite(.serialized, .enabled(if: KernelTier.enabled, "needs /dev/iommu"))
struct MockIOMMUKernelTests {
    /// The mock domain's aperture starts at 16 MiB.
    let base: UInt64 = 1 << 24

    @Test func mappedPagesAreInTheMockPageTable() throws {
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        let mock = try fd.addMockDevice(to: PageTableID(ioas))
        let buffer = try patterned(8 * page, seed: 9)
        _ = try fd.map(buffer, into: ioas, at: IOVA(base))
        try fd.mockCheckMap(mock.hwpt, range(base, 8 * page), maps: buffer.address)
        // The kernel refuses the check against the wrong memory.
        let other = try DMABuffer(length: 8 * page)
        #expect(throws: IOMMUFDError.self) {
            try fd.mockCheckMap(mock.hwpt, range(base, 8 * page), maps: other.address)
        }
        // Attached devices narrow the usable ranges to the mock aperture.
        let ranges = try fd.iovaRanges(of: ioas)
        #expect(ranges.ranges.allSatisfy { $0.first.rawValue >= base && $0.last.rawValue < 1 << 31 })
        // Outside the usable ranges: EINVAL.
        expectKernelError(.invalidArgument, .map) { try fd.map(other, into: ioas, at: IOVA(1 << 32)) }
        #expect(try fd.unmapAll(from: ioas) == UInt64(8 * page))
        // Unmapped pages are gone from the mock table too.
        #expect(throws: IOMMUFDError.self) {
            try fd.mockCheckMap(mock.hwpt, range(base, page), maps: buffer.address)
        }
        // An IOAS with a device attached cannot be destroyed.
        expectKernelError(.resourceBusy, .destroy) { try fd.destroy(ioas) }
        try fd.destroy(IOASID(mock.selftestID))
        try fd.destroy(ioas)
    }

    @Test func copiedMappingsReachTheSecondDomain() throws {
        let fd = try IOMMUFDContext()
        let a = try fd.allocateIOAS()
        let b = try fd.allocateIOAS()
        let mock = try fd.addMockDevice(to: PageTableID(b))
        let buffer = try patterned(4 * page, seed: 5)
        _ = try fd.map(buffer, into: a, at: IOVA(base))
        _ = try fd.copy(range(base, 4 * page), from: a, to: b, at: IOVA(base + 0x10_0000))
        try fd.mockCheckMap(mock.hwpt, range(base + 0x10_0000, 4 * page), maps: buffer.address)
    }

    @Test func replaceMovesTheDeviceToAnotherIOAS() throws {
        let fd = try IOMMUFDContext()
        let a = try fd.allocateIOAS()
        let b = try fd.allocateIOAS()
        let mock = try fd.addMockDevice(to: PageTableID(a))
        let buffer = try patterned(2 * page, seed: 7)
        _ = try fd.map(buffer, into: b, at: IOVA(base))
        let hwpt = try fd.replaceMockDevicePageTable(mock, with: PageTableID(b))
        #expect(hwpt != mock.hwpt)
        try fd.mockCheckMap(hwpt, range(base, 2 * page), maps: buffer.address)
        // a has no device any more: destroying it works.
        try fd.destroy(a)
    }

    @Test func mapFileReachesTheDomain() throws {
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        let mock = try fd.addMockDevice(to: PageTableID(ioas))
        let buffer = try DMABuffer(memfdLength: 4 * page)
        buffer.withUnsafeMutableBytes { $0.storeBytes(of: 0xabcd_ef01, as: UInt32.self) }
        let memfd = buffer.memfd
        _ = try fd.mapFile(try #require(memfd), offset: 0, length: UInt64(4 * page), into: ioas, at: IOVA(base))
        try fd.mockCheckMap(mock.hwpt, range(base, 4 * page), maps: buffer.address)
    }

    @Test func hugePageBuffersMapWhole() throws {
        // The VM boots with 64 huge pages of 2 MiB reserved (`hugepages=64`).
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        let mock = try fd.addMockDevice(to: PageTableID(ioas))
        let anonymous = try DMABuffer(length: 4 << 20, hugePages: .size2M, populate: true)
        let shared = try DMABuffer(memfdLength: 2 << 20, hugePages: .size2M)
        #expect(anonymous.pageSize == .size2M && shared.pageSize == .size2M)
        _ = try fd.map(anonymous, into: ioas, at: IOVA(base))
        let memfd = shared.memfd
        _ = try fd.mapFile(try #require(memfd), offset: 0, length: 2 << 20, into: ioas, at: IOVA(base + (4 << 20)))
        try fd.mockCheckMap(mock.hwpt, range(base, 4 << 20), maps: anonymous.address)
        try fd.mockCheckMap(mock.hwpt, range(base + (4 << 20), 2 << 20), maps: shared.address)
        #expect(try fd.unmapAll(from: ioas) == 6 << 20)
    }
}
