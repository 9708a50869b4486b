import IOMMUFD
import Testing

/// Flags and option values passed through as given: the named ones work, and a bit or value
/// newer than the library reaches the kernel, which answers for it.
@Suite(.serialized, .enabled(if: KernelTier.enabled, "needs /dev/iommu"))
struct TypedFlagsKernelTests {
    let base: UInt64 = 1 << 24

    @Test func dirtyTrackingFlags() throws {
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        let mock = try fd.addMockDevice(to: PageTableID(ioas))
        try fd.setHugePages(false, in: ioas)
        let buffer = try patterned(4 * page, seed: 8)
        _ = try fd.map(buffer, into: ioas, at: IOVA(base))
        let hwpt = try fd.allocateHWPT(for: mock.device, in: ioas, flags: .dirtyTracking)
        let area = range(base, 4 * page)
        // Unknown bits: EOPNOTSUPP, alone or with enable, and tracking stays off.
        expectKernelError(.notSupported, .setDirtyTracking) { try fd.setDirtyTracking(DirtyTrackingFlags(rawValue: 1 << 1), for: hwpt) }
        expectKernelError(.notSupported, .setDirtyTracking) { try fd.setDirtyTracking([.enable, DirtyTrackingFlags(rawValue: 1 << 31)], for: hwpt) }
        expectKernelError(.invalidArgument, .mockMarkDirty) { try fd.mockMarkDirty(hwpt, range: area, pageSize: .system, pageIndices: [1]) }
        try fd.setDirtyTracking(.enable, for: hwpt)
        #expect(try fd.mockMarkDirty(hwpt, range: area, pageSize: .system, pageIndices: [1]) == 1)
        #expect(try fd.dirtyBitmap(of: hwpt, range: area, pageSize: .system).dirtyPageIndices == [1])
        try fd.setDirtyTracking([], for: hwpt)
        expectKernelError(.invalidArgument, .mockMarkDirty) { try fd.mockMarkDirty(hwpt, range: area, pageSize: .system, pageIndices: [1]) }
        #expect("\(DirtyTrackingFlags.enable)" == "[enable]")
    }

    @Test func faultQueueFlags() throws {
        let fd = try IOMMUFDContext()
        // 7.3 knows no fault-queue flag: every bit is EOPNOTSUPP.
        for bit: UInt32 in [0, 1, 31] {
            expectKernelError(.notSupported, .allocateFaultQueue) { try fd.allocateFaultQueue(flags: FaultQueueFlags(rawValue: 1 << bit)) }
        }
        let queue = try fd.allocateFaultQueue(flags: [])
        let id = queue.id
        try queue.close()
        try fd.destroy(id)
    }

    @Test func hugePagesOptionValues() throws {
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        #expect(try fd.hugePagesOption(in: ioas) == .enabled)
        try fd.setHugePagesOption(.disabled, in: ioas)
        #expect(try fd.hugePagesOption(in: ioas) == .disabled)
        #expect(try !fd.hugePages(in: ioas))
        // A value the kernel does not know: EINVAL, and the option is unchanged.
        expectKernelError(.invalidArgument, .setHugePages) { try fd.setHugePagesOption(HugePagesOption(rawValue: 2), in: ioas) }
        #expect(try fd.hugePagesOption(in: ioas) == .disabled)
        try fd.setHugePagesOption(.enabled, in: ioas)
        #expect(try fd.hugePagesOption(in: ioas) == .enabled)
        // Disabling once a domain holds mappings: EINVAL.
        let mock = try fd.addMockDevice(to: PageTableID(ioas))
        let buffer = try patterned(page, seed: 1)
        _ = try fd.map(buffer, into: ioas, at: IOVA(base))
        expectKernelError(.invalidArgument, .setHugePages) { try fd.setHugePagesOption(.disabled, in: ioas) }
        expectKernelError(.noSuchFileOrDirectory, .hugePages) { try fd.hugePagesOption(in: IOASID(0xdead)) }
        try fd.destroy(mock.id)
    }
}
