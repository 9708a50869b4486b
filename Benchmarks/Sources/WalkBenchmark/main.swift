import Glibc
import IOPageTables

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

/// Builds `bytes` of input mapped with 4K leaves in `format`, then times whole-table walks.
func benchmarkWalk<F: PageTableFormat>(_ name: String, _ format: F, mappedBytes: UInt64, runs: Int) throws {
    let leaves = Int(mappedBytes >> 12)
    let tableBytes = (leaves / 512 + leaves / (512 * 512) + 16) * 4096
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: tableBytes, alignment: 4096)
    defer { buffer.deallocate() }
    buffer.initializeMemory(as: UInt8.self, repeating: 0)
    let base = GuestPhysicalAddress(0x1_0000_0000)
    let memory = MutableGuestMemoryBuffer(base: base, buffer: buffer)
    var builder = try PageTableBuilder(format: format, memory: memory,
                                       allocator: BumpTableAllocator(range: try GuestPhysicalRange(base: base, length: UInt64(tableBytes))))
    let buildTime = best(1) {
        for i in 0..<UInt64(leaves) {
            try! builder.map(IOVA(0x40_0000_0000 + i << 12), to: GuestPhysicalAddress(0x2_0000_0000 + i << 12), size: .size4K,
                             permissions: .readWrite)
        }
    }
    // Walk through the read-only region view, as the mirror engine would.
    let view = try GuestMemoryView(regions: [try memory.region()])
    let walker = PageTableWalker(format: format, memory: view, root: builder.root)
    var stats = WalkStatistics()
    var sink: UInt64 = 0
    let t = best(runs) {
        stats = try! walker.walk { sink &+= $0.output.rawValue }
    }
    precondition(stats.leaves == leaves, "walk found \(stats.leaves) leaves, built \(leaves)")
    let tableMiB = Double(stats.tablesVisited * format.tableBytes(level: 0)) / 1048576
    print("walk \(name): \(mappedBytes >> 30) GiB of 4K leaves = \(stats.leaves) leaves, \(stats.tablesVisited) tables (\(fmt(tableMiB)) MiB of tables)")
    print("    best of \(runs): \(fmt(t * 1000, 2)) ms  \(fmt(Double(stats.leaves) / t / 1e6)) M leaf entries/s  "
          + "\(fmt(Double(stats.tablesVisited) / t / 1e3)) K tables/s  \(fmt(Double(stats.entriesRead * format.entryBytes) / t / 1e9, 2)) GB/s of entries"
          + (sink == 42 ? " " : ""))
    // An invalidation-sized range: one 2M region (512 leaves) in the middle.
    let mid = IOVA(0x40_0000_0000 + (mappedBytes / 2))
    let r = try IOVARange(base: mid, length: 2 << 20)
    var n = 0
    let reps = 2000
    let tr = best(runs) { for _ in 0..<reps { n = 0; try! walker.walk(r) { _ in n += 1 } } }
    print("    build (map one 4K leaf at a time): \(fmt(Double(leaves) / buildTime / 1e6, 2)) M maps/s")
    print("    2M range walk (\(n) leaves): \(fmt(tr / Double(reps) * 1e6, 2)) us per walk")
}

/// Read and copy bandwidth over `bytes`, larger than any cache.
func bandwidth(bytes: Int, runs: Int) {
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
    print("memory bandwidth over \(bytes >> 20) MiB: read \(fmt(Double(bytes) / tRead / 1e9, 2)) GB/s, "
          + "memcpy \(fmt(Double(bytes) / tCopy / 1e9, 2)) GB/s (copied bytes; traffic is about twice)" + (sum == 1 ? " " : ""))
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

print("machine: \(machine()), \(sysconf(Int32(_SC_NPROCESSORS_ONLN))) CPUs online")
bandwidth(bytes: 512 << 20, runs: 5)
try benchmarkWalk("VT-d second stage", try VTdSecondStage(levels: 4), mappedBytes: 1 << 30, runs: 10)
try benchmarkWalk("Arm VMSAv8-64 stage 1, 4K", try ArmVMSAv8(stage: .stage1, granule: .size4K), mappedBytes: 1 << 30, runs: 10)
try benchmarkWalk("VT-d second stage", try VTdSecondStage(levels: 4), mappedBytes: 16 << 30, runs: 3)
try benchmarkWalk("Arm VMSAv8-64 stage 1, 4K", try ArmVMSAv8(stage: .stage1, granule: .size4K), mappedBytes: 16 << 30, runs: 3)
