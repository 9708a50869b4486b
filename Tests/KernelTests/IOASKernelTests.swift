#if canImport(Glibc)
import Glibc
#endif
import CIOMMUFD
import IOMMUFD
import Testing

/// Every IOAS call of the core against the real kernel, with no device attached.
@Suite(.serialized, .enabled(if: KernelTier.enabled, "needs /dev/iommu"))
struct IOASKernelTests {
    @Test func allocateAndDestroy() throws {
        let fd = try IOMMUFDContext()
        let a = try fd.allocateIOAS()
        let b = try fd.allocateIOAS()
        #expect(a != b)
        try fd.destroy(a)
        expectKernelError(.noSuchFileOrDirectory, .destroy) { try fd.destroy(a) }
        expectKernelError(.noSuchFileOrDirectory) { try fd.destroy(IOASID(0xffff_fff0)) }
        try fd.destroy(b)
    }

    @Test func everyIOCTLIsKnown() throws {
        let fd = try IOMMUFDContext()
        let features = fd.probeFeatures()
        for request in IoctlRequest.iommufdRequests {
            #expect(features.supports(request), "\(request) unknown to this kernel")
        }
        let hasMock = fd.hasMockIOMMU
        #expect(hasMock)
        // A number past the table is unknown.
        let unknown = fd.supports(IoctlRequest(rawValue: IoctlRequest.ioasAlloc.rawValue + 0x40))
        #expect(!unknown)
    }

    @Test func fixedMapOverlapAndUnmap() throws {
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        let buffer = try patterned(4 * page, seed: 1)
        let at = IOVA(0x10_0000)
        #expect(try fd.map(buffer, into: ioas, at: at) == at)
        // Overlapping the first mapping by one page: EEXIST.
        let second = try DMABuffer(length: 2 * page)
        expectKernelError(.fileExists, .map) { try fd.map(second, into: ioas, at: IOVA(0x10_0000 + 3 * UInt64(page))) }
        // Adjacent is fine.
        #expect(try fd.map(second, into: ioas, at: IOVA(0x10_0000 + 4 * UInt64(page))) == IOVA(0x10_0000 + 4 * UInt64(page)))
        // Unmapping both areas at once returns the bytes of both.
        #expect(try fd.unmap(range(0x10_0000, 6 * page), from: ioas) == UInt64(6 * page))
        // Nothing left there now.
        expectKernelError(.noSuchFileOrDirectory, .unmap) { try fd.unmap(range(0x10_0000, page), from: ioas) }
    }

    @Test func unmapCuttingAnAreaFailsAfterEarlierAreasAreGone() throws {
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        let a = try DMABuffer(length: page)
        let b = try DMABuffer(length: 2 * page)
        _ = try fd.map(a, into: ioas, at: IOVA(0x20_0000))
        _ = try fd.map(b, into: ioas, at: IOVA(0x20_0000 + UInt64(page)))
        // Covers a wholly and b by half: the kernel never splits an area.
        expectKernelError(.noSuchFileOrDirectory, .unmap) { try fd.unmap(range(0x20_0000, 2 * page), from: ioas) }
        // The kernel's documented surprise: a (wholly inside) is already gone, b stays.
        expectKernelError(.noSuchFileOrDirectory) { try fd.unmap(range(0x20_0000, page), from: ioas) }
        #expect(try fd.unmapAll(from: ioas) == UInt64(2 * page))
    }

    @Test func kernelChosenIOVAs() throws {
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        let a = try DMABuffer(length: 8 * page)
        let b = try DMABuffer(length: 8 * page)
        let ia = try fd.map(a, into: ioas)
        let ib = try fd.map(b, into: ioas, access: .readable)
        #expect(ia.isAligned(to: .system) && ib.isAligned(to: .system))
        let ra = range(ia.rawValue, 8 * page), rb = range(ib.rawValue, 8 * page)
        #expect(!ra.overlaps(rb))
        #expect(try fd.unmapAll(from: ioas) == UInt64(16 * page))
        #expect(try fd.unmapAll(from: ioas) == 0)
    }

