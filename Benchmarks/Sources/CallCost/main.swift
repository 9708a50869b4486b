// The cost of one map and one unmap call, with a C floor in the same run.
//
//   CallCost model [N]    allocations (and ns) per call on IOMMUFDModel, tracing off
//   CallCost stub [N]     the typed calls and the C floor with the ioctl stubbed out; run it
//                         under callgrind (Benchmarks/call-cost.sh) for instructions per call
//   CallCost kernel [R]   /dev/iommu (the test VM): one 4 KiB page mapped and unmapped at a
//                         fixed IOVA, Swift and C taking turns on one IOAS, without and with a
//                         mock-IOMMU domain; per-call times and the ratio Swift/C. Under
//                         callgrind, the user-space instructions of R real calls instead
//   CallCost suite [SCALE] /dev/iommu (the test VM): 4 KiB, 2 MiB and 1 GiB pages singly and as
//                         one range, random churn at batch sizes 1 to 256, IOAS_COPY against a
//                         second map; Swift and C in turn, no domain and a mock domain (Pages.swift).
//                         SCALE divides the counts (1: full; the quick report passes 4)
//
// With BENCH_JSON=FILE, every measurement is also appended to FILE as a line of JSON.
#if canImport(Glibc)
import Glibc
#endif
import CallCostFloor
import IOMMUFD
import IOMMUFDModel
import SystemPackage

let page = PageSize.system.bytes
let readWrite = CIOFlags.readable | CIOFlags.writeable | CIOFlags.fixedIOVA

/// `IOMMU_IOAS_MAP_*` as the C floor passes them.
enum CIOFlags {
    static let fixedIOVA: UInt32 = 1 << 0
    static let writeable: UInt32 = 1 << 1
    static let readable: UInt32 = 1 << 2
}

func now() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
}

func fail(_ message: String) -> Never {
    print("CallCost: \(message)")
    exit(1)
}

func median(_ values: [Double]) -> Double {
    let s = values.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func fmt(_ value: Double, _ digits: Int = 1) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let r = (value * scale).rounded() / scale
    return "\(r)"
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}

func iovaRange(_ base: UInt64, _ length: UInt64) -> IOVARange { try! IOVARange(base: IOVA(base), length: length) }

/// Counts allocations and time over `body`; at the end, allocations and ns per call.
struct CallMeter {
    var calls = 0
    var allocations: UInt64 = 0
    var nanoseconds: UInt64 = 0

    mutating func measure<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        let a = cc_allocations(), t = now()
        let r = try body()
        nanoseconds += now() - t
        allocations += cc_allocations() - a
        calls += 1
        return r
    }

    var line: String {
        "\(fmt(Double(allocations) / Double(calls), 2)) allocations/call, \(fmt(Double(nanoseconds) / Double(calls))) ns/call (\(calls) calls)"
    }
}

// MARK: Allocations on the model

/// Map and unmap one page at a fixed IOVA, then an automatic-IOVA map of two pages and its
/// unmap, with `live` one-page areas mapped below with one-page holes between them (first fit
/// must pass them all): the model's steady state, tracing off.
func modelCosts(iterations: Int, live: Int) throws(IOMMUFDError) {
    let model = IOMMUFDModel(.init(tracing: false))
    let ctx = try IOMMUFDContext(kernel: model)
    let ioas = try ctx.allocateIOAS()
    let host = try! HostRange(base: HostAddress(0x7f00_0000_0000), length: page)
    for i in 0..<live { _ = try ctx.map(host, into: ioas, at: IOVA(page + UInt64(2 * i) * page)) }
    let twoPages = try! HostRange(base: HostAddress(0x7f00_0000_0000), length: 2 * page)
    let fixed = IOVA(0x1000_0000)
    let fixedRange = iovaRange(fixed.rawValue, page)
    var map = CallMeter(), unmap = CallMeter(), autoMap = CallMeter(), autoUnmap = CallMeter()
    for i in 0..<(iterations + 100) {
        if i == 100 { map = CallMeter(); unmap = CallMeter(); autoMap = CallMeter(); autoUnmap = CallMeter() }
        _ = try map.measure { () throws(IOMMUFDError) in try ctx.map(host, into: ioas, at: fixed) }
        _ = try unmap.measure { () throws(IOMMUFDError) in try ctx.unmap(fixedRange, from: ioas) }
        let iova = try autoMap.measure { () throws(IOMMUFDError) in try ctx.map(twoPages, into: ioas) }
        let r = iovaRange(iova.rawValue, 2 * page)
        _ = try autoUnmap.measure { () throws(IOMMUFDError) in try ctx.unmap(r, from: ioas) }
    }
    print("model, tracing off, \(live) one-page areas mapped below, one-page holes between:")
    print("    map, fixed IOVA:               \(map.line)")
    print("    unmap:                         \(unmap.line)")
    print("    map, automatic IOVA (2 pages): \(autoMap.line)")
    print("    unmap of that:                 \(autoUnmap.line)")
    for (name, meter) in [("map, fixed IOVA", map), ("unmap", unmap), ("map, automatic IOVA (2 pages)", autoMap), ("unmap of that", autoUnmap)] {
        record("model", "\(name), \(live) areas below", value: Double(meter.allocations) / Double(meter.calls), unit: "allocations/call")
    }
}

