#if canImport(Glibc)
import Glibc
#endif
import IOMMUFD
import IOMMUMirror
import IOPageTables
import NUMA
import QEMUDevices
import Testing

extension EduKernelTests {
    /// The mirror engine in worker mode on the real kernel: one IOAS per edu device, each on its
    /// own iommufd (so its own worker), the target's node read from the device's sysfs
    /// `numa_node`. The worker of the device on node 1 runs on node 1's CPU with its journal and
    /// shadow on node 1 (`getcpu` and `move_pages`, read inside the worker); the device with no
    /// node gets an unpinned worker; DMA through both mirrors round-trips.
    @Suite struct MirrorNUMAKernelTests {
        static let ramBytes = 4 << 20

        @Test func workerOfTheNodeOneDeviceRunsAndAllocatesOnNodeOne() throws {
            let addresses = EduDevice.all()
            try #require(addresses.count == 2, "the VM has two edu devices on vfio-pci, found \(addresses)")
            #expect(NUMANode.all == [NUMANode(0), NUMANode(1)])
            let nodes = addresses.map { $0.numaNode().map { NUMANode(Int32($0)) } }
            print("edu devices and their nodes: \(zip(addresses, nodes).map { "\($0): \($1.map(String.init(describing:)) ?? "none")" })")
            let onOne = try #require(nodes.firstIndex(of: NUMANode(1)), "no edu device on node 1")

            // Guest RAM: one memfd region at guest-physical 0.
            let guestMemory = try DMABuffer(memfdLength: Self.ramBytes, name: "mirror-numa-ram")
            let memfd = guestMemory.memfd!
            let base = guestMemory.address.unsafePointer!
            var ram = GuestRAM()
            try ram.add(MirrorMemoryRegion(guestPhysical: GuestPhysicalAddress(0), length: UInt64(Self.ramBytes), host: HostAddress(base),
                                           file: MirrorFileBacking(descriptor: memfd, offset: 0)))

            // One iommufd, IOAS and target per device.
            let contexts = [SharedIOMMUFDContext(try IOMMUFDContext()), SharedIOMMUFDContext(try IOMMUFDContext())]
            let edu0 = try EduDevice(addresses[0], boundTo: contexts[0].iommufd)
            let edu1 = try EduDevice(addresses[1], boundTo: contexts[1].iommufd)
            var targets: [any MirrorTarget] = []
            for k in 0..<2 {
                let behaviour = try KernelBehaviour.probe(contexts[k].iommufd)
                let ioas = try contexts[k].iommufd.allocateIOAS()
                if k == 0 { _ = try edu0.vfio.attach(to: ioas); try edu0.enableBusMaster() } else {
                    _ = try edu1.vfio.attach(to: ioas); try edu1.enableBusMaster()
                }
                targets.append(try IOASTarget(name: "edu-\(addresses[k])", context: contexts[k], ioas: ioas, behaviour: behaviour, node: nodes[k]))
            }
            var engine = try MirrorEngine(
                mode: .requests, memory: ram, targets: targets,
                configuration: .init(space: try IOVARange(first: IOVA(0), last: EduDevice.highestIOVA), shadowCapacity: 1024, execution: .workers))

            // virtio-iommu style: two maps, applied by both workers.
            var batch = MirrorBatch(capacity: 2)
            batch.append(.map(iova: IOVA(0x10_0000), length: UInt64(16 * page), guestPhysical: GuestPhysicalAddress(0x1_0000), permissions: .readWrite))
            batch.append(.map(iova: IOVA(0x80_0000), length: UInt64(64 * page), guestPhysical: GuestPhysicalAddress(0x20_0000), permissions: .readWrite))
            var result = MirrorBatchResult(capacity: 2)
            engine.apply(batch, into: &result)
            #expect(result.changes.map(\.status) == [.applied, .applied], "\(result.changes)")
            #expect(result.targets.allSatisfy { $0.failure == nil }, "\(result.targets)")
            #expect(engine.checkInvariants() == [])

            let facts = engine.workerFacts
            #expect(facts.map(\.targets) == [[0], [1]], "one worker per iommufd")
            for f in facts {
                print("worker of \(f.targets.map { targets[$0].name }): asked \(f.node.map(String.init(describing:)) ?? "no node"), pinned \(f.pinned), ran on CPU \(f.lastCPU) (\(f.lastNode)), journal on \(f.journalNode.map(String.init(describing:)) ?? "?"), shadows on \(f.shadowNodes.map { $0.map(String.init(describing:)) ?? "?" }), \(f.phases) phases")
            }
            let one = facts[onOne]
            #expect(one.node == NUMANode(1) && one.pinned && one.pinError == nil)
            #expect(one.lastCPU == 1 && one.lastNode == NUMANode(1), "the node-1 device's worker ran on CPU \(one.lastCPU)")
            #expect(one.journalNode == NUMANode(1) && one.shadowNodes == [NUMANode(1)], "its buffers are on node 1")
            #expect(one.phases == 2)
            for (k, f) in facts.enumerated() where k != onOne {
                if let node = nodes[k] {
                    #expect(f.pinned && f.lastNode == node && f.journalNode == node)
                } else {
                    #expect(f.node == nil && !f.pinned, "a device with no node gets an unpinned worker")
                }
            }

            // Edu DMA through each mirror: memory to device, memory cleared, device to memory.
            let bytes = UnsafeMutableRawBufferPointer(start: base, count: Self.ramBytes)
            try Self.roundTrips(edu0, bytes, name: targets[0].name, salt: 0)
            try Self.roundTrips(edu1, bytes, name: targets[1].name, salt: 1)
            try edu0.vfio.detach()
            try edu1.vfio.detach()
        }

        /// Edu DMA through a mirror: memory to device, memory cleared, device to memory, bytes compared.
        static func roundTrips(_ edu: borrowing EduDevice, _ bytes: UnsafeMutableRawBufferPointer, name: String, salt: Int) throws {
            for (iova, gpa) in [(0x10_3000, 0x1_3000), (0x80_5000, 0x20_5000)] {
                for i in 0..<EduDevice.bufferSize { bytes[gpa + i] = UInt8(truncatingIfNeeded: i * 7 + salt + gpa >> 12) }
                let sent = Array(bytes[gpa..<(gpa + EduDevice.bufferSize)])
                #expect(try edu.dma(.toDevice, iova: IOVA(UInt64(iova)), count: EduDevice.bufferSize))
                for i in 0..<EduDevice.bufferSize { bytes[gpa + i] = 0 }
                #expect(try edu.dma(.toMemory, iova: IOVA(UInt64(iova)), count: EduDevice.bufferSize))
                let back = Array(bytes[gpa..<(gpa + EduDevice.bufferSize)])
                #expect(back == sent, "DMA round trip through \(name) at IOVA 0x\(String(iova, radix: 16))")
                print("edu DMA through \(name) at IOVA 0x\(String(iova, radix: 16)): equal: \(back == sent)")
            }
        }
    }
}
