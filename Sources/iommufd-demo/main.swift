// The main job: what the host IOMMU behind each DMA device offers, whether a guest platform can
// be supplied on it, and software mirroring of a guest's IO page table with real DMA.
//
// Runs where /dev/iommu and edu devices bound to vfio-pci exist: the test VM of Harness/, or a
// machine set up like it (`Harness/demo.sh` picks).
#if canImport(Glibc)
import Glibc
#endif
import IOMMUCapabilities
import IOMMUFD
import IOPageTables
import QEMUDevices

func section(_ title: String) { print("\n== \(title)") }

func fail(_ message: String) -> Never {
    print("demo: \(message)")
    exit(1)
}

func microseconds(since start: timespec) -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec - start.tv_sec) * 1e6 + Double(now.tv_nsec - start.tv_nsec) / 1e3
}

func run() throws {
    var name = utsname()
    uname(&name)
    let release = withUnsafeBytes(of: name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    let iommufd = try IOMMUFDContext()
    let features = iommufd.probeFeatures()
    print("kernel \(release): /dev/iommu knows \(features.supported.count) of \(IoctlRequest.iommufdRequests.count) iommufd ioctls")

    // 1. The host IOMMU behind every device, and the guest platform checked against it.
    section("devices and their IOMMU")
    let addresses = EduDevice.all()
    guard let first = addresses.first else { fail("no edu device bound to vfio-pci") }
    let guest = GuestRequirements.intelVTdSecondStage(levels: 4, guestPhysicalAddressBits: 39)
    var planner = DevicePlanner(requirements: guest)
    for address in addresses {
        let edu = try EduDevice(address, boundTo: iommufd)
        let raw = try iommufd.hardwareInfo(of: edu.device)
        let report = try HardwareInfoReport(raw)
        let host = HostIOMMUCapabilities(report: report)
        print("\(address) (NUMA node \(address.numaNode().map(String.init) ?? "none")): \(raw.type) IOMMU, "
              + "IOVA \(host.inputAddressBits) bits, pages \(host.pageSizes), nesting \(!host.nestedStages.isEmpty), "
              + "dirty tracking \(host.dirtyTracking)")
        if case .intelVTd(let vtd) = report.info {
            print("  VT-d cap 0x\(String(vtd.capability.rawValue, radix: 16)) ecap 0x\(String(vtd.extendedCapability.rawValue, radix: 16))")
        }
        let result = check(guest, host)
        print("  guest VT-d with 4-level second-stage tables: \(result.plan)")
        print("  planner: \(planner.add(device: address.description, host: host))")
    }

    // 2. A guest's own IO page table, walked and mirrored into a kernel-managed IOAS.
    section("software mirroring with real DMA through VT-d")
    let ram = try DMABuffer(memfdLength: 16 << 20, name: "guest-ram")
    let edu = try EduDevice(first, boundTo: iommufd)
    let ioas = try iommufd.allocateIOAS()
    try edu.vfio.attach(to: ioas)
    try edu.enableBusMaster()
    let guestBase = ram.address
    // The guest's memory is the buffer's bytes, valid for this closure: the guest table lives
    // there, and the device reads and writes there through the mirrored IOVAs.
    try ram.withUnsafeMutableBytes { bytes in
        try mirrorAndDMA(iommufd, ioas, edu, guestMemory: bytes, guestBase: guestBase)
    }
    try edu.vfio.detach()
}

/// Builds a guest VT-d second-stage table in guest memory, mirrors its leaves into `ioas`,
/// has the device copy through the mirrored IOVAs, then follows the guest's unmap.
func mirrorAndDMA(
    _ iommufd: borrowing IOMMUFDContext, _ ioas: IOASID, _ edu: borrowing EduDevice,
    guestMemory bytes: UnsafeMutableRawBufferPointer, guestBase: HostAddress
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
    var start = timespec()
    clock_gettime(CLOCK_MONOTONIC, &start)
    var mirrored: [(IOVARange, HostRange)] = []
    let walk = try guestTable.walker().walk { extent in mirrored.append((extent.input, try! HostRange(
        base: guestBase.advanced(by: extent.output.rawValue)!, length: extent.size.bytes))) }
    for (iova, host) in mirrored {
        _ = try iommufd.map(host, into: ioas, at: iova.first)
    }
    let elapsed = Int(microseconds(since: start).rounded())
    print("guest table: \(walk.leaves) leaves in \(walk.tablesVisited) tables walked and mirrored in \(elapsed) µs")
    for (iova, host) in mirrored { print("  IOVA \(iova) -> guest memory +0x\(String(host.first.rawValue - guestBase.rawValue, radix: 16))") }

    // The device reads the guest's 4 KiB page and writes it into the middle of the 2 MiB page.
    let message = Array("DMA through a mirrored guest IO page table".utf8)
    for (i, b) in message.enumerated() { bytes[0x30_0000 + i] = b }
    guard try edu.dma(.toDevice, iova: small.first, count: 4096),
          try edu.dma(.toMemory, iova: IOVA(0x20_1000), count: 4096)
    else { fail("the edu DMA engine did not finish") }
    let arrived = Array(bytes[0x80_1000..<0x80_1000 + message.count])
    print("edu copied guest IOVA \(small.first) -> \(IOVA(0x20_1000)): guest memory at 0x801000 reads "
          + "\"\(String(decoding: arrived, as: UTF8.self))\" (\(arrived == message ? "equal" : "DIFFERENT"))")
    guard arrived == message else { fail("DMA through the mirror did not arrive") }

    // The guest unmaps its 4 KiB page and invalidates it; the mirror follows; DMA is refused.
    _ = try guestTable.unmap(small)
    var stillMapped = 0
    _ = try guestTable.walker().walk(small) { _ in stillMapped += 1 }
    if stillMapped == 0 { _ = try iommufd.unmap(small, from: ioas) }
    bytes[0x30_0000..<0x30_1000].initializeMemory(as: UInt8.self, repeating: 0xee)
    _ = try edu.dma(.toMemory, iova: small.first, count: 4096)
    let untouched = bytes[0x30_0000..<0x30_1000].allSatisfy { $0 == 0xee }
    print("after the guest's unmap and invalidation: DMA to \(small.first) \(untouched ? "refused by the IOMMU, guest memory unchanged" : "REACHED MEMORY")")
    guard untouched else { fail("DMA reached memory after unmap") }
}

do {
    try run()
    print("\ndemo: done")
} catch {
    fail("\(error)")
}