// MARK: Instructions with the ioctl stubbed out

/// A kernel whose every call succeeds at once: what is left is the typed layer's own cost.
struct StubKernel: KernelInterface {
    func open(_ path: String, flags: CInt) -> Result<CInt, Errno> { .success(1000) }
    func close(_ fd: CInt) -> Result<Void, Errno> { .success(()) }
    func ioctl(_ fd: CInt, _ request: IoctlRequest, _ argument: UnsafeMutableRawPointer?) -> Result<CInt, Errno> { .success(0) }
    func pread(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) -> Result<Int, Errno> { .success(0) }
    func pwrite(_ fd: CInt, from buffer: UnsafeRawBufferPointer, at offset: Int64) -> Result<Int, Errno> { .success(0) }
    func read(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer) -> Result<Int, Errno> { .success(0) }
    func write(_ fd: CInt, from buffer: UnsafeRawBufferPointer) -> Result<Int, Errno> { .success(0) }
    func lseek(_ fd: CInt, offset: Int64, whence: CInt) -> Result<Int64, Errno> { .success(0) }
    func mmap(length: Int, protection: CInt, flags: CInt, fd: CInt, offset: Int64) -> Result<UnsafeMutableRawPointer, Errno> {
        .failure(.invalidArgument)
    }
    func munmap(_ address: UnsafeMutableRawPointer, length: Int) -> Result<Void, Errno> { .success(()) }
    func memfdCreate(_ name: String, flags: UInt32) -> Result<CInt, Errno> { .failure(.invalidArgument) }
    func ftruncate(_ fd: CInt, length: Int64) -> Result<Void, Errno> { .success(()) }
    func eventfd(initialValue: UInt32, flags: CInt) -> Result<CInt, Errno> { .failure(.invalidArgument) }
    func poll(_ fd: CInt, events: Int16, timeoutMilliseconds: CInt) -> Result<Int16, Errno> { .success(0) }
    func readlink(_ path: String) -> Result<String, Errno> { .failure(.invalidArgument) }
    func listDirectory(_ path: String) -> Result<[String], Errno> { .failure(.invalidArgument) }
}

/// One measured region: `iterations` calls between a callgrind zero and a dump named
/// "NAME n=ITERATIONS" (Benchmarks/call-cost.sh divides), and their allocations and time.
/// The body gets the call's index, 0 to `iterations + 100` (the first 100 warm caches and
/// lazy globals, uncounted).
func region(_ name: String, _ iterations: Int, _ body: (Int) throws(IOMMUFDError) -> Void) throws(IOMMUFDError) {
    for i in 0..<100 { try body(i) }
    let a = cc_allocations(), t = now()
    cc_callgrind_zero()
    for i in 100..<(100 + iterations) { try body(i) }
    cc_callgrind_dump("\(name) n=\(iterations)")
    let ns = Double(now() - t) / Double(iterations)
    let allocations = Double(cc_allocations() - a) / Double(iterations)
    print("    \(name): \(fmt(allocations, 2)) allocations/call, \(fmt(ns)) ns/call")
    if cc_on_valgrind() == 0 { record("regions", name, value: allocations, unit: "allocations/call") }
}

