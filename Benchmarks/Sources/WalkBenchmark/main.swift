import BenchRecord
import Glibc
import IOPageTables

// Walk-rate benchmark: dense tables of each format's smallest leaf (1 GiB and 16 GiB mapped),
// walked as maximal runs (`visitRuns`, what the mirror engine consumes) and leaf by leaf
// (`walk`), beside read and memcpy bandwidth measured in the same run; a 2 MiB invalidation
// walk beside its memory time; a hostile table bounded by the default budget.
//
//   .build/release/WalkBenchmark                   # everything (about a minute)
//   .build/release/WalkBenchmark quick             # 1 GiB tables only
//   valgrind --tool=callgrind --toggle-collect='*bench_walk_runs*' .build/release/WalkBenchmark callgrind vtd
//                                                  # instructions of one walk (see README)

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// The best of `runs` timings of `body`, in seconds.
func best(_ runs: Int, _ body: () -> Void) -> Double {
    var b = Double.infinity
    for _ in 0..<runs {
        let t = now()
        body()
        b = min(b, now() - t)
    }
    return b
}

func fmt(_ v: Double, _ digits: Int = 1) -> String {
    var s = String(Int((v * pow(10, Double(digits))).rounded()))
    while s.count <= digits { s = "0" + s }
    if digits > 0 { s.insert(".", at: s.index(s.endIndex, offsetBy: -digits)) }
    return s
}

/// Read bandwidth (GB/s) over `bytes`, larger than any cache, and memcpy's.
func bandwidth(bytes: Int, runs: Int) -> (read: Double, copy: Double) {
    let a = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 4096)
    let b = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 4096)
    defer { a.deallocate(); b.deallocate() }
    memset(a.baseAddress!, 1, bytes)
    memset(b.baseAddress!, 2, bytes)
    let words = a.bindMemory(to: UInt64.self)
    var sum: UInt64 = 0
    let tRead = best(runs) {
        var s0: UInt64 = 0, s1: UInt64 = 0, s2: UInt64 = 0, s3: UInt64 = 0
        var i = 0
        while i < words.count { s0 &+= words[i]; s1 &+= words[i + 1]; s2 &+= words[i + 2]; s3 &+= words[i + 3]; i += 4 }
        sum &+= s0 &+ s1 &+ s2 &+ s3
    }
    let tCopy = best(runs) { memcpy(b.baseAddress!, a.baseAddress!, bytes) }
    if sum == 1 { print("") }
    return (Double(bytes) / tRead / 1e9, Double(bytes) / tCopy / 1e9)
}

/// Reads `evictBytes` of other memory, so the next walk finds its table out of the caches.
let evictBytes = 256 << 20
nonisolated(unsafe) let evictBuffer: UnsafeMutableRawBufferPointer = {
    let b = UnsafeMutableRawBufferPointer.allocate(byteCount: evictBytes, alignment: 4096)
    memset(b.baseAddress!, 3, evictBytes)
    return b
}()
func evictCaches() -> UInt64 {
    let words = evictBuffer.bindMemory(to: UInt64.self)
    var s: UInt64 = 0
    var i = 0
    while i < words.count { s &+= words[i]; i += 8 }
    return s
}

/// The best of `runs` timings of `body`, each after evicting the caches.
func bestCold(_ runs: Int, _ body: () -> Void) -> Double {
    var b = Double.infinity
    var sink: UInt64 = 0
    for _ in 0..<runs {
        sink &+= evictCaches()
        let t = now()
        body()
        b = min(b, now() - t)
    }
    if sink == 1 { print("") }
    return b
}

/// A table of `mapped` bytes of `2^leafShift`-byte leaves, in its own buffer.
final class DenseTable<F: PageTableFormat> {
    let buffer: UnsafeMutableRawBufferPointer
    let walker: PageTableWalker<F, GuestMemoryView>
    let leaves: Int
    let buildSeconds: Double
    static var inputBase: UInt64 { 0x40_0000_0000 }

