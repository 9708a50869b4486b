import CIOMMUFD
import IOMMUFD
import IOMMUFDModel
import Synchronization
import Testing

/// A kernel that answers every ioctl with 0 and keeps a copy of what it was given: the bytes
/// of the argument (its leading `size`/`argsz` says how many), or the integer argument.
final class RecordingKernel: KernelInterface, Sendable {
    struct Call: Sendable {
        var request: IoctlRequest
        var bytes: [UInt8]
        var integer: UInt
        func u32(_ offset: Int) -> UInt32 { bytes[offset..<offset + 4].reversed().reduce(0) { $0 << 8 | UInt32($1) } }
        func u64(_ offset: Int) -> UInt64 { bytes[offset..<offset + 8].reversed().reduce(0) { $0 << 8 | UInt64($1) } }
    }
    private let recorded = Mutex<[Call]>([])
    var calls: [Call] { recorded.withLock { $0 } }
    /// Requests whose argument is an integer, not a pointer.
    static let integerRequests: Set<IoctlRequest> = [.vfioCheckExtension, .vfioSetIOMMU, .vfioGetAPIVersion]

    func open(_ path: String, flags: CInt) -> Result<CInt, Errno> { .success(1000) }
    func close(_ fd: CInt) -> Result<Void, Errno> { .success(()) }
    func ioctl(_ fd: CInt, _ request: IoctlRequest, _ argument: UnsafeMutableRawPointer?) -> Result<CInt, Errno> {
        var call = Call(request: request, bytes: [], integer: UInt(bitPattern: argument))
        if !Self.integerRequests.contains(request), let argument {
            let size = Int(argument.loadUnaligned(as: UInt32.self))
            call.bytes = Array(UnsafeRawBufferPointer(start: argument, count: size))
        }
        recorded.withLock { $0.append(call) }
        return .success(0)
    }
    func pread(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) -> Result<Int, Errno> { .failure(.notSupported) }
    func pwrite(_ fd: CInt, from buffer: UnsafeRawBufferPointer, at offset: Int64) -> Result<Int, Errno> { .failure(.notSupported) }
    func read(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer) -> Result<Int, Errno> { .failure(.notSupported) }
    func write(_ fd: CInt, from buffer: UnsafeRawBufferPointer) -> Result<Int, Errno> { .failure(.notSupported) }
    func lseek(_ fd: CInt, offset: Int64, whence: CInt) -> Result<Int64, Errno> { .failure(.notSupported) }
    func mmap(length: Int, protection: CInt, flags: CInt, fd: CInt, offset: Int64) -> Result<UnsafeMutableRawPointer, Errno> { .failure(.notSupported) }
    func munmap(_ address: UnsafeMutableRawPointer, length: Int) -> Result<Void, Errno> { .success(()) }
    func memfdCreate(_ name: String, flags: UInt32) -> Result<CInt, Errno> { .failure(.notSupported) }
    func ftruncate(_ fd: CInt, length: Int64) -> Result<Void, Errno> { .failure(.notSupported) }
    func eventfd(initialValue: UInt32, flags: CInt) -> Result<CInt, Errno> { .failure(.notSupported) }
    func poll(_ fd: CInt, events: Int16, timeoutMilliseconds: CInt) -> Result<Int16, Errno> { .failure(.notSupported) }
    func readlink(_ path: String) -> Result<String, Errno> { .failure(.notSupported) }
    func listDirectory(_ path: String) -> Result<[String], Errno> { .failure(.notSupported) }
}

/// The typed calls added for 7.3: flags and values the library does not name reach the kernel
/// bit for bit, and the few checks made before the call refuse only what the kernel refuses.
@Suite struct TypedCallArgumentTests {
    /// Offset of the union in `struct iommu_test_cmd`.
    let union = 16

