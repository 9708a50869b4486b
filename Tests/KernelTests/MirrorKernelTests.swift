#if canImport(Glibc)
import Glibc
#endif
import IOMMUFD
import IOMMUMirror
import IOPageTables
import QEMUDevices
import Testing

extension EduKernelTests {
    /// The mirror engine on the real kernel: a guest's VT-d second-stage table mirrored into the
    /// edu device's IOAS (real DMA through the emulated VT-d), an IOAS with a mock-IOMMU device
    /// that copies its areas from the first (the kernel checks its page table) and an AMD v1
    /// host table (walked back).
    @Suite struct MirrorKernelTests {
        /// Guest RAM: 8 MiB of one memfd at guest-physical 0 (so IOAS maps go through
        /// `IOMMU_IOAS_MAP_FILE` where the kernel has it); the guest's tables from 7 MiB.
        static let ramBytes = 8 << 20
        static let tables: ClosedRange<UInt64> = 0x70_0000...0x7F_FFFF

        @Test func guestVTdTableMirroredIntoEduMockAndHostTable() throws {
            let address = try #require(EduDevice.all().first, "no edu device bound to vfio-pci")
            let shared = SharedIOMMUFDContext(try IOMMUFDContext())
            let hasMock = shared.iommufd.hasMockIOMMU
            #expect(hasMock, "the kernel has no mock IOMMU (CONFIG_IOMMUFD_TEST)")
            let behaviour = try KernelBehaviour.probe(shared.iommufd)
            print("kernel behaviour: \(behaviour)")

            // Guest RAM in a memfd, mapped read-write here.
            let guestMemory = try DMABuffer(memfdLength: Self.ramBytes, name: "mirror-guest-ram")
            let memfd = guestMemory.memfd!
            let base = guestMemory.address.unsafePointer!
            var ram = GuestRAM()
            try ram.add(MirrorMemoryRegion(guestPhysical: GuestPhysicalAddress(0), length: UInt64(Self.ramBytes), host: HostAddress(base),
                                           file: MirrorFileBacking(descriptor: memfd, offset: 0)))
            let writable = MutableGuestMemoryBuffer(base: GuestPhysicalAddress(0),
                                                    buffer: UnsafeMutableRawBufferPointer(start: base, count: Self.ramBytes))

            // The guest's table: four 4 KiB leaves at IOVA 32 MiB (guest-physical 64 KiB), one
            // 2 MiB leaf at IOVA 64 MiB (guest-physical 2 MiB): inside both the edu device's
            // 28-bit DMA mask and the mock IOMMU's aperture (from 16 MiB).
            let vtd = try VTdSecondStage(levels: 4)
            var guest = try PageTableBuilder(format: vtd, memory: writable, allocator: BumpTableAllocator(
                range: try GuestPhysicalRange(first: GuestPhysicalAddress(Self.tables.lowerBound), last: GuestPhysicalAddress(Self.tables.upperBound))))
            for k: UInt64 in 0..<4 {
                try guest.map(IOVA(0x200_0000 + k * 0x1000), to: GuestPhysicalAddress(0x1_0000 + k * 0x1000), size: .size4K, permissions: .readWrite)
            }
            try guest.map(IOVA(0x400_0000), to: GuestPhysicalAddress(0x20_0000), size: .size2M, permissions: .readWrite)

            // Targets: the edu device's IOAS, a mock device's IOAS, an AMD v1 host table.
            let edu = try EduDevice(address, boundTo: shared.iommufd)
            let eduIOAS = try shared.iommufd.allocateIOAS()
            _ = try edu.vfio.attach(to: eduIOAS)
            try edu.enableBusMaster()
            let mockIOAS = try shared.iommufd.allocateIOAS()
            let mock = try shared.iommufd.addMockDevice(to: PageTableID(mockIOAS))
            let hostTable = try PageTableTarget(name: "amdv1", format: try AMDv1(levels: 4))
            let targets: [any MirrorTarget] = [
                try IOASTarget(name: "edu", context: shared, ioas: eduIOAS, behaviour: behaviour),
                // Pinned once: the mock IOAS copies each area from the edu IOAS (IOMMU_IOAS_COPY).
                try IOASTarget(name: "mock", context: shared, ioas: mockIOAS, behaviour: behaviour, fanOut: .copy),
                hostTable,
            ]
            var engine = try MirrorEngine(
                mode: .pageTable(vtd, root: guest.root), memory: ram, targets: targets,
                configuration: .init(space: try IOVARange(first: IOVA(0), last: EduDevice.highestIOVA)))

            let sync = engine.apply(.resync)
            #expect(sync.changes[0].status == .applied, "\(sync.changes[0])")
            #expect(sync.changes[0].maps == 2, "four contiguous leaves coalesce into one area, the 2 MiB leaf is another")
            #expect(sync.targets.allSatisfy { $0.failure == nil }, "\(sync.targets)")
            #expect(engine.checkInvariants() == [])
            // The kernel's mock IOMMU agrees page by page.
            try shared.iommufd.mockCheckMap(mock.hwpt, range(0x200_0000, 4 * page), maps: HostAddress(base + 0x1_0000))
            try shared.iommufd.mockCheckMap(mock.hwpt, range(0x400_0000, 2 << 20), maps: HostAddress(base + 0x20_0000))
            // The host table walks back to the guest's translations.
            let walked = try PageTableWalker(format: try AMDv1(levels: 4), memory: hostTable.memory, root: hostTable.root).extents()
            let runs = TranslationRun.coalescing(walked).map { "\($0)" }
            #expect(runs == ["[0x2000000...0x2003fff] -> 0x10000 rw--", "[0x4000000...0x41fffff] -> 0x200000 rw--"])

            // Edu DMA through the mirror: memory to device, memory cleared, device to memory.
            let bytes = UnsafeMutableRawBufferPointer(start: base, count: Self.ramBytes)
            for (iova, gpa) in [(0x200_2000, 0x1_2000), (0x400_3000, 0x20_3000)] {
                for i in 0..<EduDevice.bufferSize { bytes[gpa + i] = UInt8(truncatingIfNeeded: i * 13 + gpa >> 12) }
                let sent = Array(bytes[gpa..<(gpa + EduDevice.bufferSize)])
                #expect(try edu.dma(.toDevice, iova: IOVA(UInt64(iova)), count: EduDevice.bufferSize))
                for i in 0..<EduDevice.bufferSize { bytes[gpa + i] = 0 }
                #expect(try edu.dma(.toMemory, iova: IOVA(UInt64(iova)), count: EduDevice.bufferSize))
                let back = Array(bytes[gpa..<(gpa + EduDevice.bufferSize)])
                #expect(back == sent, "bytes did not survive the DMA round trip through the mirror at IOVA 0x\(String(iova, radix: 16))")
                print("edu DMA through the mirror at IOVA 0x\(String(iova, radix: 16)): \(EduDevice.bufferSize) bytes, equal: \(back == sent)")
            }

            // The guest unmaps its first leaf: the coalesced area is split (unmapped, the other
            // three pages re-mapped at once), and DMA to the unmapped IOVA is refused.
            _ = try guest.unmap(range(0x200_0000, page))
            let cut = engine.apply(.invalidate(iova: IOVA(0x200_0000), length: UInt64(page)))
            #expect(cut.changes[0].unmaps == 1 && cut.changes[0].maps == 1 && cut.changes[0].transientUnmaps == 1)
            #expect(engine.checkInvariants() == [])
            try shared.iommufd.mockCheckMap(mock.hwpt, range(0x200_1000, 3 * page), maps: HostAddress(base + 0x1_1000))
            #expect(throws: IOMMUFDError.self) { try shared.iommufd.mockCheckMap(mock.hwpt, range(0x200_0000, page), maps: HostAddress(base + 0x1_0000)) }
            for i in 0..<EduDevice.bufferSize { bytes[0x1_0000 + i] = 0xEE }
            let log = KernelLog()
            #expect(try edu.dma(.toMemory, iova: IOVA(0x200_0000), count: EduDevice.bufferSize))
            let fault = log.waitFor(["DMAR", "fault addr 0x2000000"], seconds: 5)
            #expect(fault != nil, "no DMAR fault was logged for the IOVA the guest unmapped")
            print("refused DMA after the guest's unmap: \(fault?.split(separator: ";").last.map(String.init) ?? "no fault seen")")
            #expect(bytes[0x1_0000..<(0x1_0000 + EduDevice.bufferSize)].allSatisfy { $0 == 0xEE }, "memory changed behind an unmapped IOVA")
            // The remnant still works.
            #expect(try edu.dma(.toMemory, iova: IOVA(0x200_1000), count: EduDevice.bufferSize))

            let m = engine.metrics
            print("mirror metrics: changes \(m.changesIn), elided \(m.operationsElided), per target calls \(m.targets.map(\.calls)), transient unmaps \(m.targets.map(\.transientUnmaps))")
            try edu.vfio.detach()
        }
    }
}