func stubCosts(iterations: Int) throws(IOMMUFDError) {
    let ctx = try IOMMUFDContext(kernel: StubKernel())
    let fd = ctx.descriptor
    let ioas = IOASID(1)
    let host = try! HostRange(base: HostAddress(0x7f00_0000_0000), length: page)
    let iova = IOVA(0x10_0000)
    let range = iovaRange(iova.rawValue, page)
    print("ioctl stubbed out (\(cc_on_valgrind() != 0 ? "under valgrind" : "native; run Benchmarks/call-cost.sh for instructions")):")
    try region("swift map", iterations) { _ throws(IOMMUFDError) in _ = try ctx.map(host, into: ioas, at: iova) }
    try region("c map", iterations) { _ in
        _ = cc_map_stub(fd, ioas.rawValue, host.first.rawValue, page, iova.rawValue, readWrite)
    }
    try region("swift unmap", iterations) { _ throws(IOMMUFDError) in _ = try ctx.unmap(range, from: ioas) }
    try region("c unmap", iterations) { _ in _ = cc_unmap_stub(fd, ioas.rawValue, iova.rawValue, page) }
    // As a client loop writes it: each range built from a base and a length, offsets checked.
    let hostBase = HostAddress(0x7f00_0000_0000)
    try region("swift map, ranges built", iterations) { i throws(IOMMUFDError) in
        let h = try! HostRange(base: hostBase.advanced(by: UInt64(i & 7) * page)!, length: page)
        _ = try ctx.map(h, into: ioas, at: iova.alignedDown(to: .size4K))
    }
    try region("swift unmap, range built", iterations) { i throws(IOMMUFDError) in
        let r = try! IOVARange(base: iova.advanced(by: UInt64(i & 7) * page)!, length: page)
        _ = try ctx.unmap(r, from: ioas)
    }
    try region("swift loop only", iterations) { _ in }

    // The model's own cost, a map and its unmap per call (tracing off).
    let model = IOMMUFDModel(.init(tracing: false))
    let modelled = try IOMMUFDContext(kernel: model)
    let space = try modelled.allocateIOAS()
    try region("model map+unmap, fixed", iterations / 10) { _ throws(IOMMUFDError) in
        _ = try modelled.map(host, into: space, at: iova)
        _ = try modelled.unmap(range, from: space)
    }
    for i in 0..<1000 { _ = try modelled.map(host, into: space, at: IOVA(page + UInt64(2 * i) * page)) }
    let twoPages = try! HostRange(base: host.first, length: 2 * page)
    try region("model auto map+unmap, 1000 areas", iterations / 100) { _ throws(IOMMUFDError) in
        let at = try modelled.map(twoPages, into: space)
        _ = try modelled.unmap(iovaRange(at.rawValue, 2 * page), from: space)
    }
}

// MARK: The real kernel

/// One call's time in ns, the timer's own cost included (measured apart as `timer`).
@inline(__always)
func timed(_ body: () -> Void) -> Double {
    let t = now()
    body()
    return Double(now() - t)
}

/// `rounds` rounds of `batch` maps (one 4 KiB page at consecutive fixed IOVAs) then `batch`
/// unmaps, a C call and a Swift call in turn (which goes first alternates), each timed on its
/// own: a slow moment of the machine falls on both. C maps below `base`, Swift above it.
func kernelCosts(_ ctx: borrowing IOMMUFDContext, _ ioas: IOASID, host: HostRange, rounds: Int, batch: Int, label: String) throws(IOMMUFDError) {
    let fd = ctx.descriptor
    let cBase: UInt64 = 0x100_0000, swiftBase: UInt64 = 0x200_0000
    let swiftRanges = (0..<batch).map { iovaRange(swiftBase + UInt64($0) * page, page) }
    var cMap: [Double] = [], cUnmap: [Double] = [], swiftMap: [Double] = [], swiftUnmap: [Double] = [], timer: [Double] = []
    var failure: IOMMUFDError?

    func c(_ map: Bool, _ i: Int) -> Double {
        let iova = cBase + UInt64(i) * page
        var e: CInt = 0
        let ns = timed { e = map ? cc_map(fd, ioas.rawValue, host.first.rawValue, page, iova, readWrite) : cc_unmap(fd, ioas.rawValue, iova, page) }
        if e != 0 { fail("C \(map ? "map" : "unmap"): errno \(e)") }
        return ns
    }
    func swift(_ map: Bool, _ i: Int) -> Double {
        let r = swiftRanges[i]
        return timed {
            do throws(IOMMUFDError) {
                if map { _ = try ctx.map(host, into: ioas, at: r.first) } else { _ = try ctx.unmap(r, from: ioas) }
            } catch { failure = error }
        }
    }

    for round in -1..<rounds {  // round -1 warms up
        for map in [true, false] {
            for i in 0..<batch {
                let cFirst = (i + round) % 2 == 0
                let first = cFirst ? c(map, i) : swift(map, i)
                let second = cFirst ? swift(map, i) : c(map, i)
                if let failure { throw failure }
                guard round >= 0 else { continue }
                let (cNs, swiftNs) = cFirst ? (first, second) : (second, first)
                if map { cMap.append(cNs); swiftMap.append(swiftNs) } else { cUnmap.append(cNs); swiftUnmap.append(swiftNs) }
                timer.append(timed {})
            }
        }
    }
    let overhead = median(timer)
    func report(_ name: String, _ swift: [Double], _ c: [Double]) {
        let s = median(swift) - overhead, k = median(c) - overhead
        let sMean = swift.reduce(0, +) / Double(swift.count) - overhead, kMean = c.reduce(0, +) / Double(c.count) - overhead
        print("    \(name): Swift \(fmt(s)) ns/call, C \(fmt(k)) ns/call, Swift/C \(fmt(s / k, 3))x "
              + "(means: Swift \(fmt(sMean)), C \(fmt(kMean)), \(fmt(sMean / kMean, 3))x)")
        record("call", "\(name.trimmingSpaces), \(label.hasPrefix("kernel, mock") ? "mock domain" : "no domain")", value: s, unit: "ns/call", baseline: "C floor (same ioctls)",
               baselineValue: k, ratio: s / k)
    }
    print("\(label): \(rounds) rounds of \(batch) maps then \(batch) unmaps, C and Swift in turn; "
          + "medians of \(swiftMap.count) calls each, less the timer's \(fmt(overhead)) ns")
    report("map 4 KiB, fixed IOVA", swiftMap, cMap)
    report("unmap 4 KiB          ", swiftUnmap, cUnmap)
}

