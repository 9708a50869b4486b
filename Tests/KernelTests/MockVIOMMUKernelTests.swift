import IOMMUFD
import Testing

/// vIOMMU, vDEVICE, vEVENTQ, fault queue and HW queue on the kernel's mock IOMMU.
@Suite(.serialized, .enabled(if: KernelTier.enabled, "needs /dev/iommu"))
struct MockVIOMMUKernelTests {
    let base: UInt64 = 1 << 24

    @Test func viommuVDeviceAndEvents() throws {
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        let mock = try fd.addMockDevice(to: PageTableID(ioas))
        let parent = try fd.allocateHWPT(for: mock.device, in: ioas, flags: .nestParent)
        let plain = try fd.allocateHWPT(for: mock.device, in: ioas)
        expectKernelError(.notSupported, .allocateVIOMMU) { try fd.allocateVIOMMU(type: .armSMMUv3, device: mock.device, hwpt: parent) }
        expectKernelError(.invalidArgument, .allocateVIOMMU) { try fd.allocateVIOMMU(type: .selftest, device: mock.device, hwpt: plain) }
        // With data: the mock echoes the input and offers a two-page mmap.
        var data = VIOMMUData.selftest(input: 0xcafe_f00d, output: 0, mmapOffset: 0, mmapLength: 0)
        let echo = try fd.allocateVIOMMU(type: .selftest, device: mock.device, hwpt: parent, data: &data)
        guard case .selftest(_, let output, _, let length) = data else { Issue.record("\(data)"); return }
        #expect(output == 0xcafe_f00d)
        #expect(length == UInt64(2 * page))
        try fd.destroy(echo)

        let viommu = try fd.allocateVIOMMU(type: .selftest, device: mock.device, hwpt: parent)
        expectKernelError(.resourceBusy, .destroy) { try fd.destroy(parent) }
        let nested = try fd.allocateNestedHWPT(for: mock.device, parent: viommu, data: .selftest(SelftestHWPTData()))
        // A nested HWPT of a vIOMMU needs the device's vDEVICE first.
        expectKernelError(.noSuchFileOrDirectory, .replaceMockDevicePageTable) { try fd.replaceMockDevicePageTable(mock, with: PageTableID(nested)) }
        expectKernelError(.noSuchFileOrDirectory, .mockTriggerVEvent) { try fd.mockTriggerVEvent(device: mock.device) }
        #expect(throws: IOMMUFDError.self) { _ = try fd.allocateEventQueue(viommu: viommu, type: .selftest, depth: 0) }
        let queue = try fd.allocateEventQueue(viommu: viommu, type: .selftest, depth: 2)
        expectKernelError(.fileExists, .allocateEventQueue) { try fd.allocateEventQueue(viommu: viommu, type: .selftest, depth: 2) }
        #expect(try queue.readEvents().isEmpty)

        let vdev = try fd.allocateVDevice(viommu: viommu, device: mock.device, virtualID: 0x99)
        expectKernelError(.fileExists, .allocateVDevice) { try fd.allocateVDevice(viommu: viommu, device: mock.device, virtualID: 0x99) }
        try fd.replaceMockDevicePageTable(mock, with: PageTableID(nested))
        try fd.mockTriggerVEvent(device: mock.device)
        #expect(try queue.wait(milliseconds: 1000))
        let one = try queue.readEvents()
        #expect(one.count == 1)
        #expect(one.first?.payload == .selftest(virtualID: 0x99))
        // Three events into a queue of depth 2: two events, then a lost-events record.
        for _ in 0..<3 { try fd.mockTriggerVEvent(device: mock.device) }
        let three = try queue.readEvents()
        print("vEVENTQ after 1 then 3 events (depth 2): \(one) \(three)")
        #expect(three.count == 3)
        #expect(three.filter { $0.payload == .selftest(virtualID: 0x99) }.count == 2)
        #expect(three.contains { $0.isLostEvents && $0.payload == .lostEvents })
        if let first = one.first, let next = three.first { #expect(next.sequence == first.sequence &+ 1) }

        // Device cache invalidation through the vIOMMU.
        try fd.mockCheckDeviceCache(mock.device, entry: 0, equals: 0xbaddad)
        #expect(try fd.invalidate(viommu, .selftestDeviceCache([SelftestDeviceCacheInvalidation(virtualDeviceID: 0x99, cacheID: 0)])).get() == 1)
        try fd.mockCheckDeviceCache(mock.device, entry: 0, equals: 0)
        try fd.mockCheckDeviceCache(mock.device, entry: 1, equals: 0xbaddad)
        let bad = try fd.invalidate(viommu, .selftestDeviceCache([SelftestDeviceCacheInvalidation(virtualDeviceID: 0x99, cacheID: 1),
                                                                   SelftestDeviceCacheInvalidation(virtualDeviceID: 0x77, cacheID: 2)]))
        #expect(bad.handled == 1 && bad.error?.errno == .invalidArgument)

        try fd.replaceMockDevicePageTable(mock, with: PageTableID(ioas))
        try fd.destroy(vdev)
        let queueID = queue.id
        // The open descriptor holds the queue: EBUSY until it is closed.
        expectKernelError(.resourceBusy, .destroy) { try fd.destroy(queueID) }
        try queue.close()
        try fd.destroy(queueID)
        try fd.destroy(nested)
        try fd.destroy(viommu)
        try fd.destroy(parent)
    }

    @Test func faultQueue() throws {
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        let mock = try fd.addMockDevice(to: PageTableID(ioas))
        let parent = try fd.allocateHWPT(for: mock.device, in: ioas, flags: .nestParent)
        let faults = try fd.allocateFaultQueue()
        let iopf = try fd.allocateNestedHWPT(for: mock.device, parent: parent, data: .selftest(SelftestHWPTData()),
                                             faultQueue: faults.id)
        try fd.replaceMockDevicePageTable(mock, with: PageTableID(iopf))
        expectKernelError(.resourceBusy, .destroy) { try fd.destroy(iopf) }
        #expect(try faults.readFaults().isEmpty)
        try fd.mockTriggerPageFault(device: mock.device, pasid: 1, groupID: 2, permissions: [.read, .write], address: 0xdead_b000)
        #expect(try faults.wait(milliseconds: 1000))
        let read = try faults.readFaults()
        print("fault queue: \(read)")
        let fault = try #require(read.first)
        #expect(read.count == 1)
        #expect(fault.device == mock.device)
        #expect(fault.flags == [.pasidValid, .lastPage])
        #expect(fault.pasid == 1 && fault.groupID == 2)
        #expect(fault.permissions == [.read, .write])
        #expect(fault.address == 0xdead_b000)
        try faults.respond(cookie: fault.cookie, code: .success)
        // The group is answered: its cookie is gone.
        expectKernelError(.invalidArgument, .respondToFaults) { try faults.respond(cookie: fault.cookie, code: .success) }
        try fd.replaceMockDevicePageTable(mock, with: PageTableID(ioas))
        try fd.destroy(iopf)
        let faultID = faults.id
        try faults.close()
        try fd.destroy(faultID)
        try fd.destroy(parent)
    }

    @Test func hardwareQueue() throws {
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        let mock = try fd.addMockDevice(to: PageTableID(ioas))
        let parent = try fd.allocateHWPT(for: mock.device, in: ioas, flags: .nestParent)
        let viommu = try fd.allocateVIOMMU(type: .selftest, device: mock.device, hwpt: parent)
        let at = IOVA(base)
        expectKernelError(.notSupported, .allocateHWQueue) {
            try fd.allocateHWQueue(viommu: viommu, type: .default, index: 0, at: at, length: UInt64(page))
        }
        #expect(throws: IOMMUFDError.self) { try fd.allocateHWQueue(viommu: viommu, type: .selftest, index: 0, at: at, length: 0) }
        expectKernelError(.noSuchFileOrDirectory, .allocateHWQueue) {
            try fd.allocateHWQueue(viommu: viommu, type: .selftest, index: 0, at: at, length: UInt64(page))
        }
        let buffer = try patterned(page, seed: 4)
        _ = try fd.map(buffer, into: ioas, at: at)
        expectKernelError(.ioError, .allocateHWQueue) {
            try fd.allocateHWQueue(viommu: viommu, type: .selftest, index: 1, at: at, length: UInt64(page))
        }
        let queue = try fd.allocateHWQueue(viommu: viommu, type: .selftest, index: 0, at: at, length: UInt64(page))
        expectKernelError(.fileExists, .allocateHWQueue) {
            try fd.allocateHWQueue(viommu: viommu, type: .selftest, index: 0, at: at, length: UInt64(page))
        }
        // The queue's memory stays pinned.
        expectKernelError(.resourceBusy, .unmap) { try fd.unmap(range(base, page), from: ioas) }
        try fd.destroy(queue)
        #expect(try fd.unmap(range(base, page), from: ioas) == UInt64(page))
        try fd.destroy(viommu)
    }
}
