#if canImport(Glibc)
import Glibc
#endif
public import IOMMUCapabilities
import IOPageTables
import QEMUDevices

/// One device as the mirror run saw it.
public struct MirrorDeviceEntry: Codable, Hashable, Sendable {
    public var address: String
    public var numaNode: Int?
    /// `IOMMU_GET_HW_INFO`'s type (`intelVTd`).
    public var hardwareInfoType: String
    public var registers: [String: String]
    public var host: HostCapabilitiesEntry
    /// The requirement check's plan for the guest below.
    public var plan: String
    public var assignment: String
}

/// One guest leaf mirrored into the IOAS.
public struct MirroredMapping: Codable, Hashable, Sendable {
    /// `0x100000`.
    public var iova: String
    public var length: UInt64
    /// Where in guest memory it points (`0x300000`).
    public var guestAddress: String
}

/// What `iommuctl mirror` did and saw.
public struct MirrorReport: Codable, Hashable, Sendable {
    public var kernelRelease: String
    public var knownIOCTLs: Int
    public var iommufdIOCTLs: Int
    /// The guest platform the devices were checked against.
    public var guest: String
    public var devices: [MirrorDeviceEntry]
    /// The device that did the DMA.
    public var dmaDevice: String
    public var leaves: Int
    public var tablesVisited: Int
    /// Walking the guest table and mapping its leaves, in microseconds.
    public var mirrorMicroseconds: Int
    public var mappings: [MirroredMapping]
    /// The bytes the device copied through the mirrored IOVAs.
    public var message: String
    /// What guest memory held at the destination afterwards.
    public var arrived: String
    public var dmaArrived: Bool
    /// After the guest's unmap: the device's write to the unmapped IOVA left guest memory unchanged.
    public var dmaRefusedAfterUnmap: Bool
}

/// The `mirror` command: the host IOMMU behind every edu device, the guest platform checked
/// against it, then a guest VT-d second-stage table built in guest memory, walked and mirrored
/// into a kernel-managed IOAS, with the edu device copying through the mirrored IOVAs and being
/// refused after the guest unmaps.
///
/// The one function to replace when the IOMMUMirror engine takes over.
/// - Parameter device: The edu function for the DMA; `nil` takes the first edu on vfio-pci.
/// - Throws: ``ToolError`` when there is no edu device or the DMA proof fails;
///   ``IOMMUFDError`` from the kernel.
public func runMirror(device: PCIAddress? = nil, iommufdPath: String = "/dev/iommu") throws -> MirrorReport {
    let iommufd = try IOMMUFDContext(path: iommufdPath)
    let features = iommufd.probeFeatures()
    let addresses = EduDevice.all()
    let inventory = SysfsInventory()
    let first: PCIAddress
    if let device {
        _ = try vfioCdev(for: device, inventory: inventory)
        guard addresses.contains(device) else {
            let ids = device.ids().map { "\(hex($0.vendor, width: 4, prefix: false)):\(hex($0.device, width: 4, prefix: false))" } ?? "?"
            throw ToolError("\(device) (\(ids)) is not QEMU's edu device (1234:11e8): the mirror's DMA proof needs one")
        }
        first = device
    } else {
        guard let found = addresses.first(where: { inventory.device($0)?.vfioDevice != nil }) else {
            throw ToolError("no edu DMA device (PCI 1234:11e8) is bound to vfio-pci",
                            hints: ["`iommuctl bind DEVICE` binds one; the test VM has two: `iommuctl mirror --vm`"])
        }
        first = found
    }

    // 1. The host IOMMU behind every edu device, and the guest platform checked against it.
    let guest = GuestRequirements.intelVTdSecondStage(levels: 4, guestPhysicalAddressBits: 39)
    var planner = DevicePlanner(requirements: guest)
    var devices: [MirrorDeviceEntry] = []
    for address in addresses where inventory.device(address)?.vfioDevice != nil {
        let edu = try EduDevice(address, boundTo: iommufd)
        let raw = try iommufd.hardwareInfo(of: edu.device)
        let report: HardwareInfoReport
        do { report = try HardwareInfoReport(raw) } catch { throw ToolError("\(address): \(error)") }
        let host = HostIOMMUCapabilities(report: report)
        devices.append(MirrorDeviceEntry(
            address: address.description, numaNode: address.numaNode(), hardwareInfoType: raw.type.description,
            registers: HardwareInfoEntry.registers(report.info), host: HostCapabilitiesEntry(host),
            plan: check(guest, host).plan.description,
            assignment: planner.add(device: address.description, host: host).description))
    }

    // 2. A guest's own IO page table, walked and mirrored into a kernel-managed IOAS.
    let ram = try DMABuffer(memfdLength: 16 << 20, name: "guest-ram")
    let edu = try EduDevice(first, boundTo: iommufd)
    let ioas = try iommufd.allocateIOAS()
    try edu.vfio.attach(to: ioas)
    try edu.enableBusMaster()
    let guestBase = ram.address
    var result = MirrorReport(
        kernelRelease: kernelRelease(), knownIOCTLs: features.supported.count,
        iommufdIOCTLs: IoctlRequest.iommufdRequests.count, guest: "VT-d, 4-level second-stage tables, 39-bit guest-physical",
        devices: devices, dmaDevice: first.description, leaves: 0, tablesVisited: 0, mirrorMicroseconds: 0,
        mappings: [], message: "", arrived: "", dmaArrived: false, dmaRefusedAfterUnmap: false)
    // The guest's memory is the buffer's bytes, valid for this closure.
    try ram.withUnsafeMutableBytes { bytes in
        try mirrorAndDMA(iommufd, ioas, edu, guestMemory: bytes, guestBase: guestBase, into: &result)
    }
    try edu.vfio.detach()
    return result
}

