#if canImport(Glibc)
import Glibc
#endif
import IOMMUFD
import Histogram
import IOMMUMirror
import IOPageTables

/// How much `iommuctl bench` measures. The defaults take about a minute in the test VM (QEMU
/// TCG); a host with a real IOMMU runs them in seconds.
public struct BenchOptions: Codable, Hashable, Sendable {
    /// 4 KiB areas per map/unmap round.
    public var areas4K: Int
    /// 2 MiB areas per round (hugetlb-backed when free 2 MiB pages are reserved).
    public var areas2M: Int
    /// 1 GiB areas per round; only with reserved 1 GiB pages.
    public var areas1G: Int
    /// Measured rounds of each map/unmap case (one more, uncounted, warms up).
    public var rounds: Int
    /// Areas a second IOAS gets by IOAS_COPY and, in turn, by a second IOAS_MAP.
    public var copyAreas: Int
    /// Changes the mirror engine applies per target (half maps, half unmaps).
    public var mirrorChanges: Int
    /// Also measure with a mock-IOMMU domain attached where the kernel has the test IOMMU.
    public var mockDomain: Bool

    public init(areas4K: Int = 256, areas2M: Int = 16, areas1G: Int = 1, rounds: Int = 3, copyAreas: Int = 64,
                mirrorChanges: Int = 2000, mockDomain: Bool = true) {
        self.areas4K = areas4K
        self.areas2M = areas2M
        self.areas1G = areas1G
        self.rounds = rounds
        self.copyAreas = copyAreas
        self.mirrorChanges = mirrorChanges
        self.mockDomain = mockDomain
    }

    /// - Throws: ``ToolError`` (usage) for a count below its minimum.
    public func validate() throws(ToolError) {
        for (name, value, least) in [("--areas-4k", areas4K, 1), ("--areas-2m", areas2M, 0), ("--areas-1g", areas1G, 0),
                                     ("--rounds", rounds, 1), ("--copy-areas", copyAreas, 0), ("--mirror-changes", mirrorChanges, 0)]
        where value < least {
            throw ToolError("\(name) must be at least \(least), not \(value)", status: .usage)
        }
        if areas2M > 512 || areas1G > 1 {
            throw ToolError("at most 512 areas of 2 MiB and 1 of 1 GiB fit the IOVA window the mock IOMMU accepts (1 to 2 GiB)",
                            status: .usage)
        }
        if areas4K > 4096 || copyAreas > 4096 {
            throw ToolError("--areas-4k and --copy-areas take at most 4096", status: .usage)
        }
    }
}

/// One measured case: a kind of call, timed one at a time.
public struct BenchCase: Codable, Hashable, Sendable {
    /// `map`, `copy` or `mirror`.
    public var group: String
    /// What was done: `map 4 KiB areas, singly`, `second IOAS by IOAS_COPY, 2 MiB areas`.
    public var name: String
    /// `none` (no domain attached), `mock` (a mock-IOMMU domain), or the mirror's target.
    public var domain: String
    /// What backs the memory: `4 KiB pages`, `2 MiB hugetlb`, `1 GiB hugetlb`.
    public var backing: String
    /// Timed operations (ioctls, or engine changes).
    public var operations: Int
    public var bytesPerOperation: UInt64
    public var medianNanoseconds: Double
    public var p99Nanoseconds: Double
    public var meanNanoseconds: Double

    public init(group: String, name: String, domain: String, backing: String, operations: Int, bytesPerOperation: UInt64,
                medianNanoseconds: Double, p99Nanoseconds: Double, meanNanoseconds: Double) {
        self.group = group
        self.name = name
        self.domain = domain
        self.backing = backing
        self.operations = operations
        self.bytesPerOperation = bytesPerOperation
        self.medianNanoseconds = medianNanoseconds
        self.p99Nanoseconds = p99Nanoseconds
        self.meanNanoseconds = meanNanoseconds
    }
}

