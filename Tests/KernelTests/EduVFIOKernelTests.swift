#if canImport(Glibc)
import Glibc
#endif
import IOMMUFD
import QEMUDevices
import Testing


extension EduKernelTests {
    /// The edu device through VFIO alone: its BAR mapped, config space, interrupts routed to an
    /// eventfd, reset, and handing the second edu between drivers.
    @Suite struct EduVFIOKernelTests {
        @Test func bar0MappingAndConfigSpace() throws {
            let address = try #require(EduDevice.all().first, "no edu device bound to vfio-pci")
            let fd = try IOMMUFDContext()
            let edu = try EduDevice(address, boundTo: fd)
            #expect(edu.bar0.flags.contains(.mappable))
            // The mapping holds the device file open (and bound) until it is unmapped: end it first.
            let id: UInt32
            do {
            let bar = try RegionMapping(edu.bar0, of: edu.vfio)
            #expect(bar.load(UInt32.self, at: 0) == 0x0100_00ed)
            // The liveness register answers the inverse of what was written.
            bar.store(UInt32(0x1234_5678), at: 4)
            #expect(bar.load(UInt32.self, at: 4) == ~UInt32(0x1234_5678))
            id = bar.load(UInt32.self, at: 0)
            }
            #expect(try edu.vfio.read(UInt16.self, region: edu.config, offset: 0) == EduDevice.vendor)
            #expect(try edu.vfio.read(UInt16.self, region: edu.config, offset: 2) == EduDevice.deviceID)
            // Past the end of the config region: refused before the call.
            #expect(throws: IOMMUFDError.self) { try edu.vfio.read(UInt32.self, region: edu.config, offset: edu.config.size) }
            print("edu \(address): BAR0 \(edu.bar0.size) bytes mapped, id 0x\(String(id, radix: 16))")
        }

        @Test func interruptReachesAnEventFD() throws {
            let address = try #require(EduDevice.all().first, "no edu device bound to vfio-pci")
            let fd = try IOMMUFDContext()
            let edu = try EduDevice(address, boundTo: fd)
            // MSI is a DMA write: the device needs a page table and bus mastering.
            let ioas = try fd.allocateIOAS()
            try edu.vfio.attach(to: ioas)
            try edu.enableBusMaster()
            let intx = try edu.vfio.irqInfo(.intx)
            let msi = try edu.vfio.irqInfo(.msi)
            print("edu IRQs: INTx \(intx.count) (flags 0x\(String(intx.flags.rawValue, radix: 16))), MSI \(msi.count) (flags 0x\(String(msi.flags.rawValue, radix: 16)))")
            #expect(intx.count == 1)
            #expect(msi.count >= 1)
            #expect(msi.flags.contains(.eventfd))

            let event = try EventFD()
            try edu.vfio.setIRQs(.msi, eventfds: [event.descriptor])
            // Nothing fires before edu is asked to.
            #expect(try event.wait(milliseconds: 100) == 0)
            // Raise-interrupt register 0x60: the value ORs into the interrupt status (0x24).
            try edu.vfio.write(UInt32(0x1), region: edu.bar0, offset: 0x60)
            let fired = try event.wait(milliseconds: 5000)
            #expect(fired >= 1, "the MSI did not reach the eventfd")
            #expect(try edu.vfio.read(UInt32.self, region: edu.bar0, offset: 0x24) & 1 == 1)
            try edu.vfio.write(UInt32(0x1), region: edu.bar0, offset: 0x64)
            #expect(try edu.vfio.read(UInt32.self, region: edu.bar0, offset: 0x24) == 0)

            // A DMA with the raise-interrupt bit (command bit 2) fires it again on completion.
            let buffer = try patterned(page, seed: 0x44)
            _ = try fd.map(buffer, into: ioas, at: IOVA(0x30_0000))
            try edu.vfio.write(UInt64(0x30_0000), region: edu.bar0, offset: 0x80)
            try edu.vfio.write(EduDevice.bufferAddress, region: edu.bar0, offset: 0x88)
            try edu.vfio.write(UInt64(64), region: edu.bar0, offset: 0x90)
            try edu.vfio.write(UInt64(0x1 | 0x4), region: edu.bar0, offset: 0x98)
            let afterDMA = try event.wait(milliseconds: 5000)
            #expect(afterDMA >= 1, "no interrupt after the DMA")
            let status = try edu.vfio.read(UInt32.self, region: edu.bar0, offset: 0x24)
            #expect(status & 0x100 != 0)
            try edu.vfio.write(status, region: edu.bar0, offset: 0x64)
            print("edu MSI through eventfd: raise -> \(fired), DMA done -> \(afterDMA), status 0x\(String(status, radix: 16))")
            try edu.vfio.setIRQs(.msi, eventfds: [])
            try edu.vfio.detach()
        }