    @Test func unknownFlagsAndValuesReachTheKernel() throws {
        let kernel = RecordingKernel()
        let fd = try IOMMUFDContext(kernel: kernel)
        try fd.setDirtyTracking(DirtyTrackingFlags(rawValue: 0x8000_0003), for: HWPTID(7))
        let queue = try fd.allocateFaultQueue(flags: FaultQueueFlags(rawValue: 0x10))
        try queue.close()
        try fd.setHugePagesOption(HugePagesOption(rawValue: 7), in: IOASID(3))
        let access = try fd.createMockAccess(to: IOASID(4), flags: [.needsPinPages, MockAccessFlags(rawValue: 0x100)])
        try fd.vfioMapDMA(host(fakeHost, page), at: IOVA(0x10_0000), flags: [.read, .vaddr, VFIODMAMapFlags(rawValue: 0x80)])
        _ = try fd.vfioCheckExtension(VFIOContainerExtension(rawValue: 4242))
        try fd.setVFIOIOMMU(VFIOContainerExtension(rawValue: 77))
        try fd.mockSetTemporaryMemoryLimit(3)

        let calls = kernel.calls
        try #require(calls.count == 8)
        #expect(calls[0].request == .hwptSetDirtyTracking && calls[0].u32(4) == 0x8000_0003 && calls[0].u32(8) == 7)
        #expect(calls[1].request == .faultQueueAlloc && calls[1].u32(4) == 0x10)
        #expect(calls[2].request == .option && calls[2].u32(4) == CIO_IOMMU_OPTION_HUGE_PAGES && calls[2].u64(16) == 7)
        #expect(calls[2].bytes[8] == UInt8(CIO_IOMMU_OPTION_OP_SET) && calls[2].u32(12) == 3)
        #expect(calls[3].request == .testCommand && calls[3].u32(4) == CIO_IOMMU_TEST_OP_CREATE_ACCESS)
        #expect(calls[3].u32(8) == 4 && calls[3].u32(union + 4) == 0x101)
        #expect(calls[4].request == .vfioIOMMUMapDMA && calls[4].u32(4) == 0x85)
        #expect(calls[4].u64(8) == fakeHost && calls[4].u64(16) == 0x10_0000 && calls[4].u64(24) == page)
        #expect(calls[5].request == .vfioCheckExtension && calls[5].integer == 4242)
        #expect(calls[6].request == .vfioSetIOMMU && calls[6].integer == 77)
        // Below the kernel's 12 bytes: not refused here, the kernel answers (EINVAL).
        #expect(calls[7].request == .testCommand && calls[7].u32(union) == 3)
        try access.close()
    }

    @Test func accessReadsNeverWriteAndWritesAlwaysDo() throws {
        let kernel = RecordingKernel()
        let fd = try IOMMUFDContext(kernel: kernel)
        let access = try fd.createMockAccess(to: IOASID(1))
        var buffer = [UInt8](repeating: 0, count: 8)
        // A caller's write bit in a read's options is dropped: a read never writes guest memory.
        try buffer.withUnsafeMutableBytes {
            try fd.read(at: IOVA(0x2000), into: $0, through: access, options: MockAccessRWOptions(rawValue: CIO_MOCK_ACCESS_RW_WRITE | 0x40))
        }
        try fd.write([1, 2, 3], at: IOVA(0x3000), through: access, options: .slowPath)
        let calls = kernel.calls.dropFirst()
        #expect(calls.map(\.request) == [.testCommand, .testCommand])
        let read = calls[calls.startIndex], write = calls[calls.startIndex + 1]
        #expect(read.u32(4) == CIO_IOMMU_TEST_OP_ACCESS_RW && read.u32(8) == UInt32(bitPattern: access.descriptor))
        #expect(read.u64(union) == 0x2000 && read.u64(union + 8) == 8 && read.u32(union + 24) == 0x40)
        #expect(write.u64(union) == 0x3000 && write.u64(union + 8) == 3)
        #expect(write.u32(union + 24) == CIO_MOCK_ACCESS_RW_WRITE | CIO_MOCK_ACCESS_RW_SLOW_PATH)
        try access.close()
    }

    @Test func featureAndHotResetCommandsAreBuiltAsTheKernelReadsThem() throws {
        let kernel = RecordingKernel()
        let device = try VFIODevice(path: "/dev/vfio/devices/vfio0", kernel: kernel)
        try device.probeFeature(VFIODeviceFeature(rawValue: 0x1234), for: .get)
        var payload: (UInt32, UInt32) = (0xaaaa_aaaa, 0xbbbb_bbbb)
        try withUnsafeMutableBytes(of: &payload) { _ = try device.setFeature(.lowPowerEntryWithWakeup, payload: $0) }
        try device.pciHotReset()
        try device.pciHotReset(groupDescriptors: [5, 6])
        let calls = kernel.calls
        try #require(calls.count == 4)
        #expect(calls[0].request == .vfioDeviceFeature && calls[0].bytes.count == 8)
        #expect(calls[0].u32(4) == 0x1234 | CIO_VFIO_DEVICE_FEATURE_GET | CIO_VFIO_DEVICE_FEATURE_PROBE)
        #expect(calls[1].bytes.count == 16 && calls[1].u32(4) == CIO_VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP | CIO_VFIO_DEVICE_FEATURE_SET)
        #expect(calls[1].u32(8) == 0xaaaa_aaaa && calls[1].u32(12) == 0xbbbb_bbbb)
        // The cdev convention: a zero-length descriptor array.
        #expect(calls[2].request == .vfioDevicePCIHotReset && calls[2].bytes.count == 12 && calls[2].u32(4) == 0 && calls[2].u32(8) == 0)
        #expect(calls[3].bytes.count == 20 && calls[3].u32(8) == 2 && calls[3].u32(12) == 5 && calls[3].u32(16) == 6)
    }

