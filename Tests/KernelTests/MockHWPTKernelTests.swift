import IOMMUCapabilities
import IOMMUFD
import Testing

/// Nesting, invalidation, dirty tracking and PASIDs on the kernel's mock IOMMU.
@Suite(.serialized, .enabled(if: KernelTier.enabled, "needs /dev/iommu"))
struct MockHWPTKernelTests {
    let base: UInt64 = 1 << 24

    @Test func nestedHWPTInvalidation() throws {
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        let mock = try fd.addMockDevice(to: PageTableID(ioas))
        let info = try fd.hardwareInfo(of: mock.device)
        let report = try HardwareInfoReport(info)
        print("mock hw_info: \(info.type), \(report)")
        #expect(info.type == .selftest)
        #expect(info.capabilities.contains(.dirtyTracking))

        let parent = try fd.allocateHWPT(for: mock.device, in: ioas, flags: .nestParent)
        let plain = try fd.allocateHWPT(for: mock.device, in: ioas)
        let nested = try fd.allocateNestedHWPT(for: mock.device, parent: parent, data: .selftest(SelftestHWPTData()))
        for i in 0..<4 { try fd.mockCheckIOTLB(nested, entry: i, equals: SelftestHWPTData.defaultIOTLB) }
        expectKernelError(.invalidArgument, .mockCheckIOTLB) { try fd.mockCheckIOTLB(nested, entry: 0, equals: 1) }

        // Second entry has unknown flags: the first is handled, then EOPNOTSUPP.
        let partial = try fd.invalidate(nested, .selftest([SelftestInvalidation(iotlbID: 0),
                                                           SelftestInvalidation(flags: 0xffff_ffff, iotlbID: 1)]))
        #expect(partial.handled == 1 && partial.requested == 2)
        #expect(partial.error?.errno == .notSupported)
        try fd.mockCheckIOTLB(nested, entry: 0, equals: 0)
        try fd.mockCheckIOTLB(nested, entry: 1, equals: SelftestHWPTData.defaultIOTLB)
        // Bad iotlb id second: EINVAL after one.
        let badID = try fd.invalidate(nested, .selftest([SelftestInvalidation(iotlbID: 1), SelftestInvalidation(iotlbID: 4)]))
        #expect(badID.handled == 1 && badID.error?.errno == .invalidArgument)
        #expect(try fd.invalidate(nested, .selftest([SelftestInvalidation(iotlbID: 2), SelftestInvalidation(iotlbID: 3)])).get() == 2)
        for i in 0..<4 { try fd.mockCheckIOTLB(nested, entry: i, equals: 0) }
        // Empty array checks the type only; a parent takes no invalidation.
        #expect(try fd.invalidate(nested, .selftest([])).get() == 0)
        let onParent = try fd.invalidate(parent, .selftest([.all]))
        #expect(onParent.handled == 0 && onParent.error?.errno == .invalidArgument)
        // Entry size one byte too big for the mock: EINVAL, nothing handled.
        let odd = try fd.invalidate(nested, .raw(type: .selftest, entryLength: 9, bytes: [UInt8](repeating: 0, count: 9)))
        #expect(odd.handled == 0 && odd.error?.errno == .invalidArgument)
        // Refused before the call.
        #expect(throws: IOMMUFDError.self) {
            try fd.invalidate(nested, .raw(type: .selftest, entryLength: 4097, bytes: [UInt8](repeating: 0, count: 4097)))
        }
        #expect(throws: IOMMUFDError.self) {
            try fd.invalidate(nested, .raw(type: .selftest, entryLength: 8, bytes: [UInt8](repeating: 0, count: 12)))
        }

        // Bad data: short, oversized with nonzero tail, oversized zero tail, wrong type, wrong parent.
        expectKernelError(.invalidArgument, .allocateNestedHWPT) {
            try fd.allocateNestedHWPT(for: mock.device, parent: parent, data: .raw(type: .selftest, bytes: [1, 2, 3]))
        }
        // Longer than the mock's struct: EINVAL whatever the extra bytes hold (not E2BIG).
        var long = [UInt8](repeating: 0, count: 16)
        expectKernelError(.invalidArgument, .allocateNestedHWPT) {
            try fd.allocateNestedHWPT(for: mock.device, parent: parent, data: .raw(type: .selftest, bytes: long))
        }
        long[15] = 1
        expectKernelError(.invalidArgument, .allocateNestedHWPT) {
            try fd.allocateNestedHWPT(for: mock.device, parent: parent, data: .raw(type: .selftest, bytes: long))
        }
        expectKernelError(.notSupported, .allocateNestedHWPT) {
            try fd.allocateNestedHWPT(for: mock.device, parent: parent, data: .armSMMUv3(SMMUv3StreamTableEntry(word0: 1, word1: 0)))
        }
        expectKernelError(.invalidArgument, .allocateNestedHWPT) {
            try fd.allocateNestedHWPT(for: mock.device, parent: plain, data: .selftest(SelftestHWPTData()))
        }
        expectKernelError(.noSuchFileOrDirectory, .allocateNestedHWPT) {
            try fd.allocateNestedHWPT(for: mock.device, parent: parent, data: .selftest(SelftestHWPTData()),
                                      faultQueue: FaultQueueID(0xffff_ffff))
        }

        // In use: EBUSY for the attached nested HWPT and for its parent.
        try fd.replaceMockDevicePageTable(mock, with: PageTableID(nested))
        expectKernelError(.resourceBusy, .destroy) { try fd.destroy(nested) }
        expectKernelError(.resourceBusy, .destroy) { try fd.destroy(parent) }
        try fd.replaceMockDevicePageTable(mock, with: PageTableID(ioas))
        try fd.destroy(nested)
        try fd.destroy(parent)
        try fd.destroy(plain)
        expectKernelError(.noSuchFileOrDirectory, .destroy) { try fd.destroy(parent) }
    }

    @Test func dirtyTracking() throws {
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        let mock = try fd.addMockDevice(to: PageTableID(ioas))
        // One IOPTE per page: with huge pages the mock maps the buffer with larger entries,
        // and a dirty bit then covers every page of the entry.
        try fd.setHugePages(false, in: ioas)
        let buffer = try patterned(16 * page, seed: 2)
        _ = try fd.map(buffer, into: ioas, at: IOVA(base))
        let hwpt = try fd.allocateHWPT(for: mock.device, in: ioas, flags: .dirtyTracking)
        let area = range(base, 16 * page)
        let size = PageSize.system
        // Not tracking yet: the mock refuses to mark.
        expectKernelError(.invalidArgument, .mockMarkDirty) { try fd.mockMarkDirty(hwpt, range: area, pageSize: size, pageIndices: [0]) }
        try fd.setDirtyTracking(true, for: hwpt)
        #expect(try fd.mockMarkDirty(hwpt, range: area, pageSize: size, pageIndices: [0, 3, 15]) == 3)
        let kept = try fd.dirtyBitmap(of: hwpt, range: area, pageSize: size, clear: false)
        #expect(kept.dirtyPageIndices == [0, 3, 15])
        #expect(kept.isDirty(IOVA(base + 3 * UInt64(page) + 1)))
        let read = try fd.dirtyBitmap(of: hwpt, range: area, pageSize: size)
        #expect(read.dirtyPageIndices == [0, 3, 15])
        #expect(try fd.dirtyBitmap(of: hwpt, range: area, pageSize: size).dirtyPageIndices.isEmpty)
        print("mock dirty pages (no clear, clear, after clear): \(kept.dirtyPageIndices) \(read.dirtyPageIndices) []")
        // Checked before the call: misaligned range, small buffer.
        #expect(throws: IOMMUFDError.self) { try fd.dirtyBitmap(of: hwpt, range: range(base + 2048, page), pageSize: size) }
        var small: UInt32 = 0
        #expect(throws: IOMMUFDError.self) {
            try withUnsafeMutableBytes(of: &small) { try fd.dirtyBitmap(of: hwpt, range: range(base, 64 * page), pageSize: size, into: $0) }
        }
        try fd.setDirtyTracking(false, for: hwpt)
        // A device that cannot track dirty pages.
        let noDirty = try fd.addMockDevice(to: PageTableID(ioas), flags: .noDirtyTracking)
        #expect(!(try fd.hardwareInfo(of: noDirty.device).capabilities.contains(.dirtyTracking)))
        do {
            _ = try fd.allocateHWPT(for: noDirty.device, in: ioas, flags: .dirtyTracking)
            Issue.record("dirty tracking HWPT for a device without it")
        } catch {
            #expect(error.isNotSupported, "\(error)")
        }
        // A HWPT allocated without dirty tracking cannot start it.
        let plain = try fd.allocateHWPT(for: mock.device, in: ioas)
        do {
            try fd.setDirtyTracking(true, for: plain)
            Issue.record("tracking started on a HWPT without it")
        } catch {
            print("setDirtyTracking on a plain mock HWPT: \(error)")
            #expect(error.errno != nil)
        }
    }

    @Test func pasidAttachReplaceDetach() throws {
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        let mock = try fd.addMockDevice(to: PageTableID(ioas), flags: .pasid)
        #expect(try fd.hardwareInfo(of: mock.device).maxPASIDLog2 == 20)
        let a = try fd.allocateHWPT(for: mock.device, in: ioas, flags: .pasid)
        let b = try fd.allocateHWPT(for: mock.device, in: ioas, flags: .pasid)
        try fd.mockCheckPASID(mock, pasid: 2048, attachedTo: nil)
        // The RID sits on the IOAS's auto HWPT, not PASID-compatible: PASID attach is refused.
        expectKernelError(.invalidArgument, .mockAttachPASID) { try fd.mockAttachPASID(mock, pasid: 2048, to: PageTableID(b)) }
        try fd.replaceMockDevicePageTable(mock, with: PageTableID(a))
        #expect(try fd.mockAttachPASID(mock, pasid: 2048, to: PageTableID(b)) == b)
        try fd.mockCheckPASID(mock, pasid: 2048, attachedTo: b)
        expectKernelError(.invalidArgument, .mockCheckPASID) { try fd.mockCheckPASID(mock, pasid: 2048, attachedTo: a) }
        #expect(try fd.mockAttachPASID(mock, pasid: 2048, to: PageTableID(a), replace: true) == a)
        try fd.mockCheckPASID(mock, pasid: 2048, attachedTo: a)
        try fd.mockDetachPASID(mock, pasid: 2048)
        try fd.mockCheckPASID(mock, pasid: 2048, attachedTo: nil)
        try fd.replaceMockDevicePageTable(mock, with: PageTableID(ioas))
        try fd.destroy(b)
        try fd.destroy(a)
    }
}