        @Test func reset() throws {
            let address = try #require(EduDevice.all().first, "no edu device bound to vfio-pci")
            let fd = try IOMMUFDContext()
            let edu = try EduDevice(address, boundTo: fd)
            let info = try edu.vfio.info()
            print("edu device info: \(info.flags), \(info.regionCount) regions, \(info.irqCount) IRQ kinds")
            #expect(info.flags.contains(.pci))
            if info.flags.contains(.reset) {
                try edu.vfio.reset()
                #expect(try edu.identification() == 0x0100_00ed)
            } else {
                // vfio-pci answers EINVAL when it has no way to reset the function (edu has no FLR).
                expectKernelError(.invalidArgument, .reset) { try edu.vfio.reset() }
            }
        }

        @Test func vfioPCIBindingHandsTheDeviceBack() throws {
            let all = EduDevice.all()
            let address = try #require(all.count >= 2 ? all[1] : nil, "no second edu device")
            try #require(address.driver() == "vfio-pci")
            // Already on vfio-pci: nothing to do, nothing undone.
            do {
                let binding = try VFIOPCIBinding(address)
                #expect(binding.previousDriver == "vfio-pci")
            }
            #expect(address.driver() == "vfio-pci")

            // Take it off vfio-pci, as a host driver's device would start.
            writeSysfs(address.sysfsPath + "/driver/unbind", address.description)
            writeSysfs(address.sysfsPath + "/driver_override", "\n")
            defer {
                // Restore the harness's state whatever happened.
                writeSysfs(address.sysfsPath + "/driver_override", "vfio-pci")
                if address.driver() == nil { writeSysfs("/sys/bus/pci/drivers_probe", address.description) }
            }
            #expect(address.driver() == nil)
            do {
                let binding = try VFIOPCIBinding(address)
                #expect(binding.previousDriver == nil)
                #expect(address.driver() == "vfio-pci")
                let fd = try IOMMUFDContext()
                let vfio = try VFIODevice(pciAddress: address)
                let device = try vfio.bind(to: fd)
                let bar0 = try vfio.regionInfo(.bar(0))
                #expect(try vfio.read(UInt32.self, region: bar0, offset: 0) == 0x0100_00ed)
                print("second edu \(address) bound to vfio-pci by VFIOPCIBinding: \(device)")
                try vfio.close()
                #expect(binding.address == address)
            }
            // The binding ended: the device is unbound again, as it was.
            #expect(address.driver() == nil)
        }

        private func writeSysfs(_ path: String, _ value: String) {
            let f = open(path, O_WRONLY)
            guard f >= 0 else { return }
            _ = value.withCString { write(f, $0, strlen($0)) }
            close(f)
        }
    }
}

extension EduKernelTests {
    /// The harness puts the second edu behind a host bridge on NUMA node 1 and the first on the
    /// root bus (no node): sysfs as `PCIAddress` reads it, for NUMA-aware placement.
    @Suite struct EduNUMAKernelTests {
        @Test func devicesReportTheirNUMANode() throws {
            let all = EduDevice.all()
            try #require(all.count == 2, "expected the harness's two edu devices, found \(all)")
            #expect(all[0] == PCIAddress(domain: 0, bus: 0, device: 5, function: 0))
            #expect(all[0].numaNode() == nil)
            #expect(all[1] == PCIAddress(domain: 0, bus: 0x81, device: 0, function: 0))
            #expect(all[1].numaNode() == 1)
            #expect(all.allSatisfy { $0.driver() == "vfio-pci" })
            #expect(PCIAddress(domain: 0, bus: 0x7f, device: 31, function: 7).numaNode() == nil)
        }
    }
}