    /// Runs `body` on a model and requires a refusal before any ioctl, with `operation` and the
    /// errno the kernel would give.
    func refusedBeforeTheCall(
        _ operation: IOMMUFDError.Operation, _ errno: Errno, sourceLocation: SourceLocation = #_sourceLocation,
        _ body: (borrowing IOMMUFDContext) throws -> Void
    ) throws {
        let model = newModel()
        let fd = try IOMMUFDContext(kernel: model)
        model.resetCounters()
        let error = expectError(sourceLocation: sourceLocation) { try body(fd) }
        #expect(error?.operation == operation, sourceLocation: sourceLocation)
        #expect(error?.errno == errno, sourceLocation: sourceLocation)
        #expect(error?.isRefusedBeforeCall == true, sourceLocation: sourceLocation)
        #expect(model.totalIoctlCount == 0, sourceLocation: sourceLocation)
    }

    @Test func checksBeforeTheCallRefuseOnlyWhatTheKernelRefuses() throws {
        // MD_CHECK_REFS: the kernel answers EINVAL for ranges not aligned to PAGE_SIZE.
        try refusedBeforeTheCall(.mockCheckRefs, .invalidArgument) { try $0.mockCheckPins(host(fakeHost + 8, page), equal: 0) }
        try refusedBeforeTheCall(.mockCheckRefs, .invalidArgument) { try $0.mockCheckPins(host(fakeHost, page + 8), equal: 0) }
        try refusedBeforeTheCall(.mockCheckRefs, .overflow) { try $0.mockCheckPins(.all, equal: 0) }
        // VFIO_IOMMU_MAP_DMA cannot say the whole space.
        try refusedBeforeTheCall(.vfioMapDMA, .overflow) { try $0.vfioMapDMA(.all, at: IOVA(0)) }
        // An unrepresentable mmap offset.
        try refusedBeforeTheCall(.mapIOMMUFDRegion, .invalidArgument) { _ = try $0.mapRegion(offset: UInt64.max, length: page) }

        // Access calls: no bytes (the kernel's EINVAL), a negative count, the whole space.
        let kernel = RecordingKernel()
        let fd = try IOMMUFDContext(kernel: kernel)
        let access = try fd.createMockAccess(to: IOASID(1), flags: .needsPinPages)
        let before = kernel.calls.count
        let empty = expectError { try fd.read(0, at: IOVA(0x1000), through: access) }
        #expect(empty?.reason == .invalidRange(.empty) && empty?.operation == .mockAccessRead)
        #expect(expectError { try fd.read(-1, at: IOVA(0x1000), through: access) }?.operation == .mockAccessRead)
        #expect(expectError { try fd.write([], at: IOVA(0x1000), through: access) }?.operation == .mockAccessWrite)
        #expect(expectError { try fd.pinPages(.all, through: access) }?.operation == .mockAccessPinPages)
        #expect(kernel.calls.count == before)
        // What the kernel accepts goes through: a misaligned, one-byte pin is the kernel's to judge.
        _ = try fd.pinPages(iovas(0x1001, 1), through: access)
        #expect(kernel.calls.count == before + 1)
        try access.close()
    }

    @Test func typedValuesDescribeThemselves() {
        #expect("\(HugePagesOption.enabled)" == "enabled" && "\(HugePagesOption(rawValue: 2))" == "HugePagesOption(2)")
        #expect("\(VFIOContainerExtension.type1v2)" == "type1v2")
        #expect("\(VFIODeviceFeature.lowPowerEntry)" == "lowPowerEntry" && "\(VFIODeviceFeature(rawValue: 99))" == "VFIODeviceFeature(99)")
        #expect("\(VFIODMAMapFlags([.read, .write]))" == "[read, write]")
        #expect("\(MockAccessFlags(rawValue: 0x3))" == "[needsPinPages, 0x2]")
        #expect(MockDeviceID(5).description == "MockDeviceID(5)")
    }
}
