import IOPageTables
import TestSupport
import Testing

/// Every expressible permission set of a format.
func expressible<F: PageTableFormat>(_ f: F) -> [Permissions] {
    (0..<16).map { Permissions(rawValue: UInt8($0)) }.filter { f.canExpress($0) }
}

func leafShifts<F: PageTableFormat>(_ f: F, max: Int = 40) -> [Int] {
    f.allLeafSizes.sizes.map { Int($0.shift) }.filter { $0 < f.inputBits - 1 && $0 <= max }
}

func mapAll<F: PageTableFormat>(_ b: inout PageTableBuilder<F, MutableGuestMemoryBuffer, BumpTableAllocator>, _ ms: [Mapping]) throws {
    for m in ms {
        try b.map(IOVA(m.input), to: GuestPhysicalAddress(m.output), size: PageSize(shift: m.sizeShift), permissions: m.permissions)
    }
}

/// Build random leaves, walk them back, overmap must fail, unmap half, walk again, translate.
func checkRoundTrip<F: PageTableFormat>(_ f: F, seed: UInt64, count: Int = 40, arenaBytes: Int = 16 << 20) throws {
    let arena = Arena(bytes: arenaBytes)
    var b = try arena.builder(f)
    var rng = SplitMix64(seed: seed)
    let ms = randomMappings(f, count: count, sizes: leafShifts(f), perms: expressible(f), rng: &rng)
    #expect(ms.count > count / 2)
    try mapAll(&b, ms)
    let walked = try b.walker().extents().map(Triple.init)
    #expect(walked == asExtents(ms), "\(f)")

    let first = ms[0]
    #expect(throws: PageTableBuildError.alreadyMapped(IOVA(first.input))) {
        try b.map(IOVA(first.input), to: GuestPhysicalAddress(first.output), size: PageSize(shift: first.sizeShift),
                  permissions: first.permissions)
    }

    var kept: [Mapping] = []
    for (i, m) in ms.enumerated() {
        if i % 2 == 0 {
            #expect(try b.unmap(try IOVARange(first: IOVA(m.input), last: IOVA(m.last))) == 1 << UInt64(m.sizeShift))
        } else {
            kept.append(m)
        }
    }
    #expect(try b.walker().extents().map(Triple.init) == asExtents(kept))
    for m in kept {
        let inner = m.input &+ ((1 << UInt64(m.sizeShift)) / 2)
        let e = try b.walker().translate(IOVA(inner))
        #expect(e.map(Triple.init) == Triple(input: m.input, output: m.output, sizeShift: m.sizeShift, permissions: m.permissions))
    }
    // Unmapped leaves can be mapped again.
    try mapAll(&b, ms.enumerated().filter { $0.offset % 2 == 0 }.map(\.element))
    #expect(try b.walker().extents().map(Triple.init) == asExtents(ms))
}

@Suite("Round trips: build, walk, unmap, walk")
struct RoundTripTests {
    @Test func vtdSecondStage() throws {
        try checkRoundTrip(Formats.vtd3, seed: 1)
        try checkRoundTrip(Formats.vtd4, seed: 2)
        try checkRoundTrip(Formats.vtd5, seed: 3)
    }
    @Test func x86FirstStage() throws {
        try checkRoundTrip(Formats.x86, seed: 4)
        try checkRoundTrip(Formats.x86_5, seed: 5)
        try checkRoundTrip(Formats.amdV2Plain, seed: 6)
    }
    @Test func amdV1() throws {
        try checkRoundTrip(Formats.amd3, seed: 7)
        try checkRoundTrip(Formats.amd4, seed: 8)
        try checkRoundTrip(Formats.amd6, seed: 9)
    }
    @Test func armStage1() throws {
        try checkRoundTrip(Formats.arm4K, seed: 10)
        try checkRoundTrip(Formats.arm4KTTBR1, seed: 11)
        try checkRoundTrip(Formats.arm4KLPA2, seed: 12)
        try checkRoundTrip(Formats.arm16K, seed: 13, arenaBytes: 32 << 20)
        try checkRoundTrip(Formats.arm64K, seed: 14, count: 24, arenaBytes: 32 << 20)
    }
    @Test func armStage2() throws {
        try checkRoundTrip(Formats.arm4KS2, seed: 15)
        try checkRoundTrip(Formats.arm16KS2, seed: 16, arenaBytes: 32 << 20)
        try checkRoundTrip(Formats.arm64KS2, seed: 17, count: 24, arenaBytes: 32 << 20)
    }
    @Test func armV7Short() throws {
        try checkRoundTrip(Formats.v7s, seed: 18)
    }
    @Test func riscV() throws {
        try checkRoundTrip(Formats.sv39, seed: 19)
        try checkRoundTrip(Formats.sv48, seed: 20)
        try checkRoundTrip(Formats.sv57, seed: 21)
        try checkRoundTrip(Formats.sv48x4, seed: 22)
    }
}

