import IOMMUFD
import QEMUDevices
import Testing


extension EduKernelTests {
    /// Real DMA through the emulated Intel VT-d: the edu device bound to vfio-pci, opened as a
    /// VFIO cdev, bound to an iommufd and attached to an IOAS.
    @Suite struct EduDMAKernelTests {
        @Test func dmaRoundTripThenRefusedAfterUnmap() throws {
            let address = try #require(EduDevice.all().first, "no edu device bound to vfio-pci")
            let fd = try IOMMUFDContext()
            let edu = try EduDevice(address, boundTo: fd)
            let device = edu.device
            let id = try edu.identification()
            #expect(id == 0x0100_00ed)
            let ioas = try fd.allocateIOAS()
            let hwpt = try edu.vfio.attach(to: ioas)
            print("edu \(address): device \(device.rawValue), HWPT \(hwpt.rawValue) in IOAS \(ioas.rawValue)")
            try edu.enableBusMaster()

            let count = EduDevice.bufferSize
            let buffer = try patterned(page, seed: 0x5a)
            let iova = IOVA(0x10_0000)
            _ = try fd.map(buffer, into: ioas, at: iova)
            let sent = buffer.withUnsafeMutableBytes { Array($0.prefix(count)) }

            // Memory to device, clear the memory, device back to memory.
            let sentDone = try edu.dma(.toDevice, iova: iova, count: count)
            #expect(sentDone)
            buffer.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 0) }
            let backDone = try edu.dma(.toMemory, iova: iova, count: count)
            #expect(backDone)
            let back = buffer.withUnsafeMutableBytes { Array($0.prefix(count)) }
            #expect(back == sent, "bytes did not survive the DMA round trip through VT-d")
            print("edu DMA round trip through VT-d: \(count) bytes, equal: \(back == sent)")

            // Unmap, then the same device-to-memory DMA must be refused by the IOMMU.
            #expect(try fd.unmap(range(iova.rawValue, page), from: ioas) == UInt64(page))
            buffer.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 0xee) }
            let log = KernelLog()
            let refusedDone = try edu.dma(.toMemory, iova: iova, count: count)
            #expect(refusedDone)
            let fault = log.waitFor(["DMAR", "fault addr 0x100000"], seconds: 5)
            #expect(fault != nil, "no DMAR fault was logged for the unmapped IOVA")
            print("refused DMA after unmap: \(fault?.split(separator: ";").last.map(String.init) ?? "no fault seen")")
            let untouched = buffer.withUnsafeMutableBytes { $0.allSatisfy { $0 == 0xee } }
            #expect(untouched, "the buffer changed although its IOVA was unmapped")
            try edu.vfio.detach()
        }
    }
}
