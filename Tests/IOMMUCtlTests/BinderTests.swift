#if canImport(Glibc)
import Glibc
#endif
import Foundation
import IOMMUCtlKit
import IOMMUFD
import Synchronization
import Testing

@Suite struct BinderTests {
    static let nic = "0000:03:00.0", edu = "0000:00:05.0", peer = "0000:03:00.1"

    func world(readOnly: Bool = false, vfioLoaded: Bool = true) -> FakeSysfs {
        var s = FakeSysfs.State()
        s.devices[Self.nic] = .init(vendor: "0x8086", device: "0x10d3", driver: "e1000e", group: 7)
        s.devices[Self.peer] = .init(vendor: "0x8086", device: "0x10d4", driver: "e1000e", group: 7)
        s.devices[Self.edu] = .init(vendor: "0x1234", device: "0x11e8", driver: "vfio-pci", group: 5)
        s.drivers["e1000e"] = ["0x8086:0x10d3", "0x8086:0x10d4"]
        if vfioLoaded { s.drivers["vfio-pci"] = [] }
        s.readOnly = readOnly
        return FakeSysfs(s)
    }

    func temporaryStore() -> BindingStore {
        BindingStore(directory: FileManager.default.temporaryDirectory.appendingPathComponent("iommuctl-test-\(UUID())").path)
    }

