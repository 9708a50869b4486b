import IOMMUCapabilities
import IOMMUFD
import QEMUDevices
import Testing

extension EduKernelTests {
    /// The edu device behind the emulated Intel VT-d: attach/replace/detach, the IOMMU's hardware
    /// info, HWPTs allocated explicitly, and what this IOMMU refuses.
    @Suite struct EduHWPTKernelTests {
        @Test func bindAttachReplaceDetach() throws {
            let address = try #require(EduDevice.all().first, "no edu device bound to vfio-pci")
            let fd = try IOMMUFDContext()
            let edu = try EduDevice(address, boundTo: fd)
            let a = try fd.allocateIOAS()
            let b = try fd.allocateIOAS()
            let hwptA = try edu.vfio.attach(to: a)
            // Attaching again while attached replaces the page table.
            let hwptB = try edu.vfio.attach(to: b)
            #expect(hwptA != hwptB)
            // a lost its only device, and with it the auto-allocated HWPT: it can go.
            try fd.destroy(a)
            expectKernelError(.resourceBusy, .destroy) { try fd.destroy(b) }
            // Replace onto an explicitly allocated HWPT, which is then busy.
            let explicit = try fd.allocateHWPT(for: edu.device, in: b)
            #expect(try edu.vfio.attach(to: explicit) == explicit)
            expectKernelError(.resourceBusy, .destroy) { try fd.destroy(explicit) }
            try edu.vfio.detach()
            try fd.destroy(explicit)
            // Unknown page table ids.
            expectKernelError(.noSuchFileOrDirectory, .attach) { try edu.vfio.attach(to: HWPTID(0xffff_ff00)) }
            try fd.destroy(b)
            print("edu \(address): \(hwptA) in IOAS a, replaced by \(hwptB) in b, then \(explicit)")
        }

        @Test func pasidAttachOnADeviceWithoutPASID() throws {
            let address = try #require(EduDevice.all().first, "no edu device bound to vfio-pci")
            let fd = try IOMMUFDContext()
            let edu = try EduDevice(address, boundTo: fd)
            let ioas = try fd.allocateIOAS()
            try edu.vfio.attach(to: ioas)
            // edu has no PASID capability and this VT-d runs in legacy mode: a PASID attach is
            // refused (EINVAL); detaching a PASID that was never attached is a no-op for the
            // kernel; the device's main attachment stays and still detaches.
            expectKernelError(.invalidArgument, .attach) { try edu.vfio.attach(to: ioas, pasid: 1) }
            try edu.vfio.detach(pasid: 1)
            try edu.vfio.detach()
        }

        @Test func hardwareInfoOfTheEmulatedVTd() throws {
            let address = try #require(EduDevice.all().first, "no edu device bound to vfio-pci")
            let fd = try IOMMUFDContext()
            let edu = try EduDevice(address, boundTo: fd)
            let raw = try fd.hardwareInfo(of: edu.device)
            #expect(raw.type == .intelVTd)
            #expect(raw.kernelDataLength == VTdHardwareInfo.size)
            #expect(raw.data.count == VTdHardwareInfo.size)
            let report = try HardwareInfoReport(raw)
            guard case .intelVTd(let vtd) = report.info else {
                Issue.record("not decoded as VT-d: \(report.info)")
                return
            }
            print("edu \(address) hw_info: type \(raw.type) (\(raw.type.rawValue)), cap 0x\(String(vtd.capability.rawValue, radix: 16)), ecap 0x\(String(vtd.extendedCapability.rawValue, radix: 16)), capabilities \(raw.capabilities) (0x\(String(raw.capabilities.rawValue, radix: 16))), maxPASIDLog2 \(raw.maxPASIDLog2)")
            print("decoded: \(report)")
            #expect(vtd.capability.rawValue == 0xd2_008c_222f_0606 || vtd.capability.rawValue == 0x1d2_008c_222f_0606)
            #expect(vtd.extendedCapability.rawValue == 0xf0_0f4a || vtd.extendedCapability.rawValue == 0x8800_00f0_0f4a)
            #expect(raw.capabilities.contains(.atsNotSupported))
            #expect(!raw.capabilities.contains(.dirtyTracking))

            // A small buffer: the kernel fills what fits and says how much it has.
            let short = try fd.hardwareInfo(of: edu.device, capacity: 8)
            #expect(short.data == Array(raw.data.prefix(8)))
            #expect(short.kernelDataLength == VTdHardwareInfo.size)
            // Asking for VT-d explicitly works; asking for another format does not.
            #expect(try fd.hardwareInfo(of: edu.device, requesting: .intelVTd).data == raw.data)
            do {
                _ = try fd.hardwareInfo(of: edu.device, requesting: .armSMMUv3)
                Issue.record("VT-d answered for an SMMUv3 request")
            } catch {
                print("hw_info requesting armSMMUv3 on VT-d: \(error)")
                #expect(error.isNotSupported)
            }
            // Refused before the call.
            #expect(throws: IOMMUFDError.self) { try fd.hardwareInfo(of: edu.device, capacity: -1) }
            expectKernelError(.noSuchFileOrDirectory, .hardwareInfo) { try fd.hardwareInfo(of: DeviceID(0xffff_ff00)) }
        }