    init(_ format: F, leafShift: Int, mapped: UInt64) throws {
        leaves = Int(mapped >> UInt64(leafShift))
        let maxTable = (0...format.topLevel).map { format.tableBytes(level: $0) }.max()!
        let bytes = leaves * format.entryBytes + leaves * format.entryBytes / 256 + 64 * maxTable
        buffer = .allocate(byteCount: bytes, alignment: maxTable)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        let base = GuestPhysicalAddress(0x1_0000_0000)
        let memory = MutableGuestMemoryBuffer(base: base, buffer: buffer)
        var builder = try PageTableBuilder(format: format, memory: memory,
                                           allocator: BumpTableAllocator(range: try GuestPhysicalRange(base: base, length: UInt64(bytes))))
        let t = now()
        try builder.map(try IOVARange(base: IOVA(Self.inputBase), length: mapped), to: GuestPhysicalAddress(0x2_0000_0000),
                        permissions: .readWrite, sizes: PageSizeSet([PageSize(shift: leafShift)]))
        buildSeconds = now() - t
        walker = PageTableWalker(format: format, memory: try GuestMemoryView(regions: [try memory.region()]), root: builder.root,
                                 budget: WalkBudget(maxEntries: .max, maxTables: .max))
    }
    deinit { buffer.deallocate() }
}

// The measured walks, not inlined so that callgrind can count each (`--toggle-collect`).
@inline(never) @_silgen_name("bench_walk_runs")
func benchWalkRuns<F: PageTableFormat>(_ w: PageTableWalker<F, GuestMemoryView>, _ range: IOVARange = .all) -> (WalkStatistics, Int, UInt64) {
    var runs = 0
    var sink: UInt64 = 0
    let stats = try! w.visitRuns(range) { (r: TranslationRun) throws(Never) -> WalkControl in
        runs += 1
        sink &+= r.output.rawValue
        return .continue
    }
    return (stats, runs, sink)
}

@inline(never) @_silgen_name("bench_walk_leaves")
func benchWalkLeaves<F: PageTableFormat>(_ w: PageTableWalker<F, GuestMemoryView>, _ range: IOVARange = .all) -> (WalkStatistics, UInt64) {
    var sink: UInt64 = 0
    let stats = try! w.walk(range) { sink &+= $0.output.rawValue }
    return (stats, sink)
}

@inline(never) @_silgen_name("bench_walk_runs_2m")
func benchWalkRuns2M<F: PageTableFormat>(_ w: PageTableWalker<F, GuestMemoryView>, _ range: IOVARange, reps: Int) -> UInt64 {
    var sink: UInt64 = 0
    for _ in 0..<reps { sink &+= benchWalkRunsInline(w, range) }
    return sink
}

@inline(never) @_silgen_name("bench_walk_2m")
func benchWalkLeaves2M<F: PageTableFormat>(_ w: PageTableWalker<F, GuestMemoryView>, _ range: IOVARange, reps: Int) -> UInt64 {
    var sink: UInt64 = 0
    for _ in 0..<reps { _ = try! w.walk(range) { sink &+= $0.output.rawValue } }
    return sink
}

@inline(__always)
func benchWalkRunsInline<F: PageTableFormat>(_ w: PageTableWalker<F, GuestMemoryView>, _ range: IOVARange) -> UInt64 {
    var sink: UInt64 = 0
    _ = try! w.visitRuns(range) { (r: TranslationRun) throws(Never) -> WalkControl in sink &+= r.output.rawValue; return .continue }
    return sink
}

