import IOMMUCapabilities
import IOMMUFD
import QEMUDevices
import Testing

extension EduKernelTests {
    /// The requirement check on what the real kernel reports: the emulated VT-d behind edu and
    /// the kernel's mock IOMMU, side by side as a VMM would see two different host IOMMUs.
    @Suite struct CapabilityCheckKernelTests {
        func capabilities(_ fd: borrowing IOMMUFDContext, _ device: DeviceID) throws -> HostIOMMUCapabilities {
            HostIOMMUCapabilities(report: try HardwareInfoReport(try fd.hardwareInfo(of: device)))
        }

        @Test func guestPlatformsAgainstTheEmulatedVTd() throws {
            let address = try #require(EduDevice.all().first, "no edu device bound to vfio-pci")
            let fd = try IOMMUFDContext()
            let edu = try EduDevice(address, boundTo: fd)
            let host = try capabilities(fd, edu.device)
            #expect(host.kind == .intelVTd)
            // QEMU's default VT-d cannot nest: a VT-d guest is mirrored in software, or refused
            // when nesting is required.
            let preferred = check(.intelVTdSecondStage(levels: 4), host).plan
            guard case .softwareMirroring = preferred else {
                Issue.record("expected software mirroring, got \(preferred)")
                return
            }
            let required = check(.intelVTdFirstStage(levels: 4, nesting: .required), host).plan
            guard case .refuse(let reasons) = required else {
                Issue.record("expected a refusal, got \(required)")
                return
            }
            #expect(reasons.contains(.nestingUnsupported))
            // A 5-level guest (57-bit IOVAs) does not fit the host's 48-bit IOVA space.
            let wide = check(.intelVTdFirstStage(levels: 5, nesting: .forbidden), host)
            #expect(wide.mismatches.contains(.addressWidth(required: 57, offered: 48)), "\(wide.mismatches)")
            // Dirty tracking for migration is not offered by this IOMMU: refused.
            var migrating = GuestRequirements.intelVTdSecondStage(levels: 4)
            migrating.dirtyTracking = true
            #expect(check(migrating, host).mismatches.contains(.dirtyTracking))
            print("edu VT-d host, 4-level VT-d guest: \(preferred); nesting required: \(required)")
        }

        @Test func aDeviceBehindADifferentIOMMUIsCaught() throws {
            let address = try #require(EduDevice.all().first, "no edu device bound to vfio-pci")
            let fd = try IOMMUFDContext()
            let edu = try EduDevice(address, boundTo: fd)
            let mock = try fd.addMockDevice(to: PageTableID(try fd.allocateIOAS()))
            let vtd = try capabilities(fd, edu.device)
            let selftest = try capabilities(fd, mock.device)
            #expect(selftest.kind == .selftest)
            // A virtio-iommu guest can be served by either host: the second device differs, so it
            // gets its own group (and IOAS), or is refused when mixing is not allowed.
            let guest = GuestRequirements.virtio(addressBits: 39, guestPhysicalAddressBits: 39)
            var planner = DevicePlanner(requirements: guest)
            #expect(planner.add(device: "edu", host: vtd) == .newGroup(group: 0, differences: []))
            let second = planner.add(device: "mock", host: selftest)
            guard case .newGroup(1, let differences) = second else {
                Issue.record("expected a second group, got \(second)")
                return
            }
            #expect(differences.contains(.kind(first: .intelVTd, device: .selftest)))
            var strict = DevicePlanner(requirements: guest, mixing: .refuse)
            _ = strict.add(device: "edu", host: vtd)
            guard case .refusedDifferentHost = strict.add(device: "mock", host: selftest) else {
                Issue.record("a different IOMMU was accepted into a single-IOMMU platform")
                return
            }
            print("edu then mock device for a virtio-iommu guest: \(second)")
        }
    }
}
