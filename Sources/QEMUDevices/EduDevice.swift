#if canImport(Glibc)
import Glibc
#endif
public import IOMMUFD

/// QEMU's `edu` teaching device (PCI 1234:11e8) driven through VFIO: a 4 KiB buffer inside the
/// device at device address 0x40000 and a DMA engine that copies between it and an IOVA.
///
/// The DMA-capable device of the test VM (`Harness/run-in-vm.sh`). Registers from QEMU's
/// `docs/specs/edu.rst`: 0x00 identification, 0x04 liveness (reads back the inverse), 0x24
/// interrupt status, 0x60 raise interrupt, 0x64 acknowledge, 0x80/0x88/0x90/0x98 DMA source,
/// destination, count and command. Its DMA mask is 28 bits: IOVAs must be below 256 MiB.
public struct EduDevice: ~Copyable {
    public static let vendor: UInt16 = 0x1234
    public static let deviceID: UInt16 = 0x11e8
    /// Where the device's own buffer sits in its address space.
    public static let bufferAddress: UInt64 = 0x40000
    /// Bytes in the device's buffer.
    public static let bufferSize = 4096
    /// The highest IOVA the device can reach (a 28-bit DMA mask).
    public static let highestIOVA = IOVA((1 << 28) - 1)

    public let address: PCIAddress
    public let vfio: VFIODevice
    /// The device's id in the iommufd it is bound to.
    public let device: DeviceID
    public let bar0: VFIORegionInfo
    public let config: VFIORegionInfo

    /// Every edu function bound to vfio-pci, in address order.
    public static func all() -> [PCIAddress] { PCIAddress.all(vendor: vendor, device: deviceID) }

    /// Opens the device's VFIO cdev and binds it to `iommufd` (a cdev answers nothing but
    /// `VFIO_DEVICE_BIND_IOMMUFD` until it is bound). DMA stays blocked until it is attached.
    public init(_ address: PCIAddress, boundTo iommufd: borrowing IOMMUFDContext) throws(IOMMUFDError) {
        let vfio = try VFIODevice(pciAddress: address)
        let device = try vfio.bind(to: iommufd)
        let bar0 = try vfio.regionInfo(.bar(0))
        let config = try vfio.regionInfo(.config)
        self.address = address
        self.device = device
        self.bar0 = bar0
        self.config = config
        self.vfio = vfio
    }

    /// The identification register: 0x010000ed for edu version 1.0.
    public func identification() throws(IOMMUFDError) -> UInt32 { try vfio.read(UInt32.self, region: bar0, offset: 0) }

    /// Sets the bus-master bit of the PCI command register so the device may issue DMA.
    public func enableBusMaster() throws(IOMMUFDError) {
        let command = try vfio.read(UInt16.self, region: config, offset: 4)
        try vfio.write(command | 0x4, region: config, offset: 4)
    }

    public enum Direction: Sendable { case toDevice, toMemory }

    /// Runs one DMA between `iova` and the device buffer at `deviceOffset` and waits for the
    /// engine to finish (edu completes a transfer on a 100 ms virtual-time timer).
    ///
    /// - Returns: `false` when the engine did not finish within `timeout` seconds.
    /// - Throws: ``IOMMUFDError`` before touching the device when the transfer leaves the device
    ///   buffer or the IOVA range passes the 28-bit DMA mask; register access errors.
    public func dma(
        _ direction: Direction, iova: IOVA, deviceOffset: Int = 0, count: Int, raiseInterrupt: Bool = false,
        timeout: Double = 10
    ) throws(IOMMUFDError) -> Bool {
        guard count > 0, deviceOffset >= 0, deviceOffset <= Self.bufferSize, count <= Self.bufferSize - deviceOffset else {
            throw IOMMUFDError(.edu, reason: .invalidArgument("\(count) bytes at \(deviceOffset) leave the 4 KiB device buffer"))
        }
        guard let last = iova.advanced(by: UInt64(count - 1)), last <= Self.highestIOVA else {
            throw IOMMUFDError(.edu, reason: .invalidArgument("IOVA \(iova) + \(count) passes the 28-bit DMA mask"))
        }
        let inDevice = Self.bufferAddress + UInt64(deviceOffset)
        let (source, destination) = direction == .toDevice ? (iova.rawValue, inDevice) : (inDevice, iova.rawValue)
        try vfio.write(source, region: bar0, offset: 0x80)
        try vfio.write(destination, region: bar0, offset: 0x88)
        try vfio.write(UInt64(count), region: bar0, offset: 0x90)
        let command: UInt64 = 0x1 | (direction == .toMemory ? 0x2 : 0) | (raiseInterrupt ? 0x4 : 0)
        try vfio.write(command, region: bar0, offset: 0x98)
        let deadline = Self.now() + timeout
        while Self.now() < deadline {
            if try vfio.read(UInt64.self, region: bar0, offset: 0x98) & 1 == 0 { return true }
            usleep(1_000)
        }
        return false
    }

    private static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }
}

extension IOMMUFDError.Operation {
    /// Driving the edu device.
    public static let edu = Self(rawValue: "edu")
}