/// A case that could not run here, and why (what the kernel answered).
public struct BenchSkip: Codable, Hashable, Sendable {
    public var name: String
    public var reason: String

    public init(name: String, reason: String) {
        self.name = name
        self.reason = reason
    }
}

/// The reserved huge pages of one size, as sysfs said before the run.
public struct BenchHugePages: Codable, Hashable, Sendable {
    public var size: String
    public var reserved: Int
    public var free: Int

    public init(size: String, reserved: Int, free: Int) {
        self.size = size
        self.reserved = reserved
        self.free = free
    }
}

/// What `iommuctl bench` measured.
public struct BenchReport: Codable, Hashable, Sendable {
    public var kernelRelease: String
    public var iommufd: String
    /// `vm` inside the bundled test VM, else `host`.
    public var machine: String
    public var mockIOMMU: Bool
    public var options: BenchOptions
    public var hugePages: [BenchHugePages]
    public var cases: [BenchCase]
    public var skipped: [BenchSkip]

    public init(kernelRelease: String, iommufd: String, machine: String, mockIOMMU: Bool, options: BenchOptions,
                hugePages: [BenchHugePages], cases: [BenchCase], skipped: [BenchSkip]) {
        self.kernelRelease = kernelRelease
        self.iommufd = iommufd
        self.machine = machine
        self.mockIOMMU = mockIOMMU
        self.options = options
        self.hugePages = hugePages
        self.cases = cases
        self.skipped = skipped
    }

    /// A summary table, then the skipped cases.
    public var text: String {
        var out = ["kernel \(kernelRelease) (\(machine)), \(iommufd); mock IOMMU: \(yesNo(mockIOMMU)); huge pages: "
                   + (hugePages.isEmpty ? "none" : hugePages.map { "\($0.size) \($0.free) free of \($0.reserved)" }.joined(separator: ", "))]
        var table = TextTable(headers: ["case", "domain", "backing", "ops", "median", "p99", "mean"])
        for c in cases {
            table.rows.append([c.name, c.domain, c.backing, String(c.operations), duration(c.medianNanoseconds),
                               duration(c.p99Nanoseconds), duration(c.meanNanoseconds)])
        }
        out.append(table.render())
        for s in skipped { out.append("skipped: \(s.name): \(s.reason)") }
        return out.joined(separator: "\n")
    }
}

/// `1.23 us`, `456 ns`, `7.8 ms`.
func duration(_ ns: Double) -> String {
    func r(_ v: Double, _ digits: Double) -> String { "\((v * digits).rounded() / digits)" }
    if ns >= 1e6 { return r(ns / 1e6, 100) + " ms" }
    if ns >= 1e4 { return r(ns / 1e3, 10) + " us" }
    if ns >= 1e3 { return r(ns / 1e3, 100) + " us" }
    return r(ns, 1) + " ns"
}

/// `4 KiB`, `2 MiB`, `1 GiB`.
func sizeLabel(_ size: PageSize) -> String {
    let shift = Int(size.shift)
    return shift >= 30 ? "\(1 << (shift - 30)) GiB" : shift >= 20 ? "\(1 << (shift - 20)) MiB" : "\(1 << (shift - 10)) KiB"
}

/// Order statistics of timed operations.
struct Timings {
    var values: [Double] = []
    mutating func add(_ ns: Double) { values.append(ns) }
    func result(group: String, name: String, domain: String, backing: String, bytes: UInt64) -> BenchCase {
        let s = values.sorted()
        let median = s.isEmpty ? 0 : (s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2)
        let p99 = s.isEmpty ? 0 : s[min(s.count - 1, Int((Double(s.count) * 0.99).rounded(.up)) - 1)]
        return BenchCase(group: group, name: name, domain: domain, backing: backing, operations: s.count, bytesPerOperation: bytes,
                         medianNanoseconds: median, p99Nanoseconds: p99,
                         meanNanoseconds: s.isEmpty ? 0 : s.reduce(0, +) / Double(s.count))
    }
}