    @Test func iovaRangesAndAllowedIOVAs() throws {
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        let fresh = try fd.iovaRanges(of: ioas)
        #expect(!fresh.ranges.isEmpty)
        #expect(fresh.alignment >= 1 && fresh.alignment <= PageSize.system.bytes)
        // Three disjoint allowed ranges; the automatic IOVA then lands inside one of them.
        let allowed = [range(0x100_0000, 16 * page), range(0x400_0000, 16 * page), range(0x800_0000, 16 * page)]
        try fd.allowIOVAs(allowed, in: ioas)
        let buffer = try DMABuffer(length: 4 * page)
        let iova = try fd.map(buffer, into: ioas)
        #expect(allowed.contains { $0.contains(range(iova.rawValue, 4 * page)) })
        _ = try fd.unmapAll(from: ioas)
        try fd.allowIOVAs([], in: ioas)
        // Overlapping allowed ranges are refused before the call.
        #expect(throws: IOMMUFDError.self) { try fd.allowIOVAs([allowed[0], range(0x100_0000 + UInt64(page), page)], in: ioas) }
    }

    @Test func rangesReportEMSGSIZEGrowth() throws {
        // A mock reserved region splits the space: more ranges than one, read back whole.
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        for i in 0..<12 {
            try fd.mockAddReserved(range(0x1000_0000 * UInt64(i + 1), page), in: ioas)
        }
        let ranges = try fd.iovaRanges(of: ioas).ranges
        #expect(ranges.count == 13)
        for (a, b) in zip(ranges, ranges.dropFirst()) { #expect(a.last < b.first) }
        // A fixed map into a reserved hole fails.
        let buffer = try DMABuffer(length: page)
        #expect(throws: IOMMUFDError.self) { try fd.map(buffer, into: ioas, at: IOVA(0x1000_0000)) }
    }

    @Test func copyBetweenAddressSpaces() throws {
        let fd = try IOMMUFDContext()
        let src = try fd.allocateIOAS()
        let dst = try fd.allocateIOAS()
        let buffer = try patterned(4 * page, seed: 3)
        _ = try fd.map(buffer, into: src, at: IOVA(0x30_0000))
        let copied = try fd.copy(range(0x30_0000, 4 * page), from: src, to: dst, at: IOVA(0x50_0000))
        #expect(copied == IOVA(0x50_0000))
        // Part of an area copies too (the kernel splits the pinned pages, despite the uAPI's
        // "must exactly match"); a source range with nothing mapped is ENOENT.
        #expect(try fd.copy(range(0x30_0000 + UInt64(page), page), from: src, to: dst) != IOVA(0))
        expectKernelError(.noSuchFileOrDirectory, .copy) {
            try fd.copy(range(0x90_0000, page), from: src, to: dst, at: IOVA(0x90_0000))
        }
        _ = try fd.unmapAll(from: dst)
        _ = try fd.copy(range(0x30_0000, 4 * page), from: src, to: dst, at: IOVA(0x50_0000))
        #expect(try fd.unmap(range(0x50_0000, 4 * page), from: dst) == UInt64(4 * page))
        #expect(try fd.unmap(range(0x30_0000, 4 * page), from: src) == UInt64(4 * page))
    }

    @Test func mapFromMemfd() throws {
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        let buffer = try DMABuffer(memfdLength: 4 * page)
        let maybeMemfd = buffer.memfd
        let memfd = try #require(maybeMemfd)
        let iova = try fd.mapFile(memfd, offset: UInt64(page), length: UInt64(2 * page), into: ioas, at: IOVA(0x40_0000))
        #expect(iova == IOVA(0x40_0000))
        try fd.changeProcess()
        #expect(try fd.unmapAll(from: ioas) == UInt64(2 * page))
        // Not a file descriptor at all.
        expectKernelError(.badFileDescriptor, .mapFile) {
            try fd.mapFile(9999, offset: 0, length: UInt64(page), into: ioas)
        }
    }

    @Test func options() throws {
        let fd = try IOMMUFDContext()
        #expect(try fd.rlimitMode() == .perUser)
        try fd.setRLimitMode(.perProcess)
        #expect(try fd.rlimitMode() == .perProcess)
        try fd.setRLimitMode(.perUser)
        let ioas = try fd.allocateIOAS()
        let huge = try fd.hugePages(in: ioas)
        #expect(huge)
        try fd.setHugePages(false, in: ioas)
        let hugeAfter = try fd.hugePages(in: ioas)
        #expect(!hugeAfter)
        expectKernelError(.noSuchFileOrDirectory, .hugePages) { try fd.hugePages(in: IOASID(4242)) }
    }

    @Test func vfioCompatibilityIOAS() throws {
        let fd = try IOMMUFDContext()
        #expect(try fd.vfioCompatibilityIOAS() == nil)
        let ioas = try fd.allocateIOAS()
        try fd.setVFIOCompatibilityIOAS(ioas)
        #expect(try fd.vfioCompatibilityIOAS() == ioas)
        try fd.setVFIOCompatibilityIOAS(nil)
        #expect(try fd.vfioCompatibilityIOAS() == nil)
    }

    @Test func noIOMMUPhysicalAddressIsRefusedForTranslatedIOAS() throws {
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        let buffer = try DMABuffer(length: page)
        _ = try fd.map(buffer, into: ioas, at: IOVA(0x60_0000))
        #expect(throws: IOMMUFDError.self) {
            try fd.noIOMMUPhysicalAddress(of: IOVA(0x60_0000), maximumLength: UInt64(page), in: ioas)
        }
    }