/// Builds a guest VT-d second-stage table in guest memory, mirrors its leaves into `ioas`, has
/// the device copy through the mirrored IOVAs, then follows the guest's unmap.
func mirrorAndDMA(
    _ iommufd: borrowing IOMMUFDContext, _ ioas: IOASID, _ edu: borrowing EduDevice,
    guestMemory bytes: UnsafeMutableRawBufferPointer, guestBase: HostAddress, into result: inout MirrorReport
) throws {
    let guestRAM = MutableGuestMemoryBuffer(base: GuestPhysicalAddress(0), buffer: bytes)
    let tables = try GuestPhysicalRange(base: GuestPhysicalAddress(15 << 20), length: 1 << 20)
    var guestTable = try PageTableBuilder(format: VTdSecondStage(levels: 4, outputBits: 39), memory: guestRAM,
                                          allocator: BumpTableAllocator(range: tables))
    // The guest maps one 4 KiB page and one 2 MiB page for its device.
    let small = try IOVARange(base: IOVA(0x10_0000), length: 4096)
    let large = try IOVARange(base: IOVA(0x20_0000), length: 2 << 20)
    try guestTable.map(small.first, to: GuestPhysicalAddress(0x30_0000), size: .size4K, permissions: .readWrite)
    try guestTable.map(large.first, to: GuestPhysicalAddress(0x80_0000), size: .size2M, permissions: .readWrite)

    // Mirror: every leaf the walk finds becomes one IOAS mapping of the guest memory behind it.
    let start = monotonicMicroseconds()
    var mirrored: [(IOVARange, HostRange, UInt64, UInt64)] = []
    var rangeError: (any Error)?
    let walk = try guestTable.walker().walk { extent in
        do {
            let host = try HostRange(base: guestBase.advanced(by: extent.output.rawValue)!, length: extent.size.bytes)
            mirrored.append((extent.input, host, extent.output.rawValue, extent.size.bytes))
        } catch { rangeError = error }
    }
    if let rangeError { throw rangeError }
    for (iova, host, _, _) in mirrored { _ = try iommufd.map(host, into: ioas, at: iova.first) }
    result.mirrorMicroseconds = Int((monotonicMicroseconds() - start).rounded())
    result.leaves = walk.leaves
    result.tablesVisited = walk.tablesVisited
    result.mappings = mirrored.map { MirroredMapping(iova: hex($0.0.first.rawValue), length: $0.3, guestAddress: hex($0.2)) }

    // The device reads the guest's 4 KiB page and writes it into the middle of the 2 MiB page.
    let message = Array("DMA through a mirrored guest IO page table".utf8)
    for (i, b) in message.enumerated() { bytes[0x30_0000 + i] = b }
    guard try edu.dma(.toDevice, iova: small.first, count: 4096),
          try edu.dma(.toMemory, iova: IOVA(0x20_1000), count: 4096)
    else { throw ToolError("the edu DMA engine did not finish") }
    let arrived = Array(bytes[0x80_1000..<0x80_1000 + message.count])
    result.message = String(decoding: message, as: UTF8.self)
    result.arrived = String(decoding: arrived.map { $0 >= 0x20 && $0 < 0x7f ? $0 : UInt8(ascii: ".") }, as: UTF8.self)
    result.dmaArrived = arrived == message
    guard result.dmaArrived else { throw ToolError("DMA through the mirror did not arrive: guest memory reads \"\(result.arrived)\"") }

    // The guest unmaps its 4 KiB page and invalidates it; the mirror follows; DMA is refused.
    _ = try guestTable.unmap(small)
    var stillMapped = 0
    _ = try guestTable.walker().walk(small) { _ in stillMapped += 1 }
    if stillMapped == 0 { _ = try iommufd.unmap(small, from: ioas) }
    bytes[0x30_0000..<0x30_1000].initializeMemory(as: UInt8.self, repeating: 0xee)
    _ = try edu.dma(.toMemory, iova: small.first, count: 4096)
    result.dmaRefusedAfterUnmap = bytes[0x30_0000..<0x30_1000].allSatisfy { $0 == 0xee }
    guard result.dmaRefusedAfterUnmap else { throw ToolError("DMA reached guest memory after the guest's unmap") }
}

func monotonicMicroseconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) * 1e6 + Double(now.tv_nsec) / 1e3
}