/// Under callgrind: the user-space instructions of `count` real maps, then `count` unmaps,
/// through Swift and through C (the kernel's side is not counted).
func kernelRegions(_ ctx: borrowing IOMMUFDContext, _ ioas: IOASID, host: HostRange, count: Int) throws(IOMMUFDError) {
    let fd = ctx.descriptor
    let ranges = (0..<(count + 100)).map { iovaRange(0x100_0000 + UInt64($0) * page, page) }
    try region("kernel swift map", count) { i throws(IOMMUFDError) in _ = try ctx.map(host, into: ioas, at: ranges[i].first) }
    try region("kernel swift unmap", count) { i throws(IOMMUFDError) in _ = try ctx.unmap(ranges[i], from: ioas) }
    try region("kernel c map", count) { i in
        if cc_map(fd, ioas.rawValue, host.first.rawValue, page, ranges[i].first.rawValue, readWrite) != 0 { fail("C map") }
    }
    try region("kernel c unmap", count) { i in
        if cc_unmap(fd, ioas.rawValue, ranges[i].first.rawValue, page) != 0 { fail("C unmap") }
    }
}

func kernel(rounds: Int) throws(IOMMUFDError) {
    let ctx = try IOMMUFDContext()
    let ioas = try ctx.allocateIOAS()
    let buffer = try DMABuffer(length: Int(page), populate: true)
    let host = buffer.range
    if cc_on_valgrind() != 0 { return try kernelRegions(ctx, ioas, host: host, count: rounds) }
    try kernelCosts(ctx, ioas, host: host, rounds: rounds, batch: 256, label: "kernel, no domain")
    guard ctx.hasMockIOMMU else { fail("this kernel has no mock IOMMU (CONFIG_IOMMUFD_TEST)") }
    let device = try ctx.addMockDevice(to: PageTableID(ioas))
    try kernelCosts(ctx, ioas, host: host, rounds: rounds, batch: 256, label: "kernel, mock-IOMMU domain \(device.hwpt)")
}

// MARK: Main

let arguments = CommandLine.arguments.dropFirst()
let mode = arguments.first ?? "all"
let count = arguments.dropFirst().first.flatMap { Int($0) }
do throws(IOMMUFDError) {
    // The counter must see Swift's own allocations: one array, at least one malloc.
    let before = cc_allocations()
    let probe = [Int](repeating: Int(before), count: 64)
    if cc_allocations() == before || probe.isEmpty { fail("the malloc counter sees nothing") }
    switch mode {
    case "model":
        try modelCosts(iterations: count ?? 10_000, live: 0)
        try modelCosts(iterations: count ?? 10_000, live: 1000)
    case "stub":
        try stubCosts(iterations: count ?? 100_000)
    case "kernel":
        try kernel(rounds: count ?? 30)
    case "suite":
        try suite(scale: max(1, count ?? 1))
    case "all":
        try modelCosts(iterations: 10_000, live: 0)
        try modelCosts(iterations: 10_000, live: 1000)
        try stubCosts(iterations: 100_000)
    default:
        fail("usage: CallCost [model [N] | stub [N] | kernel [ROUNDS] | suite [SCALE]]")
    }
} catch {
    fail("\(error)")
}