    @Test func adoptChecksTheDescriptor() throws {
        let owned = try IOMMUFDContext()
        let dup = dup(owned.descriptor)
        let adopted = try IOMMUFDContext(adopting: dup)
        _ = try adopted.allocateIOAS()
        let null = open("/dev/null", O_RDWR)
        defer { close(null) }
        do {
            _ = try IOMMUFDContext(adopting: null)
            Issue.record("/dev/null adopted as an iommufd")
        } catch {
            #expect(error.reason == .notAnIOMMUFD)
        }
        expectKernelError(.badFileDescriptor, .adopt) { try IOMMUFDContext(adopting: 4000) }
    }

    /// Closing an iommufd destroys its objects, and with them what they hold: an IOAS mapping
    /// with a domain attached keeps its pages pinned, and close releases the pins. The kernel's
    /// mock IOMMU reads the pin count of each page, asked through a second iommufd that stays open.
    @Test func closeDestroysObjects() throws {
        let observer = try IOMMUFDContext()
        let buffer = try patterned(4 * page, seed: 3)
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        _ = try fd.addMockDevice(to: PageTableID(ioas))
        _ = try fd.map(buffer, into: ioas, at: IOVA(1 << 24))
        // Both answers, so the check cannot pass by ignoring the pages.
        #expect(observer.mockCheckPins(buffer, equal: 1) == nil)
        #expect(observer.mockCheckPins(buffer, equal: 0) == .ioError)
        try fd.close()
        #expect(observer.mockCheckPins(buffer, equal: 0) == nil)
        #expect(observer.mockCheckPins(buffer, equal: 1) == .ioError)
    }
}

extension IOMMUFDContext {
    /// Asks the mock IOMMU whether every page of `buffer` is pinned `pins` times (long-term
    /// pins, as a domain takes them); nil when so, else the kernel's errno (`EIO`: a page differs).
    /// The library has no call for it, so this builds `IOMMU_TEST_OP_MD_CHECK_REFS` itself.
    func mockCheckPins(_ buffer: borrowing DMABuffer, equal pins: UInt32) -> Errno? {
        var cmd = cio_iommu_test_cmd()
        cmd.size = UInt32(MemoryLayout<cio_iommu_test_cmd>.size)
        cmd.op = CIO_IOMMU_TEST_OP_MD_CHECK_REFS
        cmd.check_refs.uptr = buffer.address.rawValue
        cmd.check_refs.length = UInt64(buffer.length)
        cmd.check_refs.refs = pins
        let r = withUnsafeMutableBytes(of: &cmd) { kernel.ioctl(descriptor, .testCommand, $0.baseAddress) }
        if case .failure(let e) = r { return e }
        return nil
    }
}
