#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
public import IOMMUFD

/// What `bind` remembers about a device so a later `unbind` (another process) can give it back.
public struct BindingRecord: Codable, Hashable, Sendable {
    public var address: String
    /// The driver the device had before `bind`; `nil` when it had none.
    public var previousDriver: String?
    /// `vendor:device`, so a record is not applied to another card in the same slot.
    public var ids: String

    public init(address: String, previousDriver: String?, ids: String) {
        self.address = address
        self.previousDriver = previousDriver
        self.ids = ids
    }
}

/// Where binding records live: one small JSON file a device, in `directory`.
///
/// The default directory is `/run/iommuctl/bindings`: `/run` is a tmpfs emptied at boot, as
/// driver bindings are, and `bind` needs root anyway. `IOMMUCTL_STATE_DIR` overrides it.
public struct BindingStore: Sendable {
    public let directory: String

    public init(directory: String? = nil) {
        self.directory = directory ?? ProcessInfoEnvironment.value("IOMMUCTL_STATE_DIR") ?? "/run/iommuctl/bindings"
    }

    public func path(for address: PCIAddress) -> String { directory + "/" + address.description + ".json" }

    public func load(_ address: PCIAddress) -> BindingRecord? {
        guard let data = FileManager.default.contents(atPath: path(for: address)) else { return nil }
        return try? JSONDecoder().decode(BindingRecord.self, from: data)
    }

    /// Writes the record (to a temporary file renamed over the old one).
    public func save(_ record: BindingRecord, for address: PCIAddress) throws(ToolError) {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let data = try encoder.encode(record)
            let target = path(for: address)
            let temporary = target + ".tmp"
            guard FileManager.default.createFile(atPath: temporary, contents: data) else {
                throw ToolError("cannot write \(temporary)")
            }
            guard rename(temporary, target) == 0 else { throw ToolError("cannot rename \(temporary) to \(target)") }
        } catch let e as ToolError {
            throw e
        } catch {
            let root = geteuid() == 0
            throw ToolError("cannot save the binding record in \(directory): \(error)",
                            hints: (root ? [] : ["bind and unbind write sysfs: run iommuctl as root (sudo)"])
                                + ["or set IOMMUCTL_STATE_DIR (or --state-dir) to a writable directory"],
                            status: root ? .failure : .permission)
        }
    }

    public func remove(_ address: PCIAddress) {
        try? FileManager.default.removeItem(atPath: path(for: address))
    }
}

/// Environment lookups without Foundation's `ProcessInfo` (not in FoundationEssentials everywhere).
enum ProcessInfoEnvironment {
    static func value(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }
}

/// The outcome of `bind` or `unbind`.
public struct BindingReport: Codable, Hashable, Sendable {
    public var address: String
    /// The driver before the command.
    public var driverBefore: String?
    /// The driver after it; `nil` for none.
    public var driver: String?
    /// For `bind`: the driver recorded to restore later. For `unbind`: the one restored.
    public var previousDriver: String?
    /// False when the device already was where the command would put it.
    public var changed: Bool
    /// The VFIO cdev after `bind` (`/dev/vfio/devices/vfioN`).
    public var cdev: String?
    /// The record file written (`bind`) or removed (`unbind`).
    public var stateFile: String
    /// Things worth knowing: group members that keep the group from being usable, a missing cdev.
    public var notes: [String]
}

/// Moves PCI functions to vfio-pci and back through sysfs, remembering the driver they had.
///
/// Writes `driver_override`, `driver/unbind`, `drivers_probe` and `drivers/NAME/bind`: needs root.
public struct DeviceBinder: Sendable {
    public let sysfs: any SysfsAccess
    public let store: BindingStore

    public init(sysfs: any SysfsAccess = LinuxSysfs(), store: BindingStore = BindingStore()) {
        self.sysfs = sysfs
        self.store = store
    }

    func requireDevice(_ address: PCIAddress) throws(ToolError) -> PCIDeviceEntry {
        guard let entry = SysfsInventory(sysfs: sysfs).device(address) else {
            throw ToolError("no PCI device \(address) (\(address.sysfsPath) does not exist)",
                            hints: ["`iommuctl probe` lists the PCI devices; `lspci -D` shows addresses with their domain"])
        }
        return entry
    }

    func driver(_ address: PCIAddress) -> String? { sysfs.linkName(address.sysfsPath + "/driver") }

    func wrap<T>(_ body: () throws(IOMMUFDError) -> T) throws(ToolError) -> T {
        do { return try body() } catch { throw ToolError.from(error) }
    }