func monotonicNanoseconds() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
}

/// Times `body` in nanoseconds.
@inline(__always)
func timed<E: Error>(_ body: () throws(E) -> Void) throws(E) -> Double {
    let t = monotonicNanoseconds()
    try body()
    return Double(monotonicNanoseconds() - t)
}

/// Where the benchmark's IOVAs start: 1 GiB, inside the mock IOMMU's aperture (16 MiB to 2 GiB)
/// and aligned for a 1 GiB area.
let benchIOVABase: UInt64 = 1 << 30

/// The benchmark's steps, named so a progress display can show them before each runs.
struct BenchStep {
    var label: String
    var run: () throws -> Void
}

/// `iommuctl bench`: through the library on the real kernel, map/unmap of 4 KiB, 2 MiB and
/// (with reserved 1 GiB pages) 1 GiB areas, one at a time and as one range, on an IOAS with
/// no domain and with a mock-IOMMU domain; a second IOAS filled by `IOMMU_IOAS_COPY` against a
/// second `IOMMU_IOAS_MAP`; the mirror engine (request mode) into the null target and into a
/// kernel IOAS. Every operation is timed on its own (`CLOCK_MONOTONIC`); cases report counts,
/// medians, p99 and means.
///
/// Costs about `rounds * (areas4K + areas2M + areas1G) * 4` ioctls per domain, plus the copy
/// and mirror cases; huge pages it finds free are used and given back.
/// - Parameter progress: Called before each step with its index, the number of steps and its
///   label, and once more with index == total at the end.
/// - Throws: ``IOMMUFDError`` from the kernel (no /dev/iommu, a map refused), ``ToolError``.
///
/// The corresponding ioctls are `IOMMU_IOAS_ALLOC`, `IOMMU_IOAS_MAP`, `IOMMU_IOAS_UNMAP`,
/// `IOMMU_IOAS_COPY`, `IOMMU_IOAS_IOVA_RANGES` and `IOMMU_TEST_CMD` (the mock device).
public func runBench(_ options: BenchOptions, iommufdPath: String = "/dev/iommu", sysfs: any SysfsAccess = LinuxSysfs(),
                     progress: (Int, Int, String) -> Void = { _, _, _ in }) throws -> BenchReport {
    try options.validate()
    let ctx = SharedIOMMUFDContext(try IOMMUFDContext(path: iommufdPath))
    let mock = ctx.iommufd.hasMockIOMMU
    let huge = [PageSize.size2M, .size1G].compactMap { size -> BenchHugePages? in
        let dir = "/sys/kernel/mm/hugepages/hugepages-\(size.bytes >> 10)kB"
        guard let reserved = sysfs.text(dir + "/nr_hugepages").flatMap({ Int($0) }) else { return nil }
        return BenchHugePages(size: sizeLabel(size), reserved: reserved, free: sysfs.text(dir + "/free_hugepages").flatMap { Int($0) } ?? 0)
    }
    var report = BenchReport(kernelRelease: kernelRelease(), iommufd: iommufdPath, machine: VMHarness.insideVM ? "vm" : "host",
                             mockIOMMU: mock, options: options, hugePages: huge, cases: [], skipped: [])
    let domains = mock && options.mockDomain ? ["none", "mock"] : ["none"]
    if !mock && options.mockDomain {
        report.skipped.append(BenchSkip(name: "mock-IOMMU domain cases",
                                        reason: "this kernel has no test IOMMU (CONFIG_IOMMUFD_TEST): IOMMU_TEST_CMD is unknown"))
    }

    /// A fresh IOAS, with a mock device (and so a domain) attached for `mock`.
    func ioas(_ domain: String) throws(IOMMUFDError) -> IOASID {
        let id = try ctx.iommufd.allocateIOAS()
        if domain == "mock" { _ = try ctx.iommufd.addMockDevice(to: PageTableID(id)) }
        return id
    }

    var steps: [BenchStep] = []
    let sizes: [(PageSize, Int)] = [(.size4K, options.areas4K), (.size2M, options.areas2M), (.size1G, options.areas1G)]
    for domain in domains {
        for (size, count) in sizes where count > 0 {
            steps.append(BenchStep(label: "map/unmap \(sizeLabel(size)) areas, domain \(domain)") {
                let backing: PageSize? = size == .size4K ? nil : size
                let buffer: DMABuffer
                do {
                    buffer = try DMABuffer(length: Int(size.bytes) * count, hugePages: backing, populate: true)
                } catch {
                    if size == .size2M {
                        // No 2 MiB pages reserved: 2 MiB areas are still worth measuring, over 4 KiB pages.
                        report.skipped.append(BenchSkip(name: "\(sizeLabel(size)) hugetlb backing, domain \(domain)",
                                                        reason: "\(error); 2 MiB areas measured over 4 KiB pages instead"))
                        let plain = try DMABuffer(length: Int(size.bytes) * count, populate: true)
                        try mapCases(ctx, try ioas(domain), plain, size: size, count: count, rounds: options.rounds,
                                     domain: domain, backing: "4 KiB pages", into: &report.cases)
                    } else {
                        let sizes = sysfs.names("/sys/kernel/mm/hugepages")
                        let why = sizes.contains("hugepages-1048576kB")
                            ? "none of them is free: reserve one, hugepagesz=1G hugepages=1 on the kernel command line or "
                                + "`echo 1 > /sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages`"
                            : "this kernel has no 1 GiB huge page size (sysfs lists \(sizes.isEmpty ? "none" : sizes.joined(separator: ", "))): boot it with "
                                + "hugepagesz=1G hugepages=1, on a CPU that has 1 GiB pages (x86: the pdpe1gb flag)"
                        report.skipped.append(BenchSkip(name: "\(sizeLabel(size)) areas, domain \(domain)", reason: "\(error); \(why)"))
                    }
                    return
                }
                try mapCases(ctx, try ioas(domain), buffer, size: size, count: count, rounds: options.rounds,
                             domain: domain, backing: backing.map { "\(sizeLabel($0)) hugetlb" } ?? "4 KiB pages", into: &report.cases)
            })
        }
        if options.copyAreas > 0 {
            for size in [PageSize.size4K, .size2M] {
                steps.append(BenchStep(label: "IOAS_COPY vs IOAS_MAP, \(sizeLabel(size)) areas, domain \(domain)") {
                    try copyCases(ctx, ioas: { () throws(IOMMUFDError) in try ioas(domain) }, size: size,
                                  count: size == .size4K ? options.copyAreas : max(1, options.copyAreas / 8),
                                  domain: domain, into: &report.cases)
                })
            }
        }
    }
    if options.mirrorChanges > 0 {
        steps.append(BenchStep(label: "mirror engine, null target") {
            report.cases.append(try mirrorCase(targets: [NullTarget()], host: nil, changes: options.mirrorChanges, domain: "null target"))
        })
        let domain = domains.last!
        steps.append(BenchStep(label: "mirror engine, kernel IOAS (domain \(domain))") {
            let id = try ioas(domain)
            let target = try IOASTarget(name: "bench", context: ctx, ioas: id, behaviour: try KernelBehaviour.probe(ctx.iommufd))
            let pages = (options.mirrorChanges + 1) / 2
            let memory = try DMABuffer(length: pages * Int(PageSize.size4K.bytes), populate: true)
            report.cases.append(try mirrorCase(targets: [target], host: memory.address, changes: options.mirrorChanges,
                                               domain: "IOAS, domain \(domain)"))
            _ = try ctx.iommufd.unmapAll(from: id)
        })
    }
    for (i, step) in steps.enumerated() {
        progress(i, steps.count, step.label)
        try step.run()
    }
    progress(steps.count, steps.count, "done")
    return report
}

