#if canImport(Glibc)
import Glibc
#endif
import Histogram
public import IOMMUCapabilities
import IOMMUFD
import IOMMUMirror
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
    /// The planner's placement (`starts group 0`, `joins group 0`).
    public var assignment: String
}

/// One target of the mirror engine and its counters.
public struct MirrorTargetEntry: Codable, Hashable, Sendable {
    public var name: String
    /// `ioas` or `page table`.
    public var kind: String
    /// The IOAS id (IOAS targets).
    public var ioas: UInt32?
    /// The devices attached to it (IOAS targets).
    public var devices: [String]
    /// Calls into the target: for an IOAS one ioctl each.
    public var calls: Int
    public var maps: Int
    public var unmaps: Int
    public var bytesMapped: UInt64
    public var bytesUnmapped: UInt64
    public var transientUnmaps: Int
    public var failures: Int
}

/// One change the engine applied.
public struct MirrorChangeEntry: Codable, Hashable, Sendable {
    /// `resync`, `invalidate 0x2000000 +4096`.
    public var change: String
    /// `applied`, `unchanged`, `refused`, ...
    public var status: String
    public var maps: Int
    public var unmaps: Int
    public var transientUnmaps: Int
}

/// One DMA through the mirror.
public struct MirrorDMAEntry: Codable, Hashable, Sendable {
    public var device: String
    /// What the device did (`copy 0x2002000 -> 0x4001000`).
    public var transfer: String
    public var bytes: Int
    /// The bytes at the destination equal the source's.
    public var equal: Bool
}

/// One DMA to an IOVA the guest unmapped.
public struct MirrorRefusalEntry: Codable, Hashable, Sendable {
    public var device: String
    public var iova: String
    /// Guest memory behind the old translation was left unchanged.
    public var memoryUnchanged: Bool
    /// The IOMMU's fault record from `/dev/kmsg` (needs root), when one was seen.
    public var fault: String?
}

/// The engine's counters.
public struct MirrorMetricsEntry: Codable, Hashable, Sendable {
    public var changesIn: Int
    public var changesRefused: Int
    public var operationsElided: Int
    public var leavesRefused: Int
    /// Per change, planning and every target's calls, in microseconds.
    public var latencyP50Microseconds: Double
    public var latencyP99Microseconds: Double
}

/// What `iommuctl mirror` did and saw.
public struct MirrorReport: Codable, Hashable, Sendable {
    public var kernelRelease: String
    public var knownIOCTLs: Int
    public var iommufdIOCTLs: Int
    /// The guest platform the devices were checked against.
    public var guest: String
    public var devices: [MirrorDeviceEntry]
    /// The devices the mirror serves (all planned edu devices, or the one `--device` names).
    public var mirroredDevices: [String]
    /// `shared`: one IOAS for every device (the planner put them in one group); `perDevice`.
    public var ioasLayout: String
    /// Why, in words.
    public var ioasDecision: String
    /// `KernelBehaviour.probe`'s answer.
    public var kernelBehaviour: String
    /// Guest RAM is a memfd and the IOAS targets map it by `IOMMU_IOAS_MAP_FILE`.
    public var mapFile: Bool
    public var guestRAMBytes: Int
    /// The guest's translations (coalesced runs of its VT-d table).
    public var guestTable: [String]
    /// The host table's format and its translations walked back after the first sync.
    public var hostTableFormat: String
    public var hostTable: [String]
    /// The host table walked back equals the guest's table, after the sync and after the change.
    public var hostTableMatches: Bool
    public var hostTableMatchesAfterChange: Bool
    public var targets: [MirrorTargetEntry]
    public var changes: [MirrorChangeEntry]
    public var dma: [MirrorDMAEntry]
    public var refusedAfterUnmap: [MirrorRefusalEntry]
    public var newMapping: [MirrorDMAEntry]
    public var metrics: MirrorMetricsEntry
    /// `checkInvariants()`'s violations: empty when the shadows and targets agree.
    public var invariantViolations: [String]
}

/// A device the mirror drives; a class so two can be held at once.
final class MirroredEdu {
    let edu: EduDevice
    init(_ edu: consuming EduDevice) { self.edu = edu }
}