        @Test func dmaThroughAnExplicitHWPT() throws {
            let address = try #require(EduDevice.all().first, "no edu device bound to vfio-pci")
            let fd = try IOMMUFDContext()
            let edu = try EduDevice(address, boundTo: fd)
            let ioas = try fd.allocateIOAS()
            let buffer = try patterned(page, seed: 0x33)
            let iova = IOVA(0x20_0000)
            _ = try fd.map(buffer, into: ioas, at: iova)
            let hwpt = try fd.allocateHWPT(for: edu.device, in: ioas)
            #expect(try edu.vfio.attach(to: hwpt) == hwpt)
            try edu.enableBusMaster()
            let count = EduDevice.bufferSize
            let sent = buffer.withUnsafeMutableBytes { Array($0.prefix(count)) }
            #expect(try edu.dma(.toDevice, iova: iova, count: count))
            buffer.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 0) }
            #expect(try edu.dma(.toMemory, iova: iova, count: count))
            let back = buffer.withUnsafeMutableBytes { Array($0.prefix(count)) }
            #expect(back == sent, "bytes did not survive the DMA round trip through the explicit HWPT")
            print("edu DMA through explicit \(hwpt): \(count) bytes, equal: \(back == sent)")
            try edu.vfio.detach()
            try fd.destroy(hwpt)
        }

        @Test func whatTheEmulatedVTdRefuses() throws {
            let address = try #require(EduDevice.all().first, "no edu device bound to vfio-pci")
            let fd = try IOMMUFDContext()
            let ioas = try fd.allocateIOAS()
            // A device id that was unbound (its file closed) is unknown afterwards.
            let stale: DeviceID
            do {
                let first = try EduDevice(address, boundTo: fd)
                stale = first.device
            }
            expectKernelError(.noSuchFileOrDirectory, .hardwareInfo) { try fd.hardwareInfo(of: stale) }
            expectKernelError(.noSuchFileOrDirectory, .allocateHWPT) { try fd.allocateHWPT(for: stale, in: ioas) }
            let edu = try EduDevice(address, boundTo: fd)
            for flags in [HWPTAllocationFlags.nestParent, .dirtyTracking] {
                do {
                    let id = try fd.allocateHWPT(for: edu.device, in: ioas, flags: flags)
                    Issue.record("\(flags) HWPT allocated on this VT-d: \(id)")
                } catch {
                    print("VT-d \(flags): \(error)")
                    #expect(error.isNotSupported, "\(error)")
                    #expect(error.errno == .notSupported)
                }
            }
            // Paging data of the wrong format for this IOMMU.
            do {
                _ = try fd.allocateHWPT(for: edu.device, in: ioas, data: .selftest(SelftestHWPTData()))
                Issue.record("VT-d took selftest HWPT data")
            } catch {
                print("VT-d paging HWPT with selftest data: \(error)")
                #expect(error.isNotSupported)
            }
            // Nested on a parent that is not a nesting parent.
            let plain = try fd.allocateHWPT(for: edu.device, in: ioas)
            do {
                _ = try fd.allocateNestedHWPT(for: edu.device, parent: plain,
                                              data: .intelVTdStage1(VTdStage1Table(pageTableAddress: GuestPhysicalAddress(0x1000), addressWidth: 48)))
                Issue.record("nested HWPT on a plain parent")
            } catch {
                print("VT-d nested on a non-parent HWPT: \(error)")
                #expect(error.errno != nil)
            }
            // Bad ids: the kernel's answers.
            expectKernelError(.invalidArgument, .allocateHWPT) { try fd.allocateHWPT(for: edu.device, in: IOASID(0xffff_ff00)) }
            expectKernelError(.noSuchFileOrDirectory, .allocateHWPT) { try fd.allocateHWPT(for: DeviceID(0xffff_ff00), in: ioas) }
            // Empty raw data is refused before the call, with the kernel's EINVAL.
            do {
                _ = try fd.allocateHWPT(for: edu.device, in: ioas, data: .raw(type: .intelVTdStage1, bytes: []))
                Issue.record("empty raw data accepted")
            } catch {
                #expect(error.errno == .invalidArgument && error.isRefusedBeforeCall)
            }
            try fd.destroy(plain)
        }
    }
}