/// `rounds` (+1 warm-up) rounds of: each area mapped at its own fixed IOVA, one ioctl each;
/// each unmapped; then the whole buffer mapped as one area and unmapped.
func mapCases(_ ctx: SharedIOMMUFDContext, _ ioas: IOASID, _ buffer: borrowing DMABuffer, size: PageSize, count: Int, rounds: Int,
              domain: String, backing: String, into cases: inout [BenchCase]) throws(IOMMUFDError) {
    let base = buffer.address.rawValue, all = buffer.range
    let areas = (0..<count).map { k in
        (try! HostRange(base: HostAddress(base + UInt64(k) * size.bytes), length: size.bytes),
         try! IOVARange(base: IOVA(benchIOVABase + UInt64(k) * size.bytes), length: size.bytes))
    }
    let whole = try! IOVARange(base: IOVA(benchIOVABase), length: UInt64(count) * size.bytes)
    var map = Timings(), unmap = Timings(), mapRange = Timings(), unmapRange = Timings()
    for round in 0...rounds {
        var m = Timings(), u = Timings(), mr = Timings(), ur = Timings()
        for (host, iova) in areas { m.add(try timed { () throws(IOMMUFDError) in _ = try ctx.iommufd.map(host, into: ioas, at: iova.first) }) }
        for (_, iova) in areas { u.add(try timed { () throws(IOMMUFDError) in _ = try ctx.iommufd.unmap(iova, from: ioas) }) }
        mr.add(try timed { () throws(IOMMUFDError) in _ = try ctx.iommufd.map(all, into: ioas, at: whole.first) })
        ur.add(try timed { () throws(IOMMUFDError) in _ = try ctx.iommufd.unmap(whole, from: ioas) })
        guard round > 0 else { continue }
        map.values += m.values; unmap.values += u.values; mapRange.values += mr.values; unmapRange.values += ur.values
    }
    let total = UInt64(count) * size.bytes
    cases.append(map.result(group: "map", name: "map \(sizeLabel(size)) areas, singly", domain: domain, backing: backing, bytes: size.bytes))
    cases.append(unmap.result(group: "map", name: "unmap \(sizeLabel(size)) areas, singly", domain: domain, backing: backing, bytes: size.bytes))
    cases.append(mapRange.result(group: "map", name: "map \(count) x \(sizeLabel(size)) as one range", domain: domain, backing: backing, bytes: total))
    cases.append(unmapRange.result(group: "map", name: "unmap \(count) x \(sizeLabel(size)) as one range", domain: domain, backing: backing, bytes: total))
}

