#if canImport(Glibc)
import Glibc
#endif

/// A PCI function's address, `DDDD:BB:DD.F`, as sysfs names it.
public struct PCIAddress: Hashable, Sendable, CustomStringConvertible, LosslessStringConvertible {
    public var domain: UInt16
    public var bus: UInt8
    public var device: UInt8
    public var function: UInt8

    public init(domain: UInt16 = 0, bus: UInt8, device: UInt8, function: UInt8) {
        self.domain = domain
        self.bus = bus
        self.device = device
        self.function = function
    }

    /// Parses `DDDD:BB:DD.F` or `BB:DD.F` (domain 0), hex digits of exactly those widths as
    /// sysfs writes them; `nil` when malformed or out of range.
    public init?(_ text: String) {
        guard text.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else { return nil }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2 || parts.count == 3 else { return nil }
        let domain = parts.count == 3 ? UInt16(parts[0], radix: 16) : 0
        let devfn = parts[parts.count - 1].split(separator: ".", omittingEmptySubsequences: false)
        guard let domain, devfn.count == 2,
              parts.count == 2 || parts[0].count == 4, parts[parts.count - 2].count == 2,
              devfn[0].count == 2, devfn[1].count == 1,
              let bus = UInt8(parts[parts.count - 2], radix: 16),
              let device = UInt8(devfn[0], radix: 16), device < 32,
              let function = UInt8(devfn[1], radix: 10), function < 8
        else { return nil }
        self.init(domain: domain, bus: bus, device: device, function: function)
    }

    public var description: String {
        func hex(_ v: some BinaryInteger, _ width: Int) -> String {
            let s = String(v, radix: 16)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(hex(domain, 4)):\(hex(bus, 2)):\(hex(device, 2)).\(function)"
    }

    /// `/sys/bus/pci/devices/DDDD:BB:DD.F`.
    public var sysfsPath: String { "/sys/bus/pci/devices/\(description)" }

    /// The VFIO cdev of this function (`/dev/vfio/devices/vfioN`), from sysfs.
    /// - Throws: ``IOMMUFDError`` with operation `sysfs` when the function is not bound to a VFIO
    ///   driver with cdev support.
    public func vfioDevicePath(kernel: any KernelInterface = LinuxKernel()) throws(IOMMUFDError) -> String {
        let dir = sysfsPath + "/vfio-dev"
        guard let entries = Sysfs.list(dir, kernel), let name = entries.first(where: { $0.hasPrefix("vfio") }) else {
            throw IOMMUFDError(.sysfs, reason: .invalidArgument("\(self) has no VFIO cdev (\(dir)); is it bound to vfio-pci?"))
        }
        return "/dev/vfio/devices/" + name
    }

    /// The NUMA node sysfs reports for the function, or `nil` when it has none (`-1`).
    public func numaNode(kernel: any KernelInterface = LinuxKernel()) -> Int? {
        guard let text = Sysfs.read(sysfsPath + "/numa_node", kernel), let n = Int(text), n >= 0 else { return nil }
        return n
    }

    /// Vendor and device id from sysfs.
    public func ids(kernel: any KernelInterface = LinuxKernel()) -> (vendor: UInt16, device: UInt16)? {
        guard let v = Sysfs.read(sysfsPath + "/vendor", kernel).flatMap({ UInt16($0.dropFirst(2), radix: 16) }),
              let d = Sysfs.read(sysfsPath + "/device", kernel).flatMap({ UInt16($0.dropFirst(2), radix: 16) })
        else { return nil }
        return (v, d)
    }

    /// The driver the function is bound to now, if any.
    public func driver(kernel: any KernelInterface = LinuxKernel()) -> String? {
        guard case .success(let target) = kernel.readlink(sysfsPath + "/driver") else { return nil }
        return target.split(separator: "/").last.map(String.init)
    }

    /// Every PCI function with the given vendor and device id, in address order.
    public static func all(vendor: UInt16, device: UInt16, kernel: any KernelInterface = LinuxKernel()) -> [PCIAddress] {
        (Sysfs.list("/sys/bus/pci/devices", kernel) ?? []).compactMap(PCIAddress.init)
            .filter { $0.ids(kernel: kernel).map { $0.vendor == vendor && $0.device == device } ?? false }
            .sorted { ($0.domain, $0.bus, $0.device, $0.function) < ($1.domain, $1.bus, $1.device, $1.function) }
    }
}

/// Binds a PCI function to vfio-pci for as long as the value lives, then gives it back to the
/// driver it had (or leaves it unbound if it had none).
///
/// Writes `driver_override`, `unbind` and `drivers_probe` in sysfs; needs root.
public struct VFIOPCIBinding: ~Copyable {
    public let address: PCIAddress
    /// The driver the function had before, restored at the end.
    public let previousDriver: String?
    private let kernel: any KernelInterface

    /// - Throws: ``IOMMUFDError`` with operation `sysfs` and the `errno` of the failing write.
    public init(_ address: PCIAddress, kernel: any KernelInterface = LinuxKernel()) throws(IOMMUFDError) {
        self.address = address
        self.kernel = kernel
        self.previousDriver = address.driver(kernel: kernel)
        if previousDriver == "vfio-pci" { return }
        let base = address.sysfsPath
        try Sysfs.write(base + "/driver_override", "vfio-pci", kernel)
        if previousDriver != nil { try Sysfs.write(base + "/driver/unbind", address.description, kernel) }
        try Sysfs.write("/sys/bus/pci/drivers_probe", address.description, kernel)
        guard address.driver(kernel: kernel) == "vfio-pci" else {
            throw IOMMUFDError(.sysfs, reason: .unexpectedResult("\(address) did not bind to vfio-pci"))
        }
    }

    deinit {
        guard previousDriver != "vfio-pci" else { return }
        let base = address.sysfsPath
        try? Sysfs.write(base + "/driver/unbind", address.description, kernel)
        try? Sysfs.write(base + "/driver_override", "\n", kernel)
        if previousDriver != nil { try? Sysfs.write("/sys/bus/pci/drivers_probe", address.description, kernel) }
    }
}

/// Small sysfs reads and writes, through a ``KernelInterface`` like every other system call.
enum Sysfs {
    static func read(_ path: String, _ kernel: any KernelInterface) -> String? {
        guard case .success(let text) = kernel.readTextFile(path) else { return nil }
        return text.trimmed
    }

    static func write(_ path: String, _ value: String, _ kernel: any KernelInterface) throws(IOMMUFDError) {
        if case .failure(let e) = kernel.writeTextFile(path, value) { throw IOMMUFDError(.sysfs, errno: e) }
    }

    static func list(_ path: String, _ kernel: any KernelInterface) -> [String]? {
        if case .success(let names) = kernel.listDirectory(path) { names } else { nil }
    }
}