/// The guest's layout: guest RAM from guest-physical 0, its tables in the last MiB.
enum MirrorLayout {
    static let ramBytes = 16 << 20
    static let tables: ClosedRange<UInt64> = 0xF0_0000...0xFF_FFFF
    /// Four 4 KiB leaves (one area once coalesced) and one 2 MiB leaf; inside the edu's 28-bit mask.
    static let smallIOVA: UInt64 = 0x200_0000, smallGPA: UInt64 = 0x1_0000
    static let largeIOVA: UInt64 = 0x400_0000, largeGPA: UInt64 = 0x20_0000
    /// The leaf the guest adds in its change.
    static let newIOVA: UInt64 = 0x600_0000, newGPA: UInt64 = 0x40_0000
}

/// The `mirror` command: the host IOMMU behind every edu device and the guest platform checked
/// against it (the planner's groups decide the IOAS layout), then guest RAM in a memfd, a guest
/// VT-d second-stage table built in it, and the mirror engine in page-table mode keeping the
/// devices' IOAS and a host AMD v1 table equal to it; edu DMA through the mirror on every
/// device, a guest change (unmap and invalidate, map and invalidate) after which the unmapped
/// IOVA is refused and the new one works; the engine's metrics and invariant check.
///
/// Costs a few hundred ioctls and, on edu, about 0.1 s of virtual time per DMA.
/// - Parameter device: The only edu function to mirror for; `nil` takes every edu on vfio-pci.
/// - Throws: ``ToolError`` when there is no edu device or a proof fails;
///   ``IOMMUFDError`` from the kernel.
public func runMirror(device: PCIAddress? = nil, iommufdPath: String = "/dev/iommu") throws -> MirrorReport {
    let shared = SharedIOMMUFDContext(try IOMMUFDContext(path: iommufdPath))
    let features = shared.iommufd.probeFeatures()
    let addresses = EduDevice.all()
    let inventory = SysfsInventory()
    if let device {
        _ = try vfioCdev(for: device, inventory: inventory)
        guard addresses.contains(device) else {
            let ids = device.ids().map { "\(hex($0.vendor, width: 4, prefix: false)):\(hex($0.device, width: 4, prefix: false))" } ?? "?"
            throw ToolError("\(device) (\(ids)) is not QEMU's edu device (1234:11e8): the mirror's DMA proof needs one")
        }
    }
    let bound = addresses.filter { inventory.device($0)?.vfioDevice != nil }
    guard !bound.isEmpty else {
        throw ToolError("no edu DMA device (PCI 1234:11e8) is bound to vfio-pci",
                        hints: ["`iommuctl bind DEVICE` binds one; the test VM has two: `iommuctl mirror --vm`"])
    }

    // 1. The host IOMMU behind every edu device, the guest platform checked against it, and the
    //    planner's groups (one IOAS per group).
    let guest = GuestRequirements.intelVTdSecondStage(levels: 4, guestPhysicalAddressBits: 39)
    var planner = DevicePlanner(requirements: guest)
    var devices: [MirrorDeviceEntry] = []
    for address in bound {
        let edu = try EduDevice(address, boundTo: shared.iommufd)
        let raw = try shared.iommufd.hardwareInfo(of: edu.device)
        let report: HardwareInfoReport
        do { report = try HardwareInfoReport(raw) } catch { throw ToolError("\(address): \(error)") }
        let host = HostIOMMUCapabilities(report: report)
        devices.append(MirrorDeviceEntry(
            address: address.description, numaNode: address.numaNode(), hardwareInfoType: raw.type.description,
            registers: HardwareInfoEntry.registers(report.info), host: HostCapabilitiesEntry(host),
            plan: check(guest, host).plan.description,
            assignment: planner.add(device: address.description, host: host).description))
    }
    let chosen = device.map { [$0.description] } ?? bound.map(\.description)
    let groups = planner.groups.map { $0.devices.filter(chosen.contains) }.filter { !$0.isEmpty }
    guard !groups.isEmpty else {
        throw ToolError("the planner refused every device for the guest: " + devices.map { "\($0.address): \($0.assignment)" }.joined(separator: "; "))
    }
    let shared1 = groups.count == 1 && groups[0].count > 1
    let decision: String
    if chosen.count == 1 {
        decision = "one device (\(chosen[0])): one IOAS"
    } else if shared1 {
        decision = "the planner put \(groups[0].joined(separator: " and ")) in one group (same host IOMMU and plan): one shared IOAS"
    } else {
        decision = "the planner made \(groups.count) groups: one IOAS each"
    }

    // 2. Guest RAM: one memfd, mapped here; the IOAS targets map it by IOMMU_IOAS_MAP_FILE.
    let behaviour = try KernelBehaviour.probe(shared.iommufd)
    let memfd: CInt
    switch LinuxKernel().memfdCreate("iommuctl-guest-ram", flags: 1) {
    case .success(let fd): memfd = fd
    case .failure(let errno): throw ToolError("memfd_create for guest RAM failed: \(errno)")
    }
    defer { close(memfd) }
    guard ftruncate(memfd, off_t(MirrorLayout.ramBytes)) == 0 else { throw ToolError("ftruncate of guest RAM failed: errno \(errno)") }
    guard let base = mmap(nil, MirrorLayout.ramBytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0), base != MAP_FAILED else {
        throw ToolError("mmap of guest RAM failed: errno \(errno)")
    }
    defer { munmap(base, MirrorLayout.ramBytes) }
    var ram = GuestRAM()
    try ram.add(MirrorMemoryRegion(guestPhysical: GuestPhysicalAddress(0), length: UInt64(MirrorLayout.ramBytes),
                                   host: HostAddress(base), file: MirrorFileBacking(descriptor: memfd, offset: 0)))
    let bytes = UnsafeMutableRawBufferPointer(start: base, count: MirrorLayout.ramBytes)

    // 3. The devices, each attached to its group's IOAS; one IOAS target per group, and the host table.
    var edus: [MirroredEdu] = []
    var targets: [any MirrorTarget] = []
    var entries: [MirrorTargetEntry] = []
    for (g, members) in groups.enumerated() {
        let ioas = try shared.iommufd.allocateIOAS()
        for name in members {
            guard let address = PCIAddress(name) else { continue }
            let edu = MirroredEdu(try EduDevice(address, boundTo: shared.iommufd))
            _ = try edu.edu.vfio.attach(to: ioas)
            try edu.edu.enableBusMaster()
            edus.append(edu)
        }
        let name = groups.count == 1 ? "ioas" : "ioas\(g)"
        targets.append(try IOASTarget(name: name, context: shared, ioas: ioas, behaviour: behaviour))
        entries.append(MirrorTargetEntry(name: name, kind: "ioas", ioas: ioas.rawValue, devices: members, calls: 0, maps: 0,
                                         unmaps: 0, bytesMapped: 0, bytesUnmapped: 0, transientUnmaps: 0, failures: 0))
    }
    let amd = try AMDv1(levels: 4)
    let hostTable = try PageTableTarget(name: "amd-v1", format: amd)
    targets.append(hostTable)
    entries.append(MirrorTargetEntry(name: "amd-v1", kind: "page table", ioas: nil, devices: [], calls: 0, maps: 0,
                                     unmaps: 0, bytesMapped: 0, bytesUnmapped: 0, transientUnmaps: 0, failures: 0))
    defer { for e in edus { try? e.edu.vfio.detach() } }

    var report = MirrorReport(
        kernelRelease: kernelRelease(), knownIOCTLs: features.supported.count,
        iommufdIOCTLs: IoctlRequest.iommufdRequests.count, guest: "VT-d, 4-level second-stage tables, 39-bit guest-physical",
        devices: devices, mirroredDevices: groups.flatMap { $0 }, ioasLayout: shared1 ? "shared" : "perDevice",
        ioasDecision: decision, kernelBehaviour: behaviour.description, mapFile: behaviour.mapFile,
        guestRAMBytes: MirrorLayout.ramBytes, guestTable: [], hostTableFormat: "AMD v1, 4 levels", hostTable: [],
        hostTableMatches: false, hostTableMatchesAfterChange: false, targets: entries, changes: [], dma: [],
        refusedAfterUnmap: [], newMapping: [],
        metrics: MirrorMetricsEntry(changesIn: 0, changesRefused: 0, operationsElided: 0, leavesRefused: 0,
                                    latencyP50Microseconds: 0, latencyP99Microseconds: 0),
        invariantViolations: [])

    // 4. The guest's table, built in guest RAM, and the engine in page-table mode.
    let vtd = try VTdSecondStage(levels: 4)
    let writable = MutableGuestMemoryBuffer(base: GuestPhysicalAddress(0), buffer: bytes)
    var table = try PageTableBuilder(format: vtd, memory: writable, allocator: BumpTableAllocator(
        range: try GuestPhysicalRange(first: GuestPhysicalAddress(MirrorLayout.tables.lowerBound),
                                      last: GuestPhysicalAddress(MirrorLayout.tables.upperBound))))
    for k: UInt64 in 0..<4 {
        try table.map(IOVA(MirrorLayout.smallIOVA + k * 0x1000), to: GuestPhysicalAddress(MirrorLayout.smallGPA + k * 0x1000),
                      size: .size4K, permissions: .readWrite)
    }
    try table.map(IOVA(MirrorLayout.largeIOVA), to: GuestPhysicalAddress(MirrorLayout.largeGPA), size: .size2M, permissions: .readWrite)
    var engine = try MirrorEngine(
        mode: .pageTable(vtd, root: table.root), memory: ram, targets: targets,
        configuration: .init(space: try IOVARange(first: IOVA(0), last: EduDevice.highestIOVA)))

    var batch = MirrorBatch(), result = MirrorBatchResult()
    func apply(_ changes: [(MirrorChange, String)]) throws {
        batch.removeAll()
        for (c, _) in changes { batch.append(c) }
        engine.apply(batch, into: &result)
        for (i, (_, what)) in changes.enumerated() {
            let o = result.changes[i]
            report.changes.append(MirrorChangeEntry(change: what, status: "\(o.status)", maps: o.maps, unmaps: o.unmaps,
                                                    transientUnmaps: o.transientUnmaps))
            guard o.status == .applied || o.status == .unchanged else {
                let why = o.refusal.map { ": \($0)" } ?? result.targets.compactMap(\.failure).map { ": \($0)" }.first ?? ""
                throw ToolError("the mirror engine did not apply \(what): \(o.status)\(why)")
            }
        }
    }
    func walkedMatch() throws -> (guest: [String], host: [String]) {
        let g = TranslationRun.coalescing(try table.walker().extents()).map(\.description)
        let h = TranslationRun.coalescing(try PageTableWalker(format: amd, memory: hostTable.memory, root: hostTable.root).extents())
            .map(\.description)
        return (g, h)
    }
    try apply([(.resync, "resync")])
    let first = try walkedMatch()
    report.guestTable = first.guest
    report.hostTable = first.host
    report.hostTableMatches = first.guest == first.host

    // 5. Edu DMA through the mirror: each device copies a page of its own from the 4 KiB leaves
    //    into the 2 MiB leaf.
    let page = EduDevice.bufferSize
    for (i, e) in edus.enumerated() {
        let from = MirrorLayout.smallIOVA + UInt64(1 + i) * 0x1000, fromGPA = Int(MirrorLayout.smallGPA) + (1 + i) * 0x1000
        let to = MirrorLayout.largeIOVA + UInt64(1 + i) * 0x1000, toGPA = Int(MirrorLayout.largeGPA) + (1 + i) * 0x1000
        let message = Array("DMA through the mirror by \(e.edu.address) ".utf8)
        for k in 0..<page { bytes[fromGPA + k] = message[k % message.count] }
        for k in 0..<page { bytes[toGPA + k] = 0 }
        guard try e.edu.dma(.toDevice, iova: IOVA(from), count: page), try e.edu.dma(.toMemory, iova: IOVA(to), count: page) else {
            throw ToolError("the edu DMA engine of \(e.edu.address) did not finish")
        }
        let equal = bytes[toGPA..<(toGPA + page)].elementsEqual(bytes[fromGPA..<(fromGPA + page)])
        report.dma.append(MirrorDMAEntry(device: e.edu.address.description, transfer: "copy \(hex(from)) -> \(hex(to))",
                                         bytes: page, equal: equal))
    }

    // 6. The guest's change: it unmaps its first 4 KiB leaf and invalidates it, maps a new leaf
    //    and invalidates that; one batch through the engine.
    _ = try table.unmap(try IOVARange(base: IOVA(MirrorLayout.smallIOVA), length: 4096))
    try table.map(IOVA(MirrorLayout.newIOVA), to: GuestPhysicalAddress(MirrorLayout.newGPA), size: .size4K, permissions: .readWrite)
    try apply([(.invalidate(iova: IOVA(MirrorLayout.smallIOVA), length: 4096), "unmap + invalidate \(hex(MirrorLayout.smallIOVA)) +4096"),
               (.invalidate(iova: IOVA(MirrorLayout.newIOVA), length: 4096), "map + invalidate \(hex(MirrorLayout.newIOVA)) +4096")])
    let after = try walkedMatch()
    report.hostTableMatchesAfterChange = after.guest == after.host

    // The unmapped IOVA: the device writes to it; guest memory stays as it was, the IOMMU logs a fault.
    let oldGPA = Int(MirrorLayout.smallGPA)
    for e in edus {
        for k in 0..<page { bytes[oldGPA + k] = 0xEE }
        let log = KernelLog()
        _ = try e.edu.dma(.toMemory, iova: IOVA(MirrorLayout.smallIOVA), count: page)
        let fault = log.waitFor(["DMAR", "fault addr \(hex(MirrorLayout.smallIOVA))"], seconds: 3)
        report.refusedAfterUnmap.append(MirrorRefusalEntry(
            device: e.edu.address.description, iova: hex(MirrorLayout.smallIOVA),
            memoryUnchanged: bytes[oldGPA..<(oldGPA + page)].allSatisfy { $0 == 0xEE },
            fault: fault.map { String(($0.split(separator: ";", maxSplits: 1).last ?? Substring($0)).prefix { $0 != "\n" }) }))
    }
    // The new leaf: a round trip through it on every device.
    let newGPA = Int(MirrorLayout.newGPA)
    for (i, e) in edus.enumerated() {
        for k in 0..<page { bytes[newGPA + k] = UInt8(truncatingIfNeeded: k * 7 + i * 31 + 1) }
        let sent = Array(bytes[newGPA..<(newGPA + page)])
        guard try e.edu.dma(.toDevice, iova: IOVA(MirrorLayout.newIOVA), count: page) else {
            throw ToolError("the edu DMA engine of \(e.edu.address) did not finish")
        }
        for k in 0..<page { bytes[newGPA + k] = 0 }
        guard try e.edu.dma(.toMemory, iova: IOVA(MirrorLayout.newIOVA), count: page) else {
            throw ToolError("the edu DMA engine of \(e.edu.address) did not finish")
        }
        report.newMapping.append(MirrorDMAEntry(device: e.edu.address.description, transfer: "round trip \(hex(MirrorLayout.newIOVA))",
                                                bytes: page, equal: bytes[newGPA..<(newGPA + page)].elementsEqual(sent)))
    }

    // 7. The engine's metrics and invariant check.
    let m = engine.metrics
    for (t, c) in m.targets.enumerated() where t < report.targets.count {
        report.targets[t].calls = c.calls
        report.targets[t].maps = c.maps
        report.targets[t].unmaps = c.unmaps
        report.targets[t].bytesMapped = c.bytesMapped
        report.targets[t].bytesUnmapped = c.bytesUnmapped
        report.targets[t].transientUnmaps = c.transientUnmaps
        report.targets[t].failures = c.failures
    }
    report.metrics = MirrorMetricsEntry(
        changesIn: m.changesIn, changesRefused: m.changesRefused, operationsElided: m.operationsElided, leavesRefused: m.leavesRefused,
        latencyP50Microseconds: Double(m.latency.valueAtPercentile(50)) / 1000,
        latencyP99Microseconds: Double(m.latency.valueAtPercentile(99)) / 1000)
    report.invariantViolations = engine.checkInvariants().map(\.description)

    if let bad = report.dma.first(where: { !$0.equal }) { throw ToolError("DMA through the mirror did not arrive: \(bad.device) \(bad.transfer)") }
    if let bad = report.refusedAfterUnmap.first(where: { !$0.memoryUnchanged }) {
        throw ToolError("DMA by \(bad.device) reached guest memory after the guest's unmap of \(bad.iova)")
    }
    if let bad = report.newMapping.first(where: { !$0.equal }) { throw ToolError("the guest's new mapping did not work: \(bad.device) \(bad.transfer)") }
    return report
}