/// `count` areas of `size` mapped into a first IOAS; a second IOAS gets each by
/// `IOMMU_IOAS_COPY` and a third by a second `IOMMU_IOAS_MAP`, the two calls in turn (which
/// goes first alternates), each timed.
func copyCases(_ ctx: SharedIOMMUFDContext, ioas: () throws(IOMMUFDError) -> IOASID, size: PageSize, count: Int, domain: String,
               into cases: inout [BenchCase]) throws(IOMMUFDError) {
    let buffer = try DMABuffer(length: Int(size.bytes) * count, populate: true)
    let (a, b, c) = (try ioas(), try ioas(), try ioas())
    var copy = Timings(), map = Timings()
    for k in 0..<count {
        let host = try! HostRange(base: HostAddress(buffer.address.rawValue + UInt64(k) * size.bytes), length: size.bytes)
        let iova = try! IOVARange(base: IOVA(benchIOVABase + UInt64(k) * size.bytes), length: size.bytes)
        _ = try ctx.iommufd.map(host, into: a, at: iova.first)
        func doCopy() throws(IOMMUFDError) { copy.add(try timed { () throws(IOMMUFDError) in _ = try ctx.iommufd.copy(iova, from: a, to: b, at: iova.first) }) }
        func doMap() throws(IOMMUFDError) { map.add(try timed { () throws(IOMMUFDError) in _ = try ctx.iommufd.map(host, into: c, at: iova.first) }) }
        if k % 2 == 0 { try doCopy(); try doMap() } else { try doMap(); try doCopy() }
    }
    for id in [a, b, c] { _ = try ctx.iommufd.unmapAll(from: id) }
    cases.append(copy.result(group: "copy", name: "second IOAS by IOAS_COPY, \(sizeLabel(size)) areas", domain: domain, backing: "4 KiB pages", bytes: size.bytes))
    cases.append(map.result(group: "copy", name: "second IOAS by IOAS_MAP, \(sizeLabel(size)) areas", domain: domain, backing: "4 KiB pages", bytes: size.bytes))
}