    /// Binds `address` to vfio-pci, recording its current driver first.
    /// - Throws: ``ToolError`` when the device does not exist, vfio-pci is not loaded, a sysfs
    ///   write fails (EACCES without root) or the device does not end up on vfio-pci.
    public func bind(_ address: PCIAddress) throws(ToolError) -> BindingReport {
        let entry = try requireDevice(address)
        let before = entry.driver
        var report = BindingReport(address: address.description, driverBefore: before, driver: before,
                                   previousDriver: before == "vfio-pci" ? store.load(address)?.previousDriver : before,
                                   changed: false, cdev: nil, stateFile: store.path(for: address), notes: [])
        if before != "vfio-pci" {
            guard sysfs.exists("/sys/bus/pci/drivers/vfio-pci") else {
                throw ToolError("the vfio-pci driver is not loaded", hints: [
                    "load it: `modprobe vfio-pci` (kernel options CONFIG_VFIO_PCI and CONFIG_VFIO_DEVICE_CDEV)",
                ])
            }
            try store.save(BindingRecord(address: address.description, previousDriver: before,
                                         ids: "\(entry.vendor):\(entry.device)"), for: address)
            let base = address.sysfsPath
            try wrap { () throws(IOMMUFDError) in
                try sysfs.set(base + "/driver_override", "vfio-pci")
                if before != nil { try sysfs.set(base + "/driver/unbind", address.description) }
                try sysfs.set("/sys/bus/pci/drivers_probe", address.description)
            }
            report.driver = driver(address)
            report.previousDriver = before
            report.changed = true
            guard report.driver == "vfio-pci" else {
                throw ToolError("\(address) did not bind to vfio-pci (its driver is now \(report.driver ?? "none"))",
                                hints: ["the kernel log (`dmesg`) says why vfio-pci refused it",
                                        "give it back with `iommuctl unbind \(address)`"])
            }
        }
        report.cdev = sysfs.names(address.sysfsPath + "/vfio-dev").first { $0.hasPrefix("vfio") }.map { "/dev/vfio/devices/" + $0 }
        if report.cdev == nil {
            report.notes.append("no VFIO cdev appeared under \(address.sysfsPath)/vfio-dev: the kernel needs CONFIG_VFIO_DEVICE_CDEV")
        }
        report.notes += groupNotes(address)
        return report
    }

    /// Gives `address` back from vfio-pci to the driver `bind` recorded (or `driver`), or leaves
    /// it without a driver when there is no record.
    /// - Throws: ``ToolError`` when the device is not on vfio-pci, is in use by a process (its
    ///   VFIO file is open: unbinding would block until it is closed), or a sysfs write fails.
    public func unbind(_ address: PCIAddress, to driverName: String? = nil) throws(ToolError) -> BindingReport {
        let entry = try requireDevice(address)
        let record = store.load(address)
        let restore = driverName ?? record.flatMap { $0.ids == "\(entry.vendor):\(entry.device)" ? $0.previousDriver : nil }
        var report = BindingReport(address: address.description, driverBefore: entry.driver, driver: entry.driver,
                                   previousDriver: restore, changed: false, cdev: nil,
                                   stateFile: store.path(for: address), notes: [])
        guard entry.driver == "vfio-pci" else {
            throw ToolError("\(address) is not bound to vfio-pci (its driver is \(entry.driver ?? "none"))",
                            hints: ["`iommuctl bind \(address)` moves it to vfio-pci"])
        }
        if let user = openers(of: entry.vfioDevice.map { "/dev/vfio/devices/" + $0 }, group: entry.iommuGroup).first {
            throw ToolError("\(address) is in use (EBUSY): process \(user.pid) (\(user.name)) has \(user.path) open",
                            hints: ["stop that process first; unbinding now would block until it closes the device"])
        }
        let base = address.sysfsPath
        try wrap { () throws(IOMMUFDError) in
            try sysfs.set(base + "/driver/unbind", address.description)
            try sysfs.set(base + "/driver_override", "\n")
        }
        if let restore {
            if case .failure(let e) = sysfs.write("/sys/bus/pci/drivers/\(restore)/bind", address.description) {
                report.notes.append("binding to \(restore) failed (\(IOMMUFDError.name(of: e))); the device has no driver now")
            }
        } else if record == nil {
            report.notes.append("no record of a driver before vfio-pci (\(store.path(for: address))): left without a driver; "
                                + "`--driver NAME` binds one")
        }
        store.remove(address)
        report.driver = driver(address)
        report.changed = true
        if let restore, report.driver != restore {
            throw ToolError("\(address) did not bind back to \(restore) (its driver is now \(report.driver ?? "none"))",
                            hints: ["the kernel log (`dmesg`) says why"])
        }
        return report
    }

    /// Group members that keep a VFIO group from being viable: bound to a driver other than vfio-pci.
    func groupNotes(_ address: PCIAddress) -> [String] {
        let inventory = SysfsInventory(sysfs: sysfs)
        return inventory.groupPeers(of: address).compactMap { peer in
            guard let a = PCIAddress(peer), let d = inventory.device(a)?.driver, d != "vfio-pci", d != "pcieport" else { return nil }
            return "\(peer) shares its IOMMU group and is bound to \(d): the group is usable only once it is on vfio-pci too "
                + "(`iommuctl bind \(peer)`)"
        }
    }

    /// Processes with `cdev` (or the group's `/dev/vfio/N`) open, from `/proc/PID/fd`.
    func openers(of cdev: String?, group: Int?) -> [(pid: Int, name: String, path: String)] {
        let targets = (cdev.map { [$0] } ?? []) + (group.map { ["/dev/vfio/\($0)"] } ?? [])
        let me = Int(getpid())
        var found: [(Int, String, String)] = []
        for name in sysfs.names("/proc") {
            guard let pid = Int(name), pid != me else { continue }
            for fd in sysfs.names("/proc/\(pid)/fd") {
                if case .success(let target) = sysfs.readlink("/proc/\(pid)/fd/\(fd)"), targets.contains(target) {
                    found.append((pid, sysfs.text("/proc/\(pid)/comm") ?? "?", target))
                    break
                }
            }
        }
        return found
    }
}
