import IOMMUFD
import Testing

/// The VFIO container ioctls on an iommufd (`CONFIG_IOMMUFD_VFIO_CONTAINER`), against the
/// compatibility IOAS, with a mock device whose page table the kernel checks.
@Suite(.serialized, .enabled(if: KernelTier.enabled, "needs /dev/iommu"))
struct VFIOContainerKernelTests {
    let base: UInt64 = 1 << 24

    @Test func versionAndExtensions() throws {
        let fd = try IOMMUFDContext()
        #expect(try fd.vfioAPIVersion() == 0)
        // Without a compatibility IOAS: what needs none answers, the rest is ENODEV.
        var answers: [String] = []
        for ext in (1...11).map({ VFIOContainerExtension(rawValue: $0) }) where ext != .dmaCacheCoherent {
            answers.append("\(ext)=\(try fd.vfioCheckExtension(ext))")
        }
        print("VFIO_CHECK_EXTENSION on an iommufd: \(answers.joined(separator: " "))")
        #expect(answers == ["type1=true", "spaprTCE=false", "type1v2=true", "eeh=false", "reservedType1Nesting=false",
                            "spaprTCEv2=false", "noIOMMU=false", "unmapAll=true", "updateVAddr=false",
                            "VFIOContainerExtension(11)=false"])
        #expect(try fd.vfioCheckExtension(.type1))
        #expect(try fd.vfioCheckExtension(.type1v2))
        #expect(try fd.vfioCheckExtension(.unmapAll))
        #expect(try !fd.vfioCheckExtension(.updateVAddr))
        #expect(try !fd.vfioCheckExtension(.spaprTCE))
        #expect(try !fd.vfioCheckExtension(.reservedType1Nesting))
        // This kernel has no CONFIG_VFIO_NOIOMMU.
        #expect(try !fd.vfioCheckExtension(.noIOMMU))
        #expect(try !fd.vfioCheckExtension(VFIOContainerExtension(rawValue: 4242)))
        expectKernelError(.operationNotSupportedByDevice, .vfioCheckExtension) { try fd.vfioCheckExtension(.dmaCacheCoherent) }
        expectKernelError(.operationNotSupportedByDevice, .vfioSetIOMMU) { try fd.setVFIOIOMMU(.type1v2) }
        expectKernelError(.operationNotSupportedByDevice, .vfioIOMMUInfo) { try fd.vfioIOMMUInfo() }
        let buffer = try patterned(page, seed: 1)
        expectKernelError(.operationNotSupportedByDevice, .vfioMapDMA) { try fd.vfioMapDMA(buffer.range, at: IOVA(base)) }
        expectKernelError(.operationNotSupportedByDevice, .vfioUnmapDMA) { try fd.vfioUnmapAllDMA() }
        // VFIO_IOMMU_DIRTY_PAGES is not emulated: the kernel does not know the ioctl here.
        #expect(fd.kernel.ioctl(fd.descriptor, .vfioIOMMUDirtyPages, nil) == .failure(.inappropriateIOCTLForDevice))
        // With no domain in the IOAS, every domain is cache coherent.
        let ioas = try fd.allocateIOAS()
        try fd.setVFIOCompatibilityIOAS(ioas)
        #expect(try fd.vfioCheckExtension(.dmaCacheCoherent))
        // The mock's domain does not enforce cache coherency.
        let mock = try fd.addMockDevice(to: PageTableID(ioas))
        #expect(try !fd.vfioCheckExtension(.dmaCacheCoherent))
        try fd.destroy(mock.id)
        #expect(try fd.vfioCheckExtension(.dmaCacheCoherent))
    }

    @Test func mapAndUnmapThroughTheContainer() throws {
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        try fd.setVFIOCompatibilityIOAS(ioas)
        let mock = try fd.addMockDevice(to: PageTableID(ioas))
        expectKernelError(.invalidArgument, .vfioSetIOMMU) { try fd.setVFIOIOMMU(.spaprTCE) }
        try fd.setVFIOIOMMU(.type1v2)
        #expect(try fd.hugePagesOption(in: ioas) == .enabled)

        let info = try fd.vfioIOMMUInfo()
        print("VFIO_IOMMU_GET_INFO: flags \(info.flags), page sizes 0x\(String(info.pageSizes, radix: 16)), ranges \(info.iovaRanges.map { "\($0)" } ?? "none"), DMA available \(info.dmaMappingsAvailable.map { "\($0)" } ?? "none")")
        #expect(info.flags == [.pageSizes, .capabilities])
        // The mock's page sizes from 4 KiB up (its 2 KiB pages round up to PAGE_SIZE).
        #expect(info.pageSizes == 0x1f_ffff_f000)
        #expect(info.dmaMappingsAvailable == UInt32.max)
        // The container's ranges are the IOAS's.
        #expect(info.iovaRanges == (try fd.iovaRanges(of: ioas)).ranges)

        let buffer = try patterned(4 * page, seed: 31)
        try fd.vfioMapDMA(buffer.range, at: IOVA(base))
        try fd.mockCheckMap(mock.hwpt, range(base, 4 * page), maps: buffer.address)
        expectKernelError(.fileExists, .vfioMapDMA) { try fd.vfioMapDMA(buffer.range, at: IOVA(base)) }
        // Flags the emulation does not know (VADDR): EINVAL.
        expectKernelError(.invalidArgument, .vfioMapDMA) { try fd.vfioMapDMA(buffer.range, at: IOVA(base + 0x10_0000), flags: [.read, .vaddr]) }
        // Misaligned: EINVAL from the kernel (not refused before the call).
        let odd = try HostRange(base: buffer.address.advanced(by: 16)!, length: UInt64(page))
        expectKernelError(.invalidArgument, .vfioMapDMA) { try fd.vfioMapDMA(odd, at: IOVA(base + 0x10_0000)) }
        // Read-only through the container: an access cannot write it.
        let readOnly = try patterned(page, seed: 32)
        try fd.vfioMapDMA(readOnly.range, at: IOVA(base + 0x20_0000), flags: .read)
        let access = try fd.createMockAccess(to: ioas)
        expectKernelError(.notPermitted, .mockAccessWrite) { try fd.write([1], at: IOVA(base + 0x20_0000), through: access) }
        #expect(try fd.read(1, at: IOVA(base), through: access) == [31])

        // type1v2: unmaps take whole mappings; a cut is ENOENT.
        expectKernelError(.noSuchFileOrDirectory, .vfioUnmapDMA) { try fd.vfioUnmapDMA(range(base + UInt64(page), page)) }
        // Unlike IOMMU_IOAS_UNMAP (ENOENT), a range that maps nothing unmaps 0 bytes.
        #expect(try fd.vfioUnmapDMA(range(base + 0x40_0000, page)) == 0)
        expectKernelError(.noSuchFileOrDirectory, .unmap) { try fd.unmap(range(base + 0x40_0000, page), from: ioas) }
        #expect(try fd.vfioUnmapDMA(range(base, 4 * page)) == UInt64(4 * page))
        #expect(try fd.vfioUnmapAllDMA() == UInt64(page))
        #expect(try fd.vfioUnmapAllDMA() == 0)
        try access.close()
        try fd.destroy(mock.id)
    }

    @Test func type1SplitsMappingsWithoutHugePages() throws {
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        try fd.setVFIOCompatibilityIOAS(ioas)
        let mock = try fd.addMockDevice(to: PageTableID(ioas))
        try fd.setVFIOIOMMU(.type1)
        // type1 turns huge pages off in the compatibility IOAS.
        #expect(try fd.hugePagesOption(in: ioas) == .disabled)
        let buffer = try patterned(4 * page, seed: 41)
        try fd.vfioMapDMA(buffer.range, at: IOVA(base))
        // An unmap may cut a mapping in type1 mode: the middle page goes, the rest stays.
        #expect(try fd.vfioUnmapDMA(range(base + UInt64(page), page)) == UInt64(page))
        try fd.mockCheckMap(mock.hwpt, range(base, page), maps: buffer.address)
        try fd.mockCheckMap(mock.hwpt, range(base + UInt64(2 * page), 2 * page), maps: buffer.address.advanced(by: UInt64(2 * page))!)
        #expect(throws: IOMMUFDError.self) { try fd.mockCheckMap(mock.hwpt, range(base + UInt64(page), page), maps: buffer.address.advanced(by: UInt64(page))!) }
        #expect(try fd.vfioUnmapDMA(.all) == UInt64(3 * page))
        // Once a domain holds mappings, switching to type1 (turning huge pages off) is EINVAL.
        let other = try fd.allocateIOAS()
        _ = try fd.addMockDevice(to: PageTableID(other))
        _ = try fd.map(buffer, into: other, at: IOVA(base))
        try fd.setVFIOCompatibilityIOAS(other)
        expectKernelError(.invalidArgument, .vfioSetIOMMU) { try fd.setVFIOIOMMU(.type1) }
        try fd.setVFIOIOMMU(.type1v2)
        #expect(try fd.vfioCompatibilityIOAS() == other)
        try fd.setVFIOCompatibilityIOAS(nil)
        #expect(try fd.vfioCompatibilityIOAS() == nil)
    }
}
