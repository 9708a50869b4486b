import IOPageTables
import Testing

@Suite("Boundaries: top and bottom of the spaces, widths, builder errors")
struct BoundaryTests {
    @Test func vtdTopOfInputAndMaximumOutput() throws {
        let arena = Arena()
        var b = try arena.builder(Formats.vtd4)
        try b.map(IOVA(0), to: GuestPhysicalAddress(0), size: .size4K, permissions: .read)
        try b.map(IOVA(0xFFFF_C000_0000), to: GuestPhysicalAddress(0xFFFF_C000_0000), size: .size1G, permissions: .readWrite)
        let e = try b.walker().extents()
        #expect(e == [extent(0, 0, 12, .read, level: 0), extent(0xFFFF_C000_0000, 0xFFFF_C000_0000, 30, .readWrite, level: 2)])
        #expect(e.last?.input.last == IOVA(0xFFFF_FFFF_FFFF))
        #expect(throws: PageTableBuildError.inputOutsideSpace(IOVA(0x1_0000_0000_0000))) {
            try b.map(IOVA(0x1_0000_0000_0000), to: GuestPhysicalAddress(0), size: .size4K, permissions: .read)
        }
        #expect(throws: PageTableBuildError.outputBeyondWidth(GuestPhysicalAddress(0x1_0000_0000_0000))) {
            try b.map(IOVA(0x1000), to: GuestPhysicalAddress(0x1_0000_0000_0000), size: .size4K, permissions: .read)
        }
        // 5 levels, 52-bit output: the last output page.
        var b5 = try arena.builder(Formats.vtd5)
        try b5.map(IOVA(0x1FF_FFFF_FFFF_F000), to: GuestPhysicalAddress(0xF_FFFF_FFFF_F000), size: .size4K, permissions: .write)
        #expect(try b5.walker().extents() == [extent(0x1FF_FFFF_FFFF_F000, 0xF_FFFF_FFFF_F000, 12, .write, level: 0)])
    }

    @Test func x86SignExtendedHalves() throws {
        let arena = Arena()
        var b = try arena.builder(Formats.x86)
        let rw: Permissions = [.read, .write]
        for v: UInt64 in [0, 0x7FFF_C000_0000, 0xFFFF_8000_0000_0000, 0xFFFF_FFFF_C000_0000] {
            try b.map(IOVA(v), to: GuestPhysicalAddress(v & 0xF_FFFF_C000_0000), size: .size1G, permissions: rw)
        }
        let e = try b.walker().extents()
        #expect(e.map(\.input.first.rawValue) == [0, 0x7FFF_C000_0000, 0xFFFF_8000_0000_0000, 0xFFFF_FFFF_C000_0000])
        #expect(e.last?.input.last == IOVA(.max))
        #expect(try b.walker().translate(IOVA(.max))?.input.first == IOVA(0xFFFF_FFFF_C000_0000))
        // A range across the non-canonical hole visits both sides and nothing in between.
        let across = try b.walker().extents(try IOVARange(first: IOVA(0x7FFF_FFFF_F000), last: IOVA(0xFFFF_8000_0000_0FFF)))
        #expect(across.map(\.input.first.rawValue) == [0x7FFF_C000_0000, 0xFFFF_8000_0000_0000])
        #expect(throws: PageTableFault.self) { try b.walker().translate(IOVA(0x8000_0000_0000)) }
        #expect(throws: PageTableBuildError.inputOutsideSpace(IOVA(0x8000_0000_0000))) {
            try b.map(IOVA(0x8000_0000_0000), to: GuestPhysicalAddress(0), size: .size4K, permissions: .read)
        }
        // The root entry for the upper half is index 256.
        #expect(arena.memory.load64(at: GuestPhysicalAddress(arena.base.rawValue + 256 * 8))! & 1 == 1)
    }

    @Test func amdSixLevelLargestLeafAtTopOfSpace() throws {
        let arena = Arena()
        var b = try arena.builder(Formats.amd6)
        // Level 5 (ours 4) leaves reach 2^51 via NL=7; the root itself holds none.
        try b.map(IOVA(0xFFF8_0000_0000_0000), to: GuestPhysicalAddress(0), size: PageSize(shift: 51), permissions: .readWrite)
        try b.map(IOVA(0), to: GuestPhysicalAddress(0xF_FFFF_FFFF_F000), size: .size4K, permissions: .read)
        let e = try b.walker().extents()
        #expect(e == [extent(0, 0xF_FFFF_FFFF_F000, 12, .read, level: 0), extent(0xFFF8_0000_0000_0000, 0, 51, .readWrite, level: 4)])
        #expect(e.last?.input.last == IOVA(.max))
        #expect(Formats.amd6.tableBytes(level: 5) == 1024)  // 128 entries
        #expect(Formats.amd6.inputBits == 64)
    }

    @Test func riscvLargestLeafAtTop() throws {
        let arena = Arena()
        var b = try arena.builder(Formats.sv57)
        try b.map(IOVA(0xFFFF_0000_0000_0000), to: GuestPhysicalAddress(0xFF_0000_0000_0000), size: PageSize(shift: 48), permissions: .read)
        try b.map(IOVA(0xFF00_0000_0000_0000), to: GuestPhysicalAddress(0), size: .size4K, permissions: .read)
        let e = try b.walker().extents()
        #expect(e == [extent(0xFF00_0000_0000_0000, 0, 12, .read, level: 0),
                      extent(0xFFFF_0000_0000_0000, 0xFF_0000_0000_0000, 48, .read, level: 4)])
        #expect(e.last?.input.last == IOVA(.max))
    }

    @Test func armConcatenatedRootAndUpperHalf() throws {
        let arena = Arena()
        var b = try arena.builder(Formats.arm4KS2)
        try b.map(IOVA(0xFF_C000_0000), to: GuestPhysicalAddress(0xFFF_C000_0000), size: .size1G, permissions: .readWrite)
        // Index 1023 of the 2-table root: the last entry of the second concatenated table.
        #expect(arena.memory.load64(at: GuestPhysicalAddress(b.root.rawValue + 1023 * 8)) == 0x0040_0FFF_C000_07FD)
        #expect(try b.walker().extents() == [extent(0xFF_C000_0000, 0xFFF_C000_0000, 30, .readWrite, level: 2)])

        var t1 = try arena.builder(Formats.arm4KTTBR1)
        try t1.map(IOVA(0xFFFF_FFFF_FFFF_F000), to: GuestPhysicalAddress(0xFF_FFFF_F000), size: .size4K, permissions: .read)
        try t1.map(IOVA(0xFFFF_FF80_0000_0000), to: GuestPhysicalAddress(0), size: .size2M, permissions: .read)
        #expect(try t1.walker().extents().map(\.input.first.rawValue) == [0xFFFF_FF80_0000_0000, 0xFFFF_FFFF_FFFF_F000])
        #expect(throws: PageTableBuildError.inputOutsideSpace(IOVA(0x1000))) {
            try t1.map(IOVA(0x1000), to: GuestPhysicalAddress(0), size: .size4K, permissions: .read)
        }
    }

    @Test func armLargeOutputAddresses() throws {
        let arena = Arena(bytes: 8 << 20)
        var lpa2 = try arena.builder(Formats.arm4KLPA2)
        try lpa2.map(IOVA(0xF_FFFF_FFFF_F000), to: GuestPhysicalAddress(0xF_FFFF_FFFF_F000), size: .size4K, permissions: .read)
        try lpa2.map(IOVA(0x8_0000_0000_0000), to: GuestPhysicalAddress(0x8_0000_0000_0000), size: PageSize(shift: 39), permissions: .read)
        #expect(try lpa2.walker().extents().map(Triple.init) == [
            Triple(input: 0x8_0000_0000_0000, output: 0x8_0000_0000_0000, sizeShift: 39, permissions: .read),
            Triple(input: 0xF_FFFF_FFFF_F000, output: 0xF_FFFF_FFFF_F000, sizeShift: 12, permissions: .read)])
        var lpa = try arena.builder(Formats.arm64K)
        try lpa.map(IOVA(0xFFFF_FFFF_0000), to: GuestPhysicalAddress(0xF_FFFF_FFFF_0000), size: .size64K, permissions: .read)
        #expect(try lpa.walker().extents().map(\.output.rawValue) == [0xF_FFFF_FFFF_0000])
    }

    @Test func v7sTopOfSpace() throws {
        let arena = Arena()
        var b = try arena.builder(Formats.v7s)
        try b.map(IOVA(0xFF00_0000), to: GuestPhysicalAddress(0xFF_FF00_0000), size: PageSize(shift: 24), permissions: .read)
        try b.map(IOVA(0), to: GuestPhysicalAddress(0xFFFF_F000), size: .size4K, permissions: .read)
        let e = try b.walker().extents()
        #expect(e.map(Triple.init) == [Triple(input: 0, output: 0xFFFF_F000, sizeShift: 12, permissions: .read),
                                       Triple(input: 0xFF00_0000, output: 0xFF_FF00_0000, sizeShift: 24, permissions: .read)])
        #expect(e.last?.input.last == IOVA(0xFFFF_FFFF))
        // Sections cannot reach past 32 output bits; only supersections can.
        #expect(throws: PageTableBuildError.outputBeyondWidth(GuestPhysicalAddress(0x1_0000_0000))) {
            try b.map(IOVA(0x100000), to: GuestPhysicalAddress(0x1_0000_0000), size: PageSize(shift: 20), permissions: .read)
        }
    }

    @Test func builderErrors() throws {
        let arena = Arena()
        var b = try arena.builder(Formats.vtd4)
        #expect(throws: PageTableBuildError.misaligned(input: IOVA(0x1000), output: GuestPhysicalAddress(0), size: .size2M)) {
            try b.map(IOVA(0x1000), to: GuestPhysicalAddress(0), size: .size2M, permissions: .read)
        }
        #expect(throws: PageTableBuildError.unsupportedLeafSize(.size64K)) {
            try b.map(IOVA(0), to: GuestPhysicalAddress(0), size: .size64K, permissions: .read)
        }
        #expect(throws: PageTableBuildError.permissionsNotExpressible([])) {
            try b.map(IOVA(0), to: GuestPhysicalAddress(0), size: .size4K, permissions: [])
        }
        var x = try arena.builder(Formats.x86)
        #expect(throws: PageTableBuildError.permissionsNotExpressible(.write)) {
            try x.map(IOVA(0), to: GuestPhysicalAddress(0), size: .size4K, permissions: .write)
        }
        // Unmap never splits: a 4K hole in a 2M leaf is refused and nothing is removed.
        try b.map(IOVA(0x20_0000), to: GuestPhysicalAddress(0x40_0000), size: .size2M, permissions: .read)
        let leaf2M = extent(0x20_0000, 0x40_0000, 21, .read, level: 1)
        #expect(throws: PageTableBuildError.wouldSplitLeaf(leaf2M)) { try b.unmap(try IOVARange(base: IOVA(0x20_1000), length: 0x1000)) }
        #expect(try b.walker().extents() == [leaf2M])
        #expect(try b.unmap(try IOVARange(base: IOVA(0x100_0000), length: 0x1000)) == 0)
        // Overlap with a larger existing leaf.
        #expect(throws: PageTableBuildError.alreadyMapped(IOVA(0x20_3000))) {
            try b.map(IOVA(0x20_3000), to: GuestPhysicalAddress(0), size: .size4K, permissions: .read)
        }
        // Out of table memory: a 3-page arena fits the root and one more table.
        let tiny = Arena(bytes: 2 * 4096)
        var t = try tiny.builder(Formats.vtd4)
        #expect(throws: PageTableBuildError.outOfTableMemory) {
            try t.map(IOVA(0), to: GuestPhysicalAddress(0), size: .size4K, permissions: .read)
        }
    }

    @Test func emptiedSubtreeCanBecomeALargeLeaf() throws {
        let arena = Arena()
        var b = try arena.builder(Formats.vtd4)
        try b.map(IOVA(0x20_0000), to: GuestPhysicalAddress(0), size: .size4K, permissions: .read)
        try b.unmap(try IOVARange(base: IOVA(0x20_0000), length: 0x1000))
        try b.map(IOVA(0x20_0000), to: GuestPhysicalAddress(0x60_0000), size: .size2M, permissions: .read)
        #expect(try b.walker().extents() == [extent(0x20_0000, 0x60_0000, 21, .read, level: 1)])
    }

    @Test func bestFitRangeMapping() throws {
        // Linux generic_pt regression vector: [0x3fe400000, 0x4c0600000) = 14x2M + 3x1G + 3x2M.
        let arena = Arena()
        var b = try arena.builder(Formats.vtd4)
        let r = try IOVARange(first: IOVA(0x3_FE40_0000), last: IOVA(0x4_C05F_FFFF))
        #expect(try b.map(r, to: GuestPhysicalAddress(0x3_FE40_0000), permissions: .readWrite) == 20)
        let e = try b.walker().extents()
        #expect(e.filter { $0.size == .size2M }.count == 17)
        #expect(e.filter { $0.size == .size1G }.count == 3)
        // A failing range map removes what it installed.
        #expect(throws: PageTableBuildError.self) {
            try b.map(try IOVARange(first: IOVA(0x3_FE00_0000), last: IOVA(0x3_FE40_0FFF)), to: GuestPhysicalAddress(0), permissions: .read)
        }
        #expect(try b.walker().extents() == e)
    }

    @Test func rangeWalkKeepsLeavesWhole() throws {
        let arena = Arena()
        var b = try arena.builder(Formats.arm4K)
        try b.map(IOVA(0x1_0000), to: GuestPhysicalAddress(0x8_0000), size: .size64K, permissions: .read)
        try b.map(IOVA(0x20_0000), to: GuestPhysicalAddress(0x40_0000), size: .size2M, permissions: .read)
        let w = b.walker()
        // A range starting inside the contiguous run and ending inside the block.
        let e = try w.extents(try IOVARange(first: IOVA(0x1_7000), last: IOVA(0x20_1000)))
        #expect(e.map(Triple.init) == [Triple(input: 0x1_0000, output: 0x8_0000, sizeShift: 16, permissions: .read),
                                       Triple(input: 0x20_0000, output: 0x40_0000, sizeShift: 21, permissions: .read)])
        #expect(try w.extents(try IOVARange(first: IOVA(0x2_0000), last: IOVA(0x1F_FFFF))).isEmpty)
    }
}