func benchmark<F: PageTableFormat>(_ name: String, _ format: F, leafShift: Int, gib: UInt64, runs: Int) throws {
    let table = try DenseTable(format, leafShift: leafShift, mapped: gib << 30)
    // The read bandwidth just before this format's walks, so that a change of the machine's
    // speed during the run (a shared host) moves both sides of each ratio.
    let readGBs = bandwidth(bytes: 512 << 20, runs: 3).read
    let w = table.walker
    var stats = WalkStatistics()
    var extents = 0
    var sink: UInt64 = 0
    let tRuns = best(runs) { (stats, extents, sink) = benchWalkRuns(w) }
    precondition(stats.leaves == table.leaves && extents == 1, "walk found \(stats.leaves) leaves in \(extents) runs")
    let tCold = bestCold(runs) { (stats, extents, sink) = benchWalkRuns(w) }
    let tLeaves = best(max(1, runs / 2)) { let (s, x) = benchWalkLeaves(w); stats = s; sink &+= x }
    precondition(stats.leaves == table.leaves)
    let entryBytes = Double(stats.entriesRead * format.entryBytes)
    let gbRuns = entryBytes / tRuns / 1e9
    let gbLeaves = entryBytes / tLeaves / 1e9
    print("\(name), \(gib) GiB of \(PageSize(shift: leafShift)) leaves: \(stats.leaves) leaves, \(stats.tablesVisited) tables, "
          + "\(fmt(entryBytes / 1048576)) MiB of entries; built in \(fmt(table.buildSeconds * 1000)) ms "
          + "(\(fmt(Double(table.leaves) / table.buildSeconds / 1e6)) M leaves/s); read bandwidth just before: \(fmt(readGBs, 2)) GB/s")
    print("    runs:   \(fmt(tRuns * 1000, 2)) ms  \(fmt(gbRuns, 2)) GB/s of entries = \(fmt(100 * gbRuns / readGBs)) % of read bandwidth  "
          + "\(fmt(tRuns / Double(stats.leaves) * 1e9, 2)) ns/leaf  (\(extents) run)")
    let gbCold = entryBytes / tCold / 1e9
    print("    runs, table out of the caches: \(fmt(tCold * 1000, 2)) ms  \(fmt(gbCold, 2)) GB/s of entries = "
          + "\(fmt(100 * gbCold / readGBs)) % of read bandwidth  \(fmt(tCold / Double(stats.leaves) * 1e9, 2)) ns/leaf")
    print("    leaves: \(fmt(tLeaves * 1000, 2)) ms  \(fmt(gbLeaves, 2)) GB/s of entries = \(fmt(100 * gbLeaves / readGBs)) % of read bandwidth  "
          + "\(fmt(tLeaves / Double(stats.leaves) * 1e9, 2)) ns/leaf")
    // An invalidation of 2 MiB in the middle: its entries' memory time at the measured read bandwidth.
    let r = try IOVARange(base: IOVA(DenseTable<F>.inputBase + (gib << 29)), length: 2 << 20)
    let reps = 2000
    let t2 = best(runs) { sink &+= benchWalkRuns2M(w, r, reps: reps) } / Double(reps)
    let t2Leaves = best(runs) { sink &+= benchWalkLeaves2M(w, r, reps: reps) } / Double(reps)
    let entryBytes2M = (2 << 20) >> leafShift * format.entryBytes
    let memory = Double(entryBytes2M) / (readGBs * 1e9)
    // The same by the cache lines the walk must read: the leaf entries' and one per table pointer above them.
    let lines = (entryBytes2M + 63) / 64 + format.topLevel
    let lineMemory = Double(lines * 64) / (readGBs * 1e9)
    print("    2 MiB invalidation (\((2 << 20) >> leafShift) leaves): runs \(fmt(t2 * 1e6, 3)) us = \(fmt(t2 / memory, 2))x its memory time "
          + "(\(fmt(memory * 1e6, 3)) us; by the \(lines) cache lines read \(fmt(t2 / lineMemory, 2))x); leaves \(fmt(t2Leaves * 1e6, 3)) us"
          + (sink == 42 ? " " : ""))
    // With leaves over 4 KiB, 2 MiB is a small part of a leaf table: the invalidation of one
    // whole leaf table too (the last of the table), what 2 MiB is for the 4 KiB formats.
    let tableShift = leafShift + format.indexBits(level: 0)
    var tTable = 0.0
    var tableMemory = 0.0
    if tableShift > 21 && UInt64(1) << tableShift <= gib << 30 {
        let rt = try IOVARange(base: IOVA(DenseTable<F>.inputBase + (gib << 30) - (1 << tableShift)), length: 1 << tableShift)
        let repsTable = 64
        tTable = best(runs) { sink &+= benchWalkRuns2M(w, rt, reps: repsTable) } / Double(repsTable)
        tableMemory = Double(format.tableBytes(level: 0)) / (readGBs * 1e9)
        print("    one leaf table's invalidation (\(1 << (tableShift - 20)) MiB, \(1 << (tableShift - leafShift)) leaves): runs "
              + "\(fmt(tTable * 1e6, 3)) us = \(fmt(tTable / tableMemory, 2))x its memory time (\(fmt(tableMemory * 1e6, 3)) us)")
    }
    let label = "\(name), \(gib) GiB of \(PageSize(shift: leafShift)) leaves"
    // Bandwidths as GB/s of entries against the read bandwidth; the invalidation against its memory time.
    record(suite: "walk", case: "\(label): runs", value: gbRuns, unit: "GB/s", baseline: "read bandwidth", baselineValue: readGBs)
    record(suite: "walk", case: "\(label): runs, out of the caches", value: gbCold, unit: "GB/s", baseline: "read bandwidth", baselineValue: readGBs)
    record(suite: "walk", case: "\(label): leaves", value: gbLeaves, unit: "GB/s", baseline: "read bandwidth", baselineValue: readGBs)
    record(suite: "walk-2MiB", case: "\(label): 2 MiB invalidation, runs", value: t2 * 1e6, unit: "us", baseline: "memory time", baselineValue: memory * 1e6)
    if tTable > 0 {
        record(suite: "walk-2MiB", case: "\(label): one leaf table's invalidation, runs", value: tTable * 1e6, unit: "us",
               baseline: "memory time", baselineValue: tableMemory * 1e6)
    }
}

