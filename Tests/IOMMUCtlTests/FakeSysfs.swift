import IOMMUCtlKit
import IOMMUFD
import Synchronization

/// A model of the kernel's PCI driver-binding files (`driver_override`, `driver/unbind`,
/// `drivers_probe`, `drivers/NAME/bind`) and of `/proc/PID/fd`, for the binder's host tests.
/// The kernel tier checks the same flows on the real sysfs.
final class FakeSysfs: SysfsAccess {
    struct Device {
        var vendor: String
        var device: String
        var driver: String?
        var override: String?
        var group: Int
    }

    struct State {
        var devices: [String: Device] = [:]
        /// Drivers loaded, with the `vendor:device` ids each probes on its own.
        var drivers: [String: Set<String>] = [:]
        var openFiles: [Int: [String]] = [:]
        var readOnly = false
        var writes: [String] = []
    }

    let state: Mutex<State>

    init(_ state: State) { self.state = Mutex(state) }

    var writes: [String] { state.withLock { $0.writes } }
    func device(_ bdf: String) -> Device? { state.withLock { $0.devices[bdf] } }

    func read(_ path: String) -> Result<String, Errno> {
        state.withLock { s in
            let parts = path.split(separator: "/").map(String.init)
            guard parts.count == 6, parts[0...3] == ["sys", "bus", "pci", "devices"], let d = s.devices[parts[4]] else {
                if parts.count == 3, parts[0] == "proc", parts[2] == "comm" { return .success("qemu-system-x86") }
                return .failure(.noSuchFileOrDirectory)
            }
            switch parts[5] {
            case "vendor": return .success(d.vendor)
            case "device": return .success(d.device)
            case "class": return .success("0x00ff00")
            case "numa_node": return .success("-1")
            case "driver_override": return .success(d.override ?? "(null)")
            default: return .failure(.noSuchFileOrDirectory)
            }
        }
    }

    func write(_ path: String, _ value: String) -> Result<Void, Errno> {
        state.withLock { s in
            if s.readOnly { return .failure(.permissionDenied) }
            s.writes.append("\(path) <- \(value == "\n" ? "\\n" : value)")
            let parts = path.split(separator: "/").map(String.init)
            let bdf = value.trimmed
            switch parts {
            case ["sys", "bus", "pci", "drivers_probe"]:
                guard var d = s.devices[bdf] else { return .failure(.operationNotSupportedByDevice) }
                if d.driver == nil {
                    if let o = d.override { if s.drivers[o] != nil { d.driver = o } }
                    else { d.driver = s.drivers.first { $0.value.contains("\(d.vendor):\(d.device)") }?.key }
                }
                s.devices[bdf] = d
                return .success(())
            case let p where p.count == 6 && p[0...3] == ["sys", "bus", "pci", "drivers"] && p[5] == "bind":
                guard let ids = s.drivers[p[4]] else { return .failure(.noSuchFileOrDirectory) }
                guard var d = s.devices[bdf] else { return .failure(.operationNotSupportedByDevice) }
                if d.driver != nil { return .failure(.resourceBusy) }
                if let o = d.override, o != p[4] { return .failure(.operationNotSupportedByDevice) }
                guard d.override == p[4] || ids.contains("\(d.vendor):\(d.device)") else { return .failure(.operationNotSupportedByDevice) }
                d.driver = p[4]
                s.devices[bdf] = d
                return .success(())
            case let p where p.count >= 6 && p[0...3] == ["sys", "bus", "pci", "devices"]:
                guard var d = s.devices[p[4]] else { return .failure(.noSuchFileOrDirectory) }
                if p.count == 6, p[5] == "driver_override" {
                    d.override = bdf.isEmpty ? nil : bdf
                } else if p.count == 7, p[5] == "driver", p[6] == "unbind" {
                    guard d.driver != nil else { return .failure(.noSuchFileOrDirectory) }
                    d.driver = nil
                } else {
                    return .failure(.permissionDenied)
                }
                s.devices[p[4]] = d
                return .success(())
            default:
                return .failure(.noSuchFileOrDirectory)
            }
        }
    }

    func readlink(_ path: String) -> Result<String, Errno> {
        state.withLock { s in
            let parts = path.split(separator: "/").map(String.init)
            if parts.count == 4, parts[0] == "proc", let pid = Int(parts[1]), let fd = Int(parts[3]),
               let files = s.openFiles[pid], fd < files.count {
                return .success(files[fd])
            }
            guard parts.count == 6, parts[0...3] == ["sys", "bus", "pci", "devices"], let d = s.devices[parts[4]] else {
                return .failure(.noSuchFileOrDirectory)
            }
            switch parts[5] {
            case "driver": return d.driver.map { .success("../../../bus/pci/drivers/\($0)") } ?? .failure(.noSuchFileOrDirectory)
            case "iommu_group": return .success("../../../kernel/iommu_groups/\(d.group)")
            case "iommu": return .success("../../virtual/iommu/dmar0")
            default: return .failure(.noSuchFileOrDirectory)
            }
        }
    }

    func list(_ path: String) -> Result<[String], Errno> {
        state.withLock { s in
            let parts = path.split(separator: "/").map(String.init)
            switch parts {
            case ["sys", "bus", "pci", "devices"]: return .success(s.devices.keys.sorted())
            case ["proc"]: return .success(s.openFiles.keys.sorted().map(String.init) + ["self"])
            case let p where p.count == 3 && p[0] == "proc" && p[2] == "fd":
                return s.openFiles[Int(p[1]) ?? -1].map { .success($0.indices.map(String.init)) } ?? .failure(.noSuchFileOrDirectory)
            case let p where p.count == 5 && p[0...3] == ["sys", "bus", "pci", "drivers"]:
                return s.drivers[p[4]] != nil ? .success(["bind", "unbind"]) : .failure(.noSuchFileOrDirectory)
            case let p where p.count == 5 && p[0...2] == ["sys", "kernel", "iommu_groups"] && p[4] == "devices":
                return .success(s.devices.filter { "\($0.value.group)" == p[3] }.keys.sorted())
            case let p where p.count == 6 && p[0...3] == ["sys", "bus", "pci", "devices"] && p[5] == "vfio-dev":
                guard let d = s.devices[p[4]], d.driver == "vfio-pci" else { return .failure(.noSuchFileOrDirectory) }
                return .success(["vfio\(s.devices.keys.sorted().firstIndex(of: p[4])!)"])
            default: return .failure(.noSuchFileOrDirectory)
            }
        }
    }
}