/// The mirror engine in request mode: `changes / 2` one-page maps then as many unmaps, in
/// batches of 32; the engine's own per-change latency histogram (planning and target calls).
func mirrorCase(targets: [any MirrorTarget], host: HostAddress?, changes: Int, domain: String) throws -> BenchCase {
    let n = max(1, changes / 2)
    let page = PageSize.size4K.bytes
    var ram = GuestRAM()
    try ram.add(MirrorMemoryRegion(guestPhysical: GuestPhysicalAddress(0), length: UInt64(n) * page,
                                   host: host ?? HostAddress(0x7000_0000_0000)))
    var engine = try MirrorEngine(mode: .requests, memory: ram, targets: targets,
                                  configuration: .init(space: try IOVARange(first: IOVA(benchIOVABase), last: IOVA((2 << 30) - 1)),
                                                       shadowCapacity: n + 16))
    var batch = MirrorBatch(capacity: 32)
    var result = MirrorBatchResult(capacity: 32)
    var total = 0.0
    for phase in 0..<2 {
        var i = 0
        while i < n {
            batch.removeAll()
            for k in i..<min(i + 32, n) {
                let iova = IOVA(benchIOVABase + UInt64(k) * page)
                batch.append(phase == 0 ? .map(iova: iova, length: page, guestPhysical: GuestPhysicalAddress(UInt64(k) * page), permissions: .readWrite)
                                        : .unmap(iova: iova, length: page))
            }
            total += timed { engine.apply(batch, into: &result) }
            if let bad = result.changes.first(where: { $0.status != .applied }) {
                throw ToolError("the mirror engine did not apply a change into \(domain): \(bad)")
            }
            i += 32
        }
    }
    let h = engine.metrics.latency
    let violations = engine.checkInvariants()
    if !violations.isEmpty { throw ToolError("the mirror engine's invariants broke: \(violations)") }
    return BenchCase(group: "mirror", name: "mirror engine, one-page changes", domain: domain, backing: "4 KiB pages",
                     operations: 2 * n, bytesPerOperation: page,
                     medianNanoseconds: Double(h.valueAtPercentile(50)), p99Nanoseconds: Double(h.valueAtPercentile(99)),
                     meanNanoseconds: total / Double(2 * n))
}

/// The progress display of `iommuctl bench`: a bar redrawn in place on a terminal, one plain
/// line a step otherwise (a log, a pipe, the VM's captured standard error).
public struct BenchProgressLine: Sendable {
    public var terminal: Bool
    public var width: Int

    public init(terminal: Bool, width: Int = 24) {
        self.terminal = terminal
        self.width = width
    }

    /// What to write for step `index` of `total` (`index == total` at the end): on a terminal a
    /// carriage return, the bar and the label, cleared to the end of the line, and a newline at
    /// the end; otherwise `bench: [3/12] label` and a newline.
    public func render(_ index: Int, _ total: Int, _ label: String) -> String {
        guard terminal else { return "bench: [\(index)/\(total)] \(label)\n" }
        let filled = total == 0 ? width : index * width / total
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        return "\r[\(bar)] \(index)/\(total) \(label)\u{1B}[K" + (index == total ? "\n" : "")
    }
}
