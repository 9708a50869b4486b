public import IOMMUFD

/// The sysfs (and procfs) reads and writes `iommuctl` makes: a seam so the binding logic can be
/// tested on a model of the kernel's driver-binding files.
public protocol SysfsAccess: Sendable {
    /// A small attribute, whitespace-trimmed.
    func read(_ path: String) -> Result<String, Errno>
    /// Writes an attribute whole (one `write`).
    func write(_ path: String, _ value: String) -> Result<Void, Errno>
    func readlink(_ path: String) -> Result<String, Errno>
    /// Names in a directory, sorted.
    func list(_ path: String) -> Result<[String], Errno>
}

/// The real sysfs, through the package's ``KernelInterface``.
public struct LinuxSysfs: SysfsAccess {
    let kernel: any KernelInterface
    public init(kernel: any KernelInterface = LinuxKernel()) { self.kernel = kernel }

    public func read(_ path: String) -> Result<String, Errno> { kernel.readTextFile(path).map(\.trimmed) }
    public func write(_ path: String, _ value: String) -> Result<Void, Errno> { kernel.writeTextFile(path, value) }
    public func readlink(_ path: String) -> Result<String, Errno> { kernel.readlink(path) }
    public func list(_ path: String) -> Result<[String], Errno> { kernel.listDirectory(path) }
}

extension SysfsAccess {
    func text(_ path: String) -> String? { if case .success(let s) = read(path) { s } else { nil } }
    func names(_ path: String) -> [String] { if case .success(let n) = list(path) { n } else { [] } }
    /// The last component of a symlink's target (a driver, a group number, an IOMMU name).
    func linkName(_ path: String) -> String? {
        guard case .success(let target) = readlink(path) else { return nil }
        return target.split(separator: "/").last.map(String.init)
    }
    func exists(_ path: String) -> Bool {
        if case .success = list(path) { return true }
        if case .success = readlink(path) { return true }
        if case .success = read(path) { return true }
        return false
    }

    /// Writes `value` to `path` or throws ``IOMMUFDError`` (operation `sysfs`) naming the path.
    func set(_ path: String, _ value: String) throws(IOMMUFDError) {
        if case .failure(let e) = write(path, value) { throw IOMMUFDError(.sysfs, reason: .kernel(e, subject: path)) }
    }
}

/// What sysfs says about one PCI function.
public struct PCIDeviceEntry: Codable, Hashable, Sendable {
    /// `DDDD:BB:DD.F`.
    public var address: String
    /// `0x1234`.
    public var vendor: String
    public var device: String
    /// The class code, `0x00ff00`.
    public var pciClass: String
    /// The bound driver; `nil` when none.
    public var driver: String?
    public var iommuGroup: Int?
    /// `nil` when sysfs says -1 (no node).
    public var numaNode: Int?
    /// The IOMMU translating it (`dmar0`), from `/sys/bus/pci/devices/BDF/iommu`.
    public var iommu: String?
    /// Its VFIO cdev name (`vfio0`), when bound to a VFIO driver with cdev support.
    public var vfioDevice: String?
}

/// One IOMMU from `/sys/class/iommu`.
public struct IOMMUEntry: Codable, Hashable, Sendable {
    public var name: String
    /// Names of the devices it translates (PCI addresses for PCI functions).
    public var devices: [String]
    /// Vendor attributes sysfs shows (`intel-iommu/cap`, `amd-iommu/features`, ...), by file name.
    public var attributes: [String: String]
}

/// Reads the PCI functions and IOMMUs of this machine from sysfs.
public struct SysfsInventory: Sendable {
    public let sysfs: any SysfsAccess
    public init(sysfs: any SysfsAccess = LinuxSysfs()) { self.sysfs = sysfs }

    /// One function; `nil` when sysfs has no such device.
    public func device(_ address: PCIAddress) -> PCIDeviceEntry? {
        let base = address.sysfsPath
        guard let vendor = sysfs.text(base + "/vendor"), let device = sysfs.text(base + "/device") else { return nil }
        return PCIDeviceEntry(
            address: address.description, vendor: vendor, device: device,
            pciClass: sysfs.text(base + "/class") ?? "",
            driver: sysfs.linkName(base + "/driver"),
            iommuGroup: sysfs.linkName(base + "/iommu_group").flatMap { Int($0) },
            numaNode: sysfs.text(base + "/numa_node").flatMap { Int($0) }.flatMap { $0 >= 0 ? $0 : nil },
            iommu: sysfs.linkName(base + "/iommu"),
            vfioDevice: sysfs.names(base + "/vfio-dev").first { $0.hasPrefix("vfio") })
    }

    /// Every PCI function, in address order.
    public func devices() -> [PCIDeviceEntry] {
        sysfs.names("/sys/bus/pci/devices").compactMap(PCIAddress.init)
            .sorted { ($0.domain, $0.bus, $0.device, $0.function) < ($1.domain, $1.bus, $1.device, $1.function) }
            .compactMap(device)
    }

    /// Every IOMMU in `/sys/class/iommu`, with its vendor attributes.
    public func iommus() -> [IOMMUEntry] {
        sysfs.names("/sys/class/iommu").map { name in
            let base = "/sys/class/iommu/" + name
            var attributes: [String: String] = [:]
            for vendor in ["intel-iommu", "amd-iommu"] {
                for file in sysfs.names(base + "/" + vendor) {
                    if let value = sysfs.text(base + "/" + vendor + "/" + file) { attributes[vendor + "/" + file] = value }
                }
            }
            return IOMMUEntry(name: name, devices: sysfs.names(base + "/devices"), attributes: attributes)
        }
    }

    /// The other functions in `address`'s IOMMU group.
    public func groupPeers(of address: PCIAddress) -> [String] {
        guard let group = sysfs.linkName(address.sysfsPath + "/iommu_group") else { return [] }
        return sysfs.names("/sys/kernel/iommu_groups/\(group)/devices").filter { $0 != address.description }
    }
}
