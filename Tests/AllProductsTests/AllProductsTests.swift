// One file importing every library product, using public names unqualified: the names of the
// modules compose (no type shadows its module, no two products export the same name).
import IOMMUFD
import IOMMUFDModel
import IOMMUCapabilities
import IOMMUMirror
import IOPageTables
import NUMA
import Testing

@Suite struct AllProductsTests {
    /// Names from every product, side by side, without module qualification.
    @Test func namesComposeUnqualified() throws {
        let kind: PageTableFormatKind = .vtdSecondStage(levels: 4)
        let format: (any PageTableFormat)? = try kind.pageTableFormat()
        let vtd = try #require(format as? VTdSecondStage)
        #expect(vtd.levels == 4 && vtd.outputBits == 48)
        let caps: HostIOMMUCapabilities = .selftestMock
        #expect(caps.kind == .selftest)
        let model = IOMMUFDModel()
        let fd = try IOMMUFDContext(kernel: model)
        let shared = SharedIOMMUFDContext(fd)
        #expect(try shared.iommufd.allocateIOAS() == IOASID(1))
        let _: any KernelInterface = LinuxKernel()
        let _: IOVA = IOVA(0)
        let _: GuestPhysicalAddress = GuestPhysicalAddress(0)
        let _: NUMANode = NUMANode(0)
        let _: IOVAIntervalMap = IOVAIntervalMap()
        let _: any MirrorTarget = NullTarget(name: "null")
    }

    /// The bridge from a capability's format kind to its page-table description, every kind.
    @Test func everyFormatKindHasItsDescription() throws {
        #expect(try PageTableFormatKind.x86_64(levels: 5).pageTableFormat().map { $0 is X86FirstStage } == true)
        #expect(try PageTableFormatKind.amdV1(levels: 6).pageTableFormat().map { $0 is AMDv1 } == true)
        let arm = try #require(try PageTableFormatKind.armStage2(granule: .size64K).pageTableFormat() as? ArmVMSAv8)
        #expect(arm.stage == .stage2 && arm.granule == .size64K)
        let arm16 = try #require(try PageTableFormatKind.armStage1(granule: .size16K).pageTableFormat(outputBits: 44) as? ArmVMSAv8)
        #expect(arm16.stage == .stage1 && arm16.granule == .size16K && arm16.outputBits == 44)
        #expect(try PageTableFormatKind.selftestMock.pageTableFormat() == nil)
        #expect(throws: FormatConfigurationError.self) { try PageTableFormatKind.armStage1(granule: .size2M).pageTableFormat() }
        #expect(throws: FormatConfigurationError.self) { try PageTableFormatKind.vtdSecondStage(levels: 7).pageTableFormat() }
    }

    /// Every system call goes through the `KernelInterface` the caller gave: memory, memfds,
    /// eventfds, polls, and guest memory of the page-table module, all seen by the model.
    @Test func theModelSeesEverySystemCall() throws {
        let model = IOMMUFDModel()
        func calls() -> [String] { model.trace.compactMap { if case .other(let n) = $0.call { n } else { nil } } }
        do {
            let anonymous = try DMABuffer(length: 4096, kernel: model)
            anonymous.withUnsafeMutableBytes { $0[0] = 7 }
        }
        #expect(calls() == ["mmap", "munmap"])
        model.clearTrace()
        do { _ = try DMABuffer(memfdLength: 4096, kernel: model) }
        #expect(calls() == ["memfd_create", "ftruncate", "mmap", "munmap", "close"])
        model.clearTrace()
        do {
            let event = try EventFD(kernel: model)
            #expect(try event.wait(milliseconds: 0) == 0)
        }
        #expect(calls() == ["eventfd", "poll", "close"])
        model.clearTrace()
        do {
            let guest = try MemfdGuestMemory(name: "guest", length: 4096, kernel: model)
            try [UInt8](repeating: 1, count: 8).withUnsafeBytes { try guest.write($0, at: 0) }
        }
        #expect(calls() == ["memfd_create", "ftruncate", "mmap", "pwrite", "munmap", "close"])
        model.clearTrace()
        _ = PCIAddress("0000:00:05.0")!.numaNode(kernel: model)
        #expect(model.trace.contains { $0.call == .open("/sys/bus/pci/devices/0000:00:05.0/numa_node") })
    }
}
