import IOMMUFD
import QEMUDevices
import Testing

extension EduKernelTests {
    /// `VFIO_DEVICE_FEATURE` and PCI hot reset on the edu devices: what vfio-pci answers for
    /// each feature, and the hot-reset answers of an edu on the root bus (the first) and one
    /// behind a root port (the second).
    @Suite struct EduFeatureKernelTests {
        @Test func featureProbesOnEdu() throws {
            let address = try #require(EduDevice.all().first, "no edu device bound to vfio-pci")
            let fd = try IOMMUFDContext()
            let edu = try EduDevice(address, boundTo: fd)
            var answers: [String] = []
            for feature in (0...14).map({ VFIODeviceFeature(rawValue: $0) }) {
                for access in [VFIODeviceFeatureAccess(), .get, .set] {
                    let answer: String
                    do {
                        try edu.vfio.probeFeature(feature, for: access)
                        answer = "ok"
                    } catch {
                        answer = error.errno.map { "\($0.rawValue)" } ?? "\(error)"
                    }
                    answers.append("\(feature)\(access == .get ? "/get" : access == .set ? "/set" : ""): \(answer)")
                }
            }
            print("VFIO_DEVICE_FEATURE probes on edu (errno or ok): \(answers.joined(separator: ", "))")
            // The whole table, pinned: ENOTTY (25) for what vfio-pci lacks, EINVAL (22) for a
            // direction it lacks and for MIG_PRECOPY_INFOv2, which vfio_main refuses for a
            // device without pre-copy migration.
            var expected: [String] = []
            for feature in (0...14).map({ VFIODeviceFeature(rawValue: $0) }) {
                let power = [VFIODeviceFeature.lowPowerEntry, .lowPowerEntryWithWakeup, .lowPowerExit].contains(feature)
                let plain = power ? "ok" : feature == .migrationPrecopyInfoV2 ? "22" : "25"
                expected += ["\(feature): \(plain)", "\(feature)/get: \(power ? "22" : plain)", "\(feature)/set: \(plain)"]
            }
            #expect(answers == expected)
            // vfio-pci knows the runtime power features: entry and exit can be set, not read.
            try edu.vfio.probeFeature(.lowPowerEntry)
            try edu.vfio.probeFeature(.lowPowerEntry, for: .set)
            try edu.vfio.probeFeature(.lowPowerExit, for: .set)
            expectKernelError(.invalidArgument, .probeFeature) { try edu.vfio.probeFeature(.lowPowerEntry, for: .get) }
            #expect(try edu.vfio.supportsFeature(.lowPowerExit, for: .set))
            #expect(try !edu.vfio.supportsFeature(.lowPowerExit, for: .get))
            // No migration driver, no SR-IOV token, no dma-buf export in this kernel, no CDX
            // bus master: ENOTTY.
            for feature in [VFIODeviceFeature.migration, .migrationDeviceState, .pciVFToken, .dmaBuf, .busMaster,
                            .dmaLoggingStart, .migrationDataSize, .zpciError, VFIODeviceFeature(rawValue: 0x7fff)] {
                expectKernelError(.inappropriateIOCTLForDevice, .probeFeature) { try edu.vfio.probeFeature(feature) }
                #expect(try !edu.vfio.supportsFeature(feature))
            }
            // Without PROBE, reading a feature the driver lacks is ENOTTY too.
            var payload: UInt64 = 0
            expectKernelError(.inappropriateIOCTLForDevice, .getFeature) {
                try withUnsafeMutableBytes(of: &payload) { try edu.vfio.getFeature(.migration, into: $0) }
            }
            // A feature number past 16 bits spills into the flags: the kernel refuses it (EINVAL).
            expectKernelError(.invalidArgument, .probeFeature) { try edu.vfio.probeFeature(VFIODeviceFeature(rawValue: 1 << 20)) }
            // Low power and back: the device answers afterwards.
            try edu.vfio.setFeature(.lowPowerEntry)
            try edu.vfio.setFeature(.lowPowerExit)
            #expect(try edu.identification() == 0x0100_00ed)
        }

        @Test func hotResetOfTheRootBusEdu() throws {
            let address = try #require(EduDevice.all().first, "no edu device bound to vfio-pci")
            let fd = try IOMMUFDContext()
            let edu = try EduDevice(address, boundTo: fd)
            // A device on the root bus has no slot and no bridge above it: no hot reset.
            expectKernelError(.operationNotSupportedByDevice, .pciHotResetInfo) { try edu.vfio.pciHotResetInfo() }
            expectKernelError(.operationNotSupportedByDevice, .pciHotReset) { try edu.vfio.pciHotReset() }
        }

        @Test func hotResetOfTheEduBehindARootPort() throws {
            let all = EduDevice.all()
            let address = try #require(all.count >= 2 ? all[1] : nil, "no second edu device")
            let fd = try IOMMUFDContext()
            let edu = try EduDevice(address, boundTo: fd)
            let info = try edu.vfio.pciHotResetInfo()
            print("hot-reset info of edu \(address): \(info.flags), \(info.devices)")
            #expect(info.flags == [.deviceIDs, .allOwned])
            #expect(info.devices == [PCIHotResetDevice(address: address, owner: .device(edu.device))])
            // A cdev passes no group descriptors; with one the kernel answers EINVAL.
            expectKernelError(.invalidArgument, .pciHotReset) { try edu.vfio.pciHotReset(groupDescriptors: [fd.descriptor]) }
            // The secondary bus reset goes through; QEMU's edu has no reset handler, so its
            // liveness register keeps what was written, and vfio restores its config space.
            try edu.vfio.write(UInt32(0x1234_5678), region: edu.bar0, offset: 4)
            let command = try edu.vfio.read(UInt16.self, region: edu.config, offset: 4)
            try edu.vfio.pciHotReset()
            #expect(try edu.vfio.read(UInt32.self, region: edu.bar0, offset: 4) == ~UInt32(0x1234_5678))
            #expect(try edu.vfio.read(UInt16.self, region: edu.config, offset: 4) == command)
            #expect(try edu.identification() == 0x0100_00ed)
            // And again: the reset is repeatable.
            try edu.vfio.pciHotReset()
            #expect(try edu.identification() == 0x0100_00ed)
        }
    }
}
