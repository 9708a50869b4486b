import IOPageTables
import TestSupport

/// Zeroed guest memory at a guest-physical base, with a bump allocator for tables.
final class Arena {
    let buffer: UnsafeMutableRawBufferPointer
    let base: GuestPhysicalAddress
    var memory: MutableGuestMemoryBuffer { MutableGuestMemoryBuffer(base: base, buffer: buffer) }
    var allocator: BumpTableAllocator { BumpTableAllocator(range: try! GuestPhysicalRange(base: base, length: UInt64(buffer.count))) }

    init(bytes: Int = 4 << 20, base: UInt64 = 0x10_0000) {
        buffer = .allocate(byteCount: bytes, alignment: 4096)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        self.base = GuestPhysicalAddress(base)
    }
    deinit { buffer.deallocate() }

    func builder<F: PageTableFormat>(_ format: F) throws -> PageTableBuilder<F, MutableGuestMemoryBuffer, BumpTableAllocator> {
        try PageTableBuilder(format: format, memory: memory, allocator: allocator)
    }

    /// Writes a raw entry (4 or 8 bytes) at a guest-physical address.
    func poke(_ address: UInt64, _ value: UInt64, bytes: Int = 8) {
        let ok = bytes == 8 ? memory.store64(value, at: GuestPhysicalAddress(address))
                            : memory.store32(UInt32(value), at: GuestPhysicalAddress(address))
        precondition(ok, "poke outside the arena")
    }

    func walker<F: PageTableFormat>(_ format: F, root: UInt64, budget: WalkBudget = .default) -> PageTableWalker<F, MutableGuestMemoryBuffer> {
        PageTableWalker(format: format, memory: memory, root: GuestPhysicalAddress(root), budget: budget)
    }
}

/// Every entry of every level points at the next table: 512^3 leaves through 3 shared tables
/// (the root, then tables at root + 0x1000, 0x2000 and 0x3000, the last one of leaves).
func sharedTables() -> (Arena, UInt64) {
    let arena = Arena()
    let root = arena.base.rawValue
    let (t2, t1, t0) = (root + 0x1000, root + 0x2000, root + 0x3000)
    for i in 0..<512 {
        let o = UInt64(i * 8)
        arena.poke(root + o, t2 | 3)
        arena.poke(t2 + o, t1 | 3)
        arena.poke(t1 + o, t0 | 3)
        arena.poke(t0 + o, 0x1000 | 3)
    }
    return (arena, root)
}

/// A leaf to map: the reference model of a property test.
struct Mapping: Hashable, CustomStringConvertible {
    var input: UInt64
    var output: UInt64
    var sizeShift: Int
    var permissions: Permissions
    var last: UInt64 { input &+ (1 << UInt64(sizeShift)) &- 1 }
    var description: String { "0x\(String(input, radix: 16)) -> 0x\(String(output, radix: 16)) 2^\(sizeShift) \(permissions)" }
}

func extent(_ input: UInt64, _ output: UInt64, _ shift: Int, _ p: Permissions, level: Int) -> LeafExtent {
    LeafExtent(input: try! IOVARange(base: IOVA(input), length: 1 << UInt64(shift)), output: GuestPhysicalAddress(output),
               size: PageSize(shift: shift), permissions: p, level: level)
}

/// Random non-overlapping leaves for `format`, with sizes from `sizes` and permissions from `perms`.
func randomMappings<F: PageTableFormat>(_ format: F, count: Int, sizes: [Int], perms: [Permissions],
                                       outputBits: Int = 64, rng: inout SplitMix64) -> [Mapping] {
    var out: [Mapping] = []
    let ranges = format.inputRanges
    var attempts = 0
    while out.count < count && attempts < count * 20 {
        attempts += 1
        let s = sizes[Int(rng.next() % UInt64(sizes.count))]
        let r = ranges[Int(rng.next() % UInt64(ranges.count))]
        let span = r.last.rawValue &- r.first.rawValue
        // Bias towards the bottom and top of each range to hit boundaries.
        var offset: UInt64
        switch rng.next() % 4 {
        case 0: offset = rng.next() % (UInt64(1) << 32)
        case 1: offset = span &- (rng.next() % (UInt64(1) << 32))
        default: offset = rng.next() % (span == .max ? .max : span &+ 1)
        }
        offset &= ~lowBits(s)
        let input = r.first.rawValue &+ offset
        guard input >= r.first.rawValue, input &+ lowBits(s) <= r.last.rawValue, input &+ lowBits(s) >= input else { continue }
        let outMax = lowBits(min(outputBits, format.outputBits(leafShift: s)))
        let output = (rng.next() & outMax) & ~lowBits(s)
        let m = Mapping(input: input, output: output, sizeShift: s, permissions: perms[Int(rng.next() % UInt64(perms.count))])
        if out.contains(where: { $0.input <= m.last && m.input <= $0.last }) { continue }
        out.append(m)
    }
    return out.sorted { $0.input < $1.input }
}