    func expectToolError(_ expected: String, status: ToolError.ExitStatus = .failure, _ body: () throws -> Void,
                         sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            try body()
            Issue.record("expected a ToolError containing \"\(expected)\"", sourceLocation: sourceLocation)
        } catch let error as ToolError {
            #expect(error.description.contains(expected), "\(error)", sourceLocation: sourceLocation)
            #expect(error.status == status, "\(error)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("unexpected \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func bindRecordsTheDriverAndUnbindRestoresIt() throws {
        let sysfs = world(), store = temporaryStore()
        let binder = DeviceBinder(sysfs: sysfs, store: store)
        let address = PCIAddress(Self.nic)!
        let bound = try binder.bind(address)
        #expect(bound.changed && bound.driverBefore == "e1000e" && bound.driver == "vfio-pci" && bound.previousDriver == "e1000e")
        #expect(bound.cdev?.hasPrefix("/dev/vfio/devices/vfio") == true)
        #expect(sysfs.writes == [
            "/sys/bus/pci/devices/\(Self.nic)/driver_override <- vfio-pci",
            "/sys/bus/pci/devices/\(Self.nic)/driver/unbind <- \(Self.nic)",
            "/sys/bus/pci/drivers_probe <- \(Self.nic)",
        ])
        #expect(store.load(address) == BindingRecord(address: Self.nic, previousDriver: "e1000e", ids: "0x8086:0x10d3"))
        // The group's other function still has its driver: the group is not viable yet.
        #expect(bound.notes.contains { $0.contains(Self.peer) && $0.contains("e1000e") }, "\(bound.notes)")

        // A second bind changes nothing and keeps the record.
        let again = try binder.bind(address)
        #expect(!again.changed && again.previousDriver == "e1000e")

        // Another process (a new binder) reads the record and restores e1000e.
        let restored = try DeviceBinder(sysfs: sysfs, store: store).unbind(address)
        #expect(restored.changed && restored.driver == "e1000e" && restored.previousDriver == "e1000e")
        #expect(sysfs.device(Self.nic)?.driver == "e1000e" && sysfs.device(Self.nic)?.override == nil)
        #expect(store.load(address) == nil)
        #expect(!FileManager.default.fileExists(atPath: restored.stateFile))
    }

    @Test func withoutARecordUnbindLeavesNoDriverAndBindRemembersNone() throws {
        let sysfs = world(), store = temporaryStore()
        let binder = DeviceBinder(sysfs: sysfs, store: store)
        let address = PCIAddress(Self.edu)!
        let unbound = try binder.unbind(address)
        #expect(unbound.driver == nil && sysfs.device(Self.edu)?.driver == nil)
        #expect(unbound.notes.contains { $0.contains("no record") })
        let before = sysfs.writes.count
        let bound = try binder.bind(address)
        #expect(bound.driverBefore == nil && bound.driver == "vfio-pci" && bound.previousDriver == nil)
        // No driver to unbind from: only the override and the probe.
        #expect(Array(sysfs.writes[before...]) == [
            "/sys/bus/pci/devices/\(Self.edu)/driver_override <- vfio-pci", "/sys/bus/pci/drivers_probe <- \(Self.edu)",
        ])
        #expect(store.load(address) == BindingRecord(address: Self.edu, previousDriver: nil, ids: "0x1234:0x11e8"))
        let again = try binder.unbind(address)
        #expect(again.driver == nil && again.notes.isEmpty)
    }

    @Test func unbindToANamedDriver() throws {
        let sysfs = world()
        let binder = DeviceBinder(sysfs: sysfs, store: temporaryStore())
        _ = try binder.bind(PCIAddress(Self.nic)!)
        let report = try DeviceBinder(sysfs: sysfs, store: temporaryStore()).unbind(PCIAddress(Self.nic)!, to: "e1000e")
        #expect(report.driver == "e1000e")
        // A driver whose id table does not match fails the bind: reported, not hidden.
        let b2 = DeviceBinder(sysfs: sysfs, store: temporaryStore())
        _ = try b2.bind(PCIAddress(Self.nic)!)
        expectToolError("did not bind back to vfio-nope") { _ = try b2.unbind(PCIAddress(Self.nic)!, to: "vfio-nope") }
    }

    @Test func refusals() {
        let sysfs = world(), store = temporaryStore()
        expectToolError("no PCI device 0000:00:1f.7") { _ = try DeviceBinder(sysfs: sysfs, store: store).bind(PCIAddress("0000:00:1f.7")!) }
        expectToolError("is not bound to vfio-pci (its driver is e1000e)") {
            _ = try DeviceBinder(sysfs: sysfs, store: store).unbind(PCIAddress(Self.nic)!)
        }
        expectToolError("`iommuctl bind \(Self.nic)`") { _ = try DeviceBinder(sysfs: sysfs, store: store).unbind(PCIAddress(Self.nic)!) }
        expectToolError("modprobe vfio-pci") {
            _ = try DeviceBinder(sysfs: world(vfioLoaded: false), store: store).bind(PCIAddress(Self.nic)!)
        }
        expectToolError("run iommuctl as root", status: .permission) {
            _ = try DeviceBinder(sysfs: world(readOnly: true), store: store).bind(PCIAddress(Self.nic)!)
        }
    }

    @Test func aDeviceInUseIsNotUnbound() {
        let sysfs = world()
        sysfs.state.withLock { $0.openFiles[4242] = ["/dev/null", "/dev/vfio/devices/vfio0"] }
        expectToolError("in use (EBUSY): process 4242 (qemu-system-x86) has /dev/vfio/devices/vfio0 open") {
            _ = try DeviceBinder(sysfs: sysfs, store: temporaryStore()).unbind(PCIAddress(Self.edu)!)
        }
        #expect(sysfs.writes.isEmpty)
        #expect(sysfs.device(Self.edu)?.driver == "vfio-pci")
        // A legacy VFIO user holds the group (/dev/vfio/5) instead of the cdev.
        let group = world()
        group.state.withLock { $0.openFiles[77] = ["/dev/vfio/5"] }
        expectToolError("process 77 (qemu-system-x86) has /dev/vfio/5 open") {
            _ = try DeviceBinder(sysfs: group, store: temporaryStore()).unbind(PCIAddress(Self.edu)!)
        }
    }

    @Test func inventoryReadsTheModel() {
        let inventory = SysfsInventory(sysfs: world())
        let devices = inventory.devices()
        #expect(devices.map(\.address) == [Self.edu, Self.nic, Self.peer])
        #expect(devices[0].vfioDevice == "vfio0" && devices[0].iommuGroup == 5 && devices[0].numaNode == nil && devices[0].iommu == "dmar0")
        #expect(devices[1].driver == "e1000e" && devices[1].vfioDevice == nil)
        #expect(inventory.groupPeers(of: PCIAddress(Self.nic)!) == [Self.peer])
        #expect(throws: ToolError.self) { try vfioCdev(for: PCIAddress(Self.nic)!, inventory: inventory) }
        #expect(try! vfioCdev(for: PCIAddress(Self.edu)!, inventory: inventory) == "/dev/vfio/devices/vfio0")
    }
}
