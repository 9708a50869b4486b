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
    public func vfioDevicePath() throws(IOMMUFDError) -> String {
        let dir = sysfsPath + "/vfio-dev"
        guard let entries = Sysfs.list(dir), let name = entries.first(where: { $0.hasPrefix("vfio") }) else {
            throw IOMMUFDError(.sysfs, reason: .invalidArgument("\(self) has no VFIO cdev (\(dir)); is it bound to vfio-pci?"))
        }
        return "/dev/vfio/devices/" + name
    }

    /// The NUMA node sysfs reports for the function, or `nil` when it has none (`-1`).
    public func numaNode() -> Int? {
        guard let text = Sysfs.read(sysfsPath + "/numa_node"), let n = Int(text), n >= 0 else { return nil }
        return n
    }

    /// Vendor and device id from sysfs.
    public func ids() -> (vendor: UInt16, device: UInt16)? {
        guard let v = Sysfs.read(sysfsPath + "/vendor").flatMap({ UInt16($0.dropFirst(2), radix: 16) }),
              let d = Sysfs.read(sysfsPath + "/device").flatMap({ UInt16($0.dropFirst(2), radix: 16) })
        else { return nil }
        return (v, d)
    }

    /// The driver the function is bound to now, if any.
    public func driver() -> String? {
        Syscalls.readlink(sysfsPath + "/driver").flatMap { $0.split(separator: "/").last.map(String.init) }
    }

    /// Every PCI function with the given vendor and device id, in address order.
    public static func all(vendor: UInt16, device: UInt16) -> [PCIAddress] {
        (Sysfs.list("/sys/bus/pci/devices") ?? []).compactMap(PCIAddress.init)
            .filter { $0.ids().map { $0.vendor == vendor && $0.device == device } ?? false }
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

    /// - Throws: ``IOMMUFDError`` with operation `sysfs` and the `errno` of the failing write.
    public init(_ address: PCIAddress) throws(IOMMUFDError) {
        self.address = address
        self.previousDriver = address.driver()
        if previousDriver == "vfio-pci" { return }
        let base = address.sysfsPath
        try Sysfs.write(base + "/driver_override", "vfio-pci")
        if previousDriver != nil { try Sysfs.write(base + "/driver/unbind", address.description) }
        try Sysfs.write("/sys/bus/pci/drivers_probe", address.description)
        guard address.driver() == "vfio-pci" else {
            throw IOMMUFDError(.sysfs, reason: .unexpectedResult("\(address) did not bind to vfio-pci"))
        }
    }

    deinit {
        guard previousDriver != "vfio-pci" else { return }
        let base = address.sysfsPath
        try? Sysfs.write(base + "/driver/unbind", address.description)
        try? Sysfs.write(base + "/driver_override", "\n")
        if previousDriver != nil { try? Sysfs.write("/sys/bus/pci/drivers_probe", address.description) }
    }
}

/// Small sysfs reads and writes through the package's syscall choke point.
enum Sysfs {
    static func read(_ path: String) -> String? {
        guard case .success(let fd) = Syscalls.open(path, O_RDONLY) else { return nil }
        defer { _ = Syscalls.close(fd) }
        var bytes = [UInt8](repeating: 0, count: 4096)
        guard case .success(let n) = bytes.withUnsafeMutableBytes({ Syscalls.read(fd, $0) }) else { return nil }
        return String(decoding: bytes[..<n], as: UTF8.self).trimmingCharacters()
    }

    static func write(_ path: String, _ value: String) throws(IOMMUFDError) {
        let fd: CInt
        switch Syscalls.open(path, O_WRONLY) {
        case .success(let f): fd = f
        case .failure(let e): throw IOMMUFDError(.sysfs, errno: e)
        }
        defer { _ = Syscalls.close(fd) }
        var text = value
        let r = text.withUTF8 { Syscalls.write(fd, UnsafeRawBufferPointer($0)) }
        if case .failure(let e) = r { throw IOMMUFDError(.sysfs, errno: e) }
    }

    static func list(_ path: String) -> [String]? { Syscalls.listDirectory(path) }
}

extension String {
    fileprivate func trimmingCharacters() -> String {
        var s = Substring(self)
        while let c = s.last, c.isWhitespace { s.removeLast() }
        while let c = s.first, c.isWhitespace { s.removeFirst() }
        return String(s)
    }
}