/// Every entry of every level of a VT-d table points at the next shared table (2^36 leaves
/// visible): the default budget must stop the walk, in both kinds of walk.
func hostile(stepping: Bool) {
    let bytes = 4 * 4096
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 4096)
    defer { buffer.deallocate() }
    buffer.initializeMemory(as: UInt8.self, repeating: 0)
    let base: UInt64 = 0x10_0000
    let memory = MutableGuestMemoryBuffer(base: GuestPhysicalAddress(base), buffer: buffer)
    for i in 0..<512 {
        let o = UInt64(i * 8)
        for t in 0..<3 { _ = memory.store64((base + UInt64(t + 1) * 0x1000) | 3, at: GuestPhysicalAddress(base + UInt64(t) * 0x1000 + o)) }
        _ = memory.store64((stepping ? 0x1000 + UInt64(i) * 0x1000 : 0x1000) | 3, at: GuestPhysicalAddress(base + 0x3000 + o))
    }
    let w = PageTableWalker(format: try! VTdSecondStage(levels: 4), memory: memory, root: GuestPhysicalAddress(base))
    for kind in ["leaves", "runs"] {
        var fault: PageTableFault?
        let t = now()
        do {
            if kind == "leaves" {
                try w.walk { _ in }
            } else {
                try w.visitRuns { (_: TranslationRun) throws(Never) -> WalkControl in .continue }
            }
        } catch {
            switch error {
            case let f as PageTableFault: fault = f
            case let e as PageTableWalkError<Never>: if case .fault(let f) = e { fault = f }
            default: break
            }
        }
        let dt = now() - t
        let s = fault?.statistics ?? WalkStatistics()
        record(suite: "walk-hostile", case: "hostile VT-d table, \(stepping ? "stepping" : "identical") leaf entries, \(kind)",
               value: Double(s.entriesRead), unit: "entries", baseline: "budget", baselineValue: Double(WalkBudget.default.maxEntries))
        print("hostile VT-d table (shared tables, \(stepping ? "stepping" : "identical") leaf entries), \(kind): "
              + "\(fault.map { "\($0.reason)" } ?? "no fault!") after \(s.entriesRead) entries (budget \(WalkBudget.default.maxEntries)), "
              + "\(s.leaves) leaves, \(s.tablesVisited) tables, \(s.fastPathEntries) on the fast path, in \(fmt(dt * 1000)) ms")
    }
}

func machine() -> String {
    guard let f = fopen("/proc/cpuinfo", "r") else { return "unknown CPU" }
    defer { fclose(f) }
    var line = [CChar](repeating: 0, count: 512)
    while fgets(&line, 512, f) != nil {
        let s = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if s.hasPrefix("model name") { return String(s.split(separator: ":", maxSplits: 1)[1].dropFirst().dropLast()) }
    }
    return "unknown CPU"
}

/// Calls `body` with each format measured and its smallest leaf, with concrete types (a
/// generic function called with an opened existential would run the walker unspecialized).
protocol FormatVisitor {
    mutating func visit<F: PageTableFormat>(_ key: String, _ name: String, _ format: F, leafShift: Int) throws
}

