#if canImport(Glibc)
import Glibc
#endif
import IOMMUFD

/// QEMU's `edu` teaching device (PCI 1234:11e8) driven through VFIO: a 4 KiB buffer inside the
/// device at device address 0x40000 and a DMA engine that copies between it and an IOVA.
/// Registers from QEMU's docs/specs/edu.rst.
struct EduDevice: ~Copyable {
    static let vendor: UInt16 = 0x1234
    static let deviceID: UInt16 = 0x11e8
    /// Where the device's own buffer sits in its address space.
    static let bufferAddress: UInt64 = 0x40000
    static let bufferSize = 4096

    let vfio: VFIODevice
    let device: DeviceID
    let bar0: VFIORegionInfo
    let config: VFIORegionInfo

    /// Every edu function the harness bound to vfio-pci.
    static func all() -> [PCIAddress] { PCIAddress.all(vendor: vendor, device: deviceID) }

    /// Opens the device and binds it to `iommufd`: a VFIO cdev answers nothing but
    /// `VFIO_DEVICE_BIND_IOMMUFD` until it is bound.
    ///
    /// Suites run in parallel and a VFIO cdev takes one bind at a time (a second open file's
    /// bind answers `EINVAL`), so a value holds the edu devices for its whole lifetime: another
    /// test's `init` waits until this one ends.
    init(_ address: PCIAddress, boundTo iommufd: borrowing IOMMUFD) throws {
        Self.exclusive.wait()
        do {
            // The previous holder's file is closed just after it signals (its deinit body runs
            // before its members go): retry the bind's EINVAL for a moment.
            var attempt = 0
            var opened: VFIODevice?
            var bound: DeviceID?
            while bound == nil {
                let candidate = try VFIODevice(pciAddress: address)
                do {
                    bound = try candidate.bind(to: iommufd)
                    opened = consume candidate
                } catch let e where e.errno == .invalidArgument && attempt < 200 {
                    attempt += 1
                    usleep(10_000)
                }
            }
            let vfio = opened.take()!
            let device = bound!
            let bar0 = try vfio.regionInfo(.bar(0))
            let config = try vfio.regionInfo(.config)
            self.device = device
            self.bar0 = bar0
            self.config = config
            self.vfio = vfio
        } catch {
            Self.exclusive.signal()
            throw error
        }
    }

    deinit { Self.exclusive.signal() }

    /// One holder of the edu devices at a time, across suites.
    static let exclusive = Semaphore()

    /// The identification register: 0x010000ed for edu version 1.0.
    func identification() throws -> UInt32 { try vfio.read(UInt32.self, region: bar0, offset: 0) }

    /// Sets the bus-master bit of the PCI command register so the device may issue DMA.
    func enableBusMaster() throws {
        let command = try vfio.read(UInt16.self, region: config, offset: 4)
        try vfio.write(command | 0x4, region: config, offset: 4)
    }

    enum Direction { case toDevice, toMemory }

    /// Runs one DMA between `iova` and the device buffer and waits for the engine to finish
    /// (edu completes a transfer on a 100 ms virtual-time timer). Returns false on timeout.
    func dma(_ direction: Direction, iova: IOVA, deviceOffset: UInt64 = 0, count: Int) throws -> Bool {
        let device = Self.bufferAddress + deviceOffset
        switch direction {
        case .toDevice:
            try vfio.write(iova.rawValue, region: bar0, offset: 0x80)
            try vfio.write(device, region: bar0, offset: 0x88)
        case .toMemory:
            try vfio.write(device, region: bar0, offset: 0x80)
            try vfio.write(iova.rawValue, region: bar0, offset: 0x88)
        }
        try vfio.write(UInt64(count), region: bar0, offset: 0x90)
        try vfio.write(UInt64(direction == .toMemory ? 0x3 : 0x1), region: bar0, offset: 0x98)
        let deadline = monotonicSeconds() + 10
        while monotonicSeconds() < deadline {
            if try vfio.read(UInt64.self, region: bar0, offset: 0x98) & 1 == 0 { return true }
            usleep(2_000)
        }
        return false
    }
}

/// A counting semaphore of one (POSIX `sem_t`): no owner, so it may be released by another thread.
final class Semaphore: @unchecked Sendable {
    private let sem = UnsafeMutablePointer<sem_t>.allocate(capacity: 1)
    init() { sem_init(sem, 0, 1) }
    func wait() { while sem_wait(sem) != 0 {} }
    func signal() { sem_post(sem) }
}