/// The same random leaves built in two formats walk to the same extents. `a` has the smaller
/// (or equal) input space and output width.
func checkEquivalent<A: PageTableFormat, B: PageTableFormat>(_ a: A, _ b: B, seed: UInt64, count: Int = 32) throws {
    let sizes = Set(leafShifts(a)).intersection(leafShifts(b)).sorted()
    let perms = expressible(a).filter { b.canExpress($0) }
    #expect(!sizes.isEmpty && !perms.isEmpty)
    var rng = SplitMix64(seed: seed)
    let ms = randomMappings(a, count: count, sizes: sizes, perms: perms, outputBits: min(a.outputBits, b.outputBits), rng: &rng)
    let arenaA = Arena(bytes: 32 << 20)
    let arenaB = Arena(bytes: 32 << 20)
    var ba = try arenaA.builder(a)
    var bb = try arenaB.builder(b)
    try mapAll(&ba, ms)
    try mapAll(&bb, ms)
    let wa = try ba.walker().extents().map(Triple.init)
    let wb = try bb.walker().extents().map(Triple.init)
    #expect(wa == wb)
    #expect(wa == asExtents(ms))
}

@Suite("Cross-format equivalence")
struct CrossFormatTests {
    @Test func vtdAndAMD() throws { try checkEquivalent(Formats.vtd4, Formats.amd4, seed: 100) }
    @Test func vtdAndArm4K() throws { try checkEquivalent(Formats.vtd4, Formats.arm4K, seed: 101) }
    @Test func amdAndArm64K() throws { try checkEquivalent(Formats.amd4, Formats.arm64K, seed: 102) }
    @Test func arm16KAndVTd() throws { try checkEquivalent(Formats.arm16K, Formats.vtd4, seed: 103) }
    @Test func x86AndSv48() throws { try checkEquivalent(Formats.x86, Formats.sv48, seed: 104) }
    @Test func v7sAndArmStage2() throws { try checkEquivalent(Formats.v7s, Formats.arm4KS2, seed: 105) }
    @Test func amdAndSv48x4() throws { try checkEquivalent(Formats.amd4, Formats.sv48x4, seed: 106) }
    @Test func vtd5AndAMD6() throws { try checkEquivalent(Formats.vtd5, Formats.amd6, seed: 107) }
    @Test func arm16KAndAMD() throws { try checkEquivalent(Formats.arm16K, Formats.amd4, seed: 108) }
}

/// Build random leaves in `a` with its own sizes, mirror into `b`, compare coalesced runs.
func checkMirror<A: PageTableFormat, B: PageTableFormat>(_ a: A, _ b: B, seed: UInt64, perms: [Permissions]) throws {
    var rng = SplitMix64(seed: seed)
    let ms = randomMappings(a, count: 24, sizes: leafShifts(a, max: 30), perms: perms, outputBits: b.outputBits, rng: &rng)
    let arenaA = Arena(bytes: 16 << 20)
    let arenaB = Arena(bytes: 32 << 20)
    var ba = try arenaA.builder(a)
    try mapAll(&ba, ms)
    var bb = try arenaB.builder(b)
    #expect(try bb.mirror(ba.walker()) == ms.count)
    let ra = TranslationRun.coalescing(try ba.walker().extents())
    let rb = TranslationRun.coalescing(try bb.walker().extents())
    #expect(ra == rb)
}

@Suite("Translation between formats")
struct MirrorTests {
    @Test func amdIntoVTd() throws { try checkMirror(Formats.amd4, Formats.vtd4, seed: 200, perms: [.read, .readWrite, .write]) }
    @Test func arm4KIntoAMD() throws { try checkMirror(Formats.arm4K, Formats.amd4, seed: 201, perms: [.read, .readWrite]) }
    @Test func arm16KIntoX86() throws { try checkMirror(Formats.arm16K, Formats.x86, seed: 202, perms: [.read, .readWrite, [.read, .user, .execute]]) }
    @Test func v7sIntoSv39() throws { try checkMirror(Formats.v7s, Formats.sv39, seed: 203, perms: [.read, .readWrite, [.read, .execute]]) }

    @Test func mirrorRefusesWhatTheTargetCannotExpress() throws {
        let arena = Arena()
        var src = try arena.builder(Formats.vtd4)
        try src.map(IOVA(0x1000), to: GuestPhysicalAddress(0x5000), size: .size4K, permissions: .write)
        let arena2 = Arena()
        var dst = try arena2.builder(Formats.x86)
        #expect(throws: PageTableBuildError.permissionsNotExpressible(.write)) { try dst.mirror(src.walker()) }
        var dst64K = try arena2.builder(Formats.arm64K)
        #expect(throws: PageTableBuildError.self) { try dst64K.mirror(src.walker()) }
    }
}
