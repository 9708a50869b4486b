// The mirror engine's cost per change on the null target and the kernel model (request mode),
// its allocations per change in a steady stream (both modes), and, in the VM, a second IOAS
// filled by IOAS_MAP against IOAS_COPY and the engine into two kernel IOAS.
//
//   swift build -c release --product MirrorBenchmark
//   .build/release/MirrorBenchmark host [CHANGES]     this machine
//   .build/release/MirrorBenchmark allocs             allocations per change (malloc counter)
//   .build/release/MirrorBenchmark table [LEAVES...]   page-table mode at scale (default 10^4, 2^18, 10^6, 2^22)
//   .build/release/MirrorBenchmark scaling [CHANGES]   thread scaling on the null target (Scaling.swift)
//   ../Harness/run-in-vm.sh --memory 3072 -- .build/release/MirrorBenchmark kernel [CHANGES]
//       (MIRROR_KERNEL_LEAVES: leaves of the contiguous guest, default 2^18 = 1 GiB)
import CallCostFloor
import Foundation
import Glibc
import Histogram
import IOMMUFD
import IOMMUFDModel
import IOMMUMirror
import IOPageTables

func now() -> Double { var t = timespec(); clock_gettime(CLOCK_MONOTONIC, &t); return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9 }
let page: UInt64 = 4096

/// Request mode: N maps of `pages` pages then N unmaps, on `targets`; per-change latency.
func engineStream(_ label: String, targets: [any MirrorTarget], host: UInt64, n: Int, pages: UInt64, newestFirst: Bool = false) throws {
    var ram = GuestRAM()
    try ram.add(MirrorMemoryRegion(guestPhysical: GuestPhysicalAddress(0), length: UInt64(n) * pages * page, host: HostAddress(host)))
    var engine = try MirrorEngine(mode: .requests, memory: ram, targets: targets,
                                  configuration: .init(space: try IOVARange(first: IOVA(0), last: IOVA((1 << 40) - 1)), shadowCapacity: n + 16))
    var batch = MirrorBatch(capacity: 32)
    var result = MirrorBatchResult(capacity: 32)
    let t0 = now()
    for phase in 0..<2 {
        var i = 0
        while i < n {
            batch.removeAll()
            for j in i..<min(i + 32, n) {
                let k = phase == 1 && newestFirst ? n - 1 - j : j
                let iova = IOVA(0x1000_0000 + UInt64(k) * pages * page)
                if phase == 0 {
                    batch.append(.map(iova: iova, length: pages * page, guestPhysical: GuestPhysicalAddress(UInt64(k) * pages * page), permissions: .readWrite))
                } else {
                    batch.append(.unmap(iova: iova, length: pages * page))
                }
            }
            engine.apply(batch, into: &result)
            i += 32
        }
    }
    let dt = now() - t0
    let h = engine.metrics.latency
    precondition(engine.shadow.isEmpty && engine.checkInvariants().isEmpty)
    let perChange: Double = dt / Double(2 * n) * 1e9
    let p50: UInt64 = h.valueAtPercentile(50), p99: UInt64 = h.valueAtPercentile(99), worst: UInt64 = h.max
    let calls: [Int] = engine.metrics.targets.map(\.calls)
    let line: String = label + ": \(2 * n) changes of \(pages) pages, " + "\(Int(perChange))"
    print(line + " ns/change; per change p50 \(p50) ns, p99 \(p99) ns, max \(worst) ns; target calls \(calls)")
}

/// Allocation calls so far (the benchmark's interposed malloc counter).
func allocationCalls() -> UInt64? { cc_allocations() }