func lowBits(_ n: Int) -> UInt64 { n >= 64 ? .max : (1 << UInt64(n)) - 1 }

func asExtents(_ ms: [Mapping]) -> [Triple] {
    ms.map { Triple(input: $0.input, output: $0.output, sizeShift: $0.sizeShift, permissions: $0.permissions) }
}

/// An extent without its level, for comparing formats.
struct Triple: Hashable, CustomStringConvertible {
    var input: UInt64
    var output: UInt64
    var sizeShift: Int
    var permissions: Permissions
    init(input: UInt64, output: UInt64, sizeShift: Int, permissions: Permissions) {
        self.input = input; self.output = output; self.sizeShift = sizeShift; self.permissions = permissions
    }
    init(_ e: LeafExtent) {
        self.init(input: e.input.first.rawValue, output: e.output.rawValue, sizeShift: Int(e.size.shift), permissions: e.permissions)
    }
    var description: String { "0x\(String(input, radix: 16)) -> 0x\(String(output, radix: 16)) 2^\(sizeShift) \(permissions)" }
}

/// One of each format configuration the tests sweep.
enum Formats {
    static let vtd3 = try! VTdSecondStage(levels: 3, outputBits: 39)
    static let vtd4 = try! VTdSecondStage(levels: 4, outputBits: 48)
    static let vtd5 = try! VTdSecondStage(levels: 5, outputBits: 52)
    static let x86 = try! X86FirstStage(levels: 4)
    static let x86_5 = try! X86FirstStage(levels: 5, outputBits: 46)
    static let amdV2Plain = try! X86FirstStage(levels: 4, signExtended: false)
    static let amd3 = try! AMDv1(levels: 3)
    static let amd4 = try! AMDv1(levels: 4)
    static let amd6 = try! AMDv1(levels: 6)
    static let arm4K = try! ArmVMSAv8(stage: .stage1, granule: .size4K, inputBits: 48, outputBits: 48)
    static let arm4KTTBR1 = try! ArmVMSAv8(stage: .stage1, granule: .size4K, inputBits: 39, outputBits: 40, upperHalf: true)
    static let arm4KLPA2 = try! ArmVMSAv8(stage: .stage1, granule: .size4K, inputBits: 52, outputBits: 52)
    static let arm16K = try! ArmVMSAv8(stage: .stage1, granule: .size16K, inputBits: 47, outputBits: 48)
    static let arm64K = try! ArmVMSAv8(stage: .stage1, granule: .size64K, inputBits: 48, outputBits: 52)
    static let arm4KS2 = try! ArmVMSAv8(stage: .stage2, granule: .size4K, inputBits: 40, outputBits: 44, concatenatedRootsLog2: 1)
    static let arm16KS2 = try! ArmVMSAv8(stage: .stage2, granule: .size16K, inputBits: 40, outputBits: 40, concatenatedRootsLog2: 4)
    static let arm64KS2 = try! ArmVMSAv8(stage: .stage2, granule: .size64K, inputBits: 42, outputBits: 48)
    static let v7s = try! ArmV7Short(outputBits: 40)
    static let sv39 = try! RISCVPageTable(mode: .sv39)
    static let sv48 = try! RISCVPageTable(mode: .sv48)
    static let sv57 = try! RISCVPageTable(mode: .sv57)
    static let sv48x4 = try! RISCVPageTable(mode: .sv48, stage: .second)
}