func forEachFormat<V: FormatVisitor>(_ v: inout V) throws {
    try v.visit("vtd", "VT-d second stage (4 levels)", try VTdSecondStage(levels: 4), leafShift: 12)
    try v.visit("x86", "x86-64 first stage (4 levels)", try X86FirstStage(levels: 4), leafShift: 12)
    try v.visit("amd", "AMD v1 (4 levels)", try AMDv1(levels: 4), leafShift: 12)
    try v.visit("arm4k", "Arm VMSAv8-64 stage 1, 4K granule", try ArmVMSAv8(stage: .stage1, granule: .size4K), leafShift: 12)
    try v.visit("arm16k", "Arm VMSAv8-64 stage 1, 16K granule", try ArmVMSAv8(stage: .stage1, granule: .size16K, inputBits: 47),
                leafShift: 14)
    try v.visit("arm64k", "Arm VMSAv8-64 stage 1, 64K granule", try ArmVMSAv8(stage: .stage1, granule: .size64K), leafShift: 16)
    try v.visit("riscv", "RISC-V Sv48", try RISCVPageTable(mode: .sv48), leafShift: 12)
}

struct Measure: FormatVisitor {
    var gib: UInt64
    mutating func visit<F: PageTableFormat>(_ key: String, _ name: String, _ format: F, leafShift: Int) throws {
        try benchmark(name, format, leafShift: leafShift, gib: gib, runs: gib == 1 ? 10 : 4)
    }
}

struct Count: FormatVisitor {
    var wanted: String
    mutating func visit<F: PageTableFormat>(_ key: String, _ name: String, _ format: F, leafShift: Int) throws {
        if key == wanted { try callgrind(format, leafShift: leafShift) }
    }
}

func callgrind<F: PageTableFormat>(_ format: F, leafShift: Int) throws {
    let table = try DenseTable(format, leafShift: leafShift, mapped: 1 << 30)
    let r = try IOVARange(base: IOVA(DenseTable<F>.inputBase + (1 << 29)), length: 2 << 20)
    // Warm up outside the counted functions: the first walk instantiates type metadata once.
    _ = try table.walker.runs(r)
    _ = try table.walker.extents(r)
    var t = now()
    let (s, n, x) = benchWalkRuns(table.walker)
    let tRuns = now() - t
    t = now()
    let (_, y) = benchWalkLeaves(table.walker)
    let tLeaves = now() - t
    t = now()
    let z = benchWalkRuns2M(table.walker, r, reps: 100)
    let t2 = now() - t
    let z2 = benchWalkLeaves2M(table.walker, r, reps: 100)
    print("leaves \(s.leaves) entries \(s.entriesRead) runs \(n) (2 MiB walks: 100 each) sink \(x &+ y &+ z &+ z2)")
    print("natively (one walk, not best of several): runs \(fmt(tRuns * 1e3, 3)) ms, leaves \(fmt(tLeaves * 1e3, 3)) ms, "
          + "2 MiB runs \(fmt(t2 / 100 * 1e6, 3)) us")
}

let args = CommandLine.arguments.dropFirst()
if args.first == "callgrind" {
    var count = Count(wanted: args.dropFirst().first ?? "vtd")
    try forEachFormat(&count)
    exit(0)
}
let quick = args.first == "quick"
print("machine: \(machine()), \(sysconf(Int32(_SC_NPROCESSORS_ONLN))) CPUs online")
let bw = bandwidth(bytes: 512 << 20, runs: 5)
print("memory bandwidth over 512 MiB: read \(fmt(bw.read, 2)) GB/s, memcpy \(fmt(bw.copy, 2)) GB/s (copied bytes; traffic is about twice)")
for gib: UInt64 in quick ? [1] : [1, 16] {
    var measure = Measure(gib: gib)
    try forEachFormat(&measure)
}
hostile(stepping: false)
hostile(stepping: true)
let bw2 = bandwidth(bytes: 512 << 20, runs: 5)
print("memory bandwidth again: read \(fmt(bw2.read, 2)) GB/s, memcpy \(fmt(bw2.copy, 2)) GB/s")