/// Allocation calls per change in a steady stream (the second of two identical passes).
func allocationsPerChange(_ label: String, targets: [any MirrorTarget], pageTable: Bool) throws {
    let ramBytes = 8 << 20
    let mem = mmap(nil, ramBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
    var ram = GuestRAM()
    try ram.add(MirrorMemoryRegion(guestPhysical: GuestPhysicalAddress(0), length: UInt64(ramBytes), host: HostAddress(mem)))
    let writable = MutableGuestMemoryBuffer(base: GuestPhysicalAddress(0), buffer: UnsafeMutableRawBufferPointer(start: mem, count: ramBytes))
    var guest = try PageTableBuilder(format: try VTdSecondStage(levels: 4), memory: writable,
                                     allocator: BumpTableAllocator(range: try GuestPhysicalRange(first: GuestPhysicalAddress(0x70_0000), last: GuestPhysicalAddress(0x7F_FFFF))))
    let mode: MirrorEngine.Mode = pageTable ? .pageTable(try VTdSecondStage(levels: 4), root: guest.root) : .requests
    var engine = try MirrorEngine(mode: mode, memory: ram, targets: targets,
                                  configuration: .init(space: try IOVARange(first: IOVA(0), last: IOVA((1 << 32) - 1)), shadowCapacity: 1024))
    var batch = MirrorBatch(capacity: 64)
    var result = MirrorBatchResult(capacity: 64)
    var changes = 0
    var engineAllocations: UInt64 = 0
    for pass in 0..<2 {
        for phase in 0..<2 {
            batch.removeAll()
            for k: UInt64 in 0..<64 {
                let iova = IOVA(0x100_0000 + k * 0x2000)
                if pageTable {
                    if phase == 0 { try guest.map(iova, to: GuestPhysicalAddress(k * 0x1000), size: .size4K, permissions: .readWrite) }
                    else { _ = try guest.unmap(try IOVARange(base: iova, length: 0x1000)) }
                    batch.append(.invalidate(iova: iova, length: 0x1000))
                } else if phase == 0 {
                    batch.append(.map(iova: iova, length: 0x1000, guestPhysical: GuestPhysicalAddress(k * 0x1000), permissions: .readWrite))
                } else {
                    batch.append(.unmap(iova: iova, length: 0x1000))
                }
            }
            // Only the engine's apply is counted, not the guest's own table edits above.
            let mark = allocationCalls() ?? 0
            engine.apply(batch, into: &result)
            let after = allocationCalls() ?? 0
            if pass == 1 {
                engineAllocations += after - mark
                changes += batch.count
            }
            precondition(result.changes.allSatisfy { $0.status == .applied })
        }
    }
    print("\(label): \(engineAllocations) allocation calls in \(changes) changes (steady state, second pass)")
}

let args = CommandLine.arguments
let mode = args.count > 1 ? args[1] : "host"
let n = args.count > 2 ? Int(args[2])! : 20000

if mode == "table" {
    let sizes = args.count > 2 ? args.dropFirst(2).map { Int($0)! } : [10_000, 1 << 18, 1_000_000, 1 << 22]
    for leaves in sizes {
        for contiguous in [true, false] { try tableSync(leaves: leaves, contiguous: contiguous, reps: leaves > 1_000_000 ? 5 : 9) }
    }
} else if mode == "scaling" {
    threadScaling(changes: args.count > 2 ? n : 200_000)
} else if mode == "allocs" {
    let before = cc_allocations()
    let probe = [Int](repeating: 1, count: 1000)
    precondition(cc_allocations() > before && probe.count == 1000, "the malloc counter does not count")
    for pageTable in [false, true] {
        let m = pageTable ? "page-table mode" : "request mode"
        try allocationsPerChange("\(m), null target", targets: [NullTarget()], pageTable: pageTable)
        try allocationsPerChange("\(m), AMD v1 host table", targets: [try PageTableTarget(name: "t", format: try AMDv1(levels: 4))], pageTable: pageTable)
        let model = IOMMUFDModel(.init(pageSize: page, tracing: false))
        let ctx = SharedIOMMUFDContext(try IOMMUFDContext(kernel: model))
        let ioas = try ctx.iommufd.allocateIOAS()
        try allocationsPerChange("\(m), IOMMUFDModel IOAS", targets: [try IOASTarget(name: "m", context: ctx, ioas: ioas, behaviour: try KernelBehaviour.probe(ctx.iommufd))], pageTable: pageTable)
    }
} else if mode == "host" {
    // No memory is touched by the null target or the model.
    try engineStream("null target", targets: [NullTarget()], host: 0x7000_0000_0000, n: n, pages: 1)
    try engineStream("null target, unmaps newest first", targets: [NullTarget()], host: 0x7000_0000_0000, n: n, pages: 1, newestFirst: true)
    try engineStream("null target, 1000 areas", targets: [NullTarget()], host: 0x7000_0000_0000, n: 1000, pages: 1)
    let model = IOMMUFDModel(.init(pageSize: page, tracing: false))
    let ctx = SharedIOMMUFDContext(try IOMMUFDContext(kernel: model))
    let behaviour = try KernelBehaviour.probe(ctx.iommufd)
    let ioas = try ctx.iommufd.allocateIOAS()
    try engineStream("IOMMUFDModel IOAS target", targets: [try IOASTarget(name: "m", context: ctx, ioas: ioas, behaviour: behaviour)],
                     host: 0x7000_0000_0000, n: n, pages: 1)
    try churn("IOMMUFDModel", context: ctx, host: 0x7000_0000_0000, slots: 1024, count: n) { try ctx.iommufd.allocateIOAS() }
} else {
    // The real kernel (in the VM): two IOAS, each with a mock device, so maps pin and fill a domain.
    let ctx = SharedIOMMUFDContext(try IOMMUFDContext())
    let behaviour = try KernelBehaviour.probe(ctx.iommufd)
    print("kernel behaviour: \(behaviour)")
    let bytes = 64 << 20
    let mem = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0)!
    let host = UInt64(UInt(bitPattern: mem))
    func pair() throws -> (IOASID, IOASID) {
        let a = try ctx.iommufd.allocateIOAS(), b = try ctx.iommufd.allocateIOAS()
        _ = try ctx.iommufd.addMockDevice(to: PageTableID(a))
        _ = try ctx.iommufd.addMockDevice(to: PageTableID(b))
        return (a, b)
    }
    for size in [page, 16 * page, 512 * page] {
        let count = Int(UInt64(bytes) / size)
        for useCopy in [false, true] {
            let (a, b) = try pair()
            var second = 0.0
            let t0 = now()
            for k in 0..<count {
                let iova = IOVA(0x100_0000 + UInt64(k) * size)
                let r = try HostRange(base: HostAddress(host + UInt64(k) * size), length: size)
                _ = try ctx.iommufd.map(r, into: a, at: iova)
                let s = now()
                if useCopy { _ = try ctx.iommufd.copy(try IOVARange(base: iova, length: size), from: a, to: b, at: iova) }
                else { _ = try ctx.iommufd.map(r, into: b, at: iova) }
                second += now() - s
            }
            let total = now() - t0
            let how: String = useCopy ? "IOAS_COPY" : "IOAS_MAP "
            let perSecond: String = "\(Double(Int(second / Double(count) * 1e7)) / 10)"
            let perBoth: String = "\(Double(Int(total / Double(count) * 1e7)) / 10)"
            print("\(size / 1024) KiB areas x \(count): second IOAS by " + how + ": " + perSecond + " us per call (both: " + perBoth + " us)")
            _ = try ctx.iommufd.unmapAll(from: a)
            _ = try ctx.iommufd.unmapAll(from: b)
        }
    }
    // The engine over two kernel IOAS (mock devices attached), one page per change.
    let (a, b) = try pair()
    try engineStream("kernel: engine into 2 IOAS with mock devices",
                     targets: [try IOASTarget(name: "a", context: ctx, ioas: a, behaviour: behaviour),
                               try IOASTarget(name: "b", context: ctx, ioas: b, behaviour: behaviour)],
                     host: host, n: min(n, bytes / 4096), pages: 1)
    // Churn into one IOAS with a mock device, against the one-ioctl-per-change shadow.
    try churn("kernel, mock domain", context: ctx, host: host, slots: bytes / (16 * 4096), count: min(n, 2000)) {
        let ioas = try ctx.iommufd.allocateIOAS()
        _ = try ctx.iommufd.addMockDevice(to: PageTableID(ioas))
        return ioas
    }
    try kernelTableSync(ctx, leaves: Int(ProcessInfo.processInfo.environment["MIRROR_KERNEL_LEAVES"] ?? "") ?? (1 << 18))
}
