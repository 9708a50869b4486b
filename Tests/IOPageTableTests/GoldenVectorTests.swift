import IOPageTables
import Testing

// Entries written by hand from the specifications' bit layouts (see each format's doc comment).

func leaf(_ output: UInt64, _ shift: Int, _ p: Permissions, shared: Bool = true) -> DecodedEntry {
    .leaf(DecodedLeaf(output: output, sizeShift: shift, permissions: p, replicasShareOutput: shared))
}

@Suite("Golden vectors: VT-d second stage (§9.8)")
struct VTdGoldenTests {
    let f = Formats.vtd4

    @Test func decodes() {
        // SL-PTE: R|W, address 0x1_2345_6000.
        #expect(f.decode(0x0000_0001_2345_6003, level: 0) == leaf(0x1_2345_6000, 12, .readWrite))
        // Write-only is representable.
        #expect(f.decode(0x0000_0000_0000_5002, level: 0) == leaf(0x5000, 12, .write))
        // PDE with PS (b7): 2M leaf, read-only.
        #expect(f.decode(0x0000_0000_4020_0081, level: 1) == leaf(0x4020_0000, 21, .read))
        // PDPE with PS: 1G leaf.
        #expect(f.decode(0x0000_0000_C000_0083, level: 2) == leaf(0xC000_0000, 30, .readWrite))
        // No present bit: R=W=0 is empty whatever the address says.
        #expect(f.decode(0x0000_0000_1234_5000, level: 0) == .empty)
        // Table pointer with R|W.
        #expect(f.decode(0x0000_0000_0000_7003, level: 2) == .table(GuestPhysicalAddress(0x7000), nextLevel: 1, allows: .readWrite))
        // SL-PTE ignores b7 (no PS at the last level).
        #expect(f.decode(0x0000_0000_0000_7083, level: 0) == leaf(0x7000, 12, .readWrite))
        // Ignored bits 52..61 and 63 are ignored.
        #expect(f.decode(0xBFF0_0000_0000_7003, level: 0) == leaf(0x7000, 12, .readWrite))
    }

    @Test func reservedBits() {
        // 2M leaf: address bits 20:12 reserved.
        #expect(f.decode(0x0000_0000_4020_1083, level: 1) == .fault(.reservedBitsSet))
        // 1G leaf: bits 29:12 reserved.
        #expect(f.decode(0x0000_0000_C010_0083, level: 2) == .fault(.reservedBitsSet))
        // PS in a PML4E is reserved.
        #expect(f.decode(0x0000_0000_0000_1083, level: 3) == .fault(.reservedBitsSet))
        // SNP (b11) without ECAP.SC, TM (b62).
        #expect(f.decode(0x0000_0000_0000_5803, level: 0) == .fault(.reservedBitsSet))
        #expect(try! VTdSecondStage(snoopControl: true).decode(0x0000_0000_0000_5803, level: 0) == leaf(0x5000, 12, .readWrite))
        #expect(f.decode(0x4000_0000_0000_5003, level: 0) == .fault(.reservedBitsSet))
        // Address bit 48 with HAW 48.
        #expect(f.decode(0x0001_0000_0000_1003, level: 0) == .fault(.outputBeyondWidth))
        // 1G leaf without SLLPS 1G support.
        #expect(try! VTdSecondStage(supports1G: false).decode(0x0000_0000_C000_0083, level: 2) == .fault(.reservedBitsSet))
    }

    @Test func encodes() throws {
        let arena = Arena()
        var b = try arena.builder(f)
        try b.map(IOVA(0x1234_5000), to: GuestPhysicalAddress(0xABCD_E000), size: .size4K, permissions: .readWrite)
        try b.map(IOVA(0x4000_0000), to: GuestPhysicalAddress(0x8000_0000), size: .size1G, permissions: .read)
        // Root table at the arena base; IOVA 0x1234_5000 indexes 0/0/0x91/0x145.
        let root = arena.base.rawValue
        let l3 = arena.memory.load64(at: GuestPhysicalAddress(root))!
        #expect(l3 & 0xFFF == 0x003)
        let l2 = arena.memory.load64(at: GuestPhysicalAddress(l3 & ~0xFFF))!
        #expect(arena.memory.load64(at: GuestPhysicalAddress((l3 & ~0xFFF) + 8)) == 0x8000_0081)
        let l1 = arena.memory.load64(at: GuestPhysicalAddress(l2 & ~0xFFF + 0x91 * 8))!
        #expect(arena.memory.load64(at: GuestPhysicalAddress(l1 & ~0xFFF + 0x145 * 8)) == 0xABCD_E003)
    }
}

@Suite("Golden vectors: x86-64 first stage (VT-d §9.7, AMD §2.2.6)")
struct X86GoldenTests {
    let f = Formats.x86

    @Test func decodes() {
        // P|RW|US|A with XD.
        #expect(f.decode(0x8000_0000_1234_5027, level: 0) == leaf(0x1234_5000, 12, [.read, .write, .user]))
        // 4K PTE: b7 is PAT, not PS.
        #expect(f.decode(0x0000_0000_1234_50A1, level: 0) == leaf(0x1234_5000, 12, [.read, .execute]))
        // 2M PDE with PS and PAT (b12): PAT is not an address bit.
        #expect(f.decode(0x0000_0000_4020_1087, level: 1) == leaf(0x4020_0000, 21, [.read, .write, .user, .execute]))
        // 1G PDPE.
        #expect(f.decode(0x0000_0000_C000_1081, level: 2) == leaf(0xC000_0000, 30, [.read, .execute]))
        // Not present.
        #expect(f.decode(0xFFFF_FFFF_FFFF_FFFE, level: 0) == .empty)
        // Table without RW: the subtree is read-only; XD: no execute below.
        #expect(f.decode(0x8000_0000_0000_9005, level: 3) == .table(GuestPhysicalAddress(0x9000), nextLevel: 2, allows: [.read, .user]))
    }

    @Test func reservedBits() {
        // 2M leaf with b13 set (reserved between PAT and the address).
        #expect(f.decode(0x0000_0000_4020_2081, level: 1) == .fault(.reservedBitsSet))
        // PS in a PML4E.
        #expect(f.decode(0x0000_0000_0000_1081, level: 3) == .fault(.reservedBitsSet))
        // Address above MAXPHYADDR (46).
        #expect(Formats.x86_5.decode(0x0000_4000_0000_1001, level: 0) == .fault(.outputBeyondWidth))
    }

    @Test func encodes() {
        #expect(f.encodeLeaf(output: 0x1234_5000, sizeShift: 12, level: 0, permissions: .readWrite, replica: 0) == 0x8000_0000_1234_5063)
        #expect(f.encodeLeaf(output: 0x4020_0000, sizeShift: 21, level: 1, permissions: [.read, .user, .execute], replica: 0) == 0x4020_00A5)
        #expect(f.encodeTable(GuestPhysicalAddress(0x9000), level: 1) == 0x9027)
    }
}

@Suite("Golden vectors: AMD v1 (§2.2.3, Table 14)")
struct AMDGoldenTests {
    let f = Formats.amd4
    let rw: UInt64 = 0x6000_0000_0000_0000  // IR | IW

    @Test func pageSizeEncodings() {
        // 4K: NL=0 at level 1 (ours 0).
        #expect(f.decode(rw | 0x1234_5001, level: 0) == leaf(0x1234_5000, 12, .readWrite))
        // 8K: NL=7, address bit 12 = 0.
        #expect(f.decode(rw | 0x1234_4E01, level: 0) == leaf(0x1234_4000, 13, .readWrite))
        // 16K: bit 12 = 1, bit 13 = 0.
        #expect(f.decode(rw | 0x1234_5E01, level: 0) == leaf(0x1234_4000, 14, .readWrite))
        // 64K: bits 14:12 = 111, bit 15 = 0 (16 replicas in a level-1 table).
        #expect(f.decode(rw | 0x1_0000_7E01, level: 0) == leaf(0x1_0000_0000, 16, .readWrite))
        // 2M default at level 2 (ours 1): NL=0.
        #expect(f.decode(0x2000_0000_0020_0001, level: 1) == leaf(0x20_0000, 21, .read))
        // 4M: bits 20:12 one, bit 21 zero, 2 replicas at level 2.
        #expect(f.decode(rw | 0x4_001F_FE01, level: 1) == leaf(0x4_0000_0000, 22, .readWrite))
        // 1G default at level 3.
        #expect(f.decode(rw | 0x4000_0001, level: 2) == leaf(0x4000_0000, 30, .readWrite))
    }

    @Test func tablesAndFaults() {
        // PDE at level 3 (ours 2) naming level 2 next; IR only.
        #expect(f.decode(0x2000_0000_0000_9401, level: 2) == .table(GuestPhysicalAddress(0x9000), nextLevel: 1, allows: .read))
        // Level skip: a level-4 PDE naming level 1.
        #expect(f.decode(rw | 0x9201, level: 3) == .table(GuestPhysicalAddress(0x9000), nextLevel: 0, allows: .readWrite))
        // Reserved bits 58:52.
        #expect(f.decode(rw | 0x0010_0000_0000_1001, level: 0) == .fault(.reservedBitsSet))
        // NL=7 whose size does not fit the level: 64K encoding at level 2.
        #expect(f.decode(rw | 0x1_0000_7E01, level: 1) == .fault(.invalidPageSizeEncoding))
        // NextLevel 3 at level 1 (ours 0).
        #expect(f.decode(rw | 0x9601, level: 0) == .fault(.invalidNextLevel))
        // The 6-level root holds no leaves.
        #expect(Formats.amd6.decode(rw | 0x1, level: 5) == .fault(.leafNotAllowedAtLevel))
        // Default-size 2M leaf with low address bits.
        #expect(f.decode(rw | 0x20_1001, level: 1) == .fault(.misalignedOutput))
    }

    @Test func encodes() {
        #expect(f.encodeLeaf(output: 0x1_0000_0000, sizeShift: 16, level: 0, permissions: .readWrite, replica: 3) == rw | 0x1_0000_7E01)
        #expect(f.encodeLeaf(output: 0x4_0000_0000, sizeShift: 22, level: 1, permissions: .readWrite, replica: 0) == rw | 0x4_001F_FE01)
        #expect(f.encodeTable(GuestPhysicalAddress(0x9000), level: 2) == rw | 0x9401)
    }
}

@Suite("Golden vectors: Arm VMSAv8-64 descriptors")
struct ArmGoldenTests {
    @Test func stage1FourK() {
        let f = Formats.arm4K
        // Page: 0b11, SH=11, AF, PXN|UXN, AP=00 (EL1 read/write).
        #expect(f.decode(0x0060_0000_1234_5703, level: 0) == leaf(0x1234_5000, 12, .readWrite, shared: false))
        // 2M block: AP[2]=1 (read-only), AP[1]=1 (EL0), executable.
        #expect(f.decode(0x0000_0000_4020_04C1, level: 1) == leaf(0x4020_0000, 21, [.read, .user, .execute], shared: false))
        // 1G block at level 1 (ours 2).
        #expect(f.decode(0x0000_0000_C000_0401, level: 2) == leaf(0xC000_0000, 30, [.read, .write, .execute], shared: false))
        // Contiguous page (b52): a 64K run of 16, this item carrying its own output.
        #expect(f.decode(0x0010_0000_1235_0403 | 0x3000, level: 0) == leaf(0x1235_3000, 16, [.read, .write, .execute], shared: false))
        // AF=0 grants nothing (no hardware access flag).
        #expect(f.decode(0x0000_0000_1234_5303, level: 0) == leaf(0x1234_5000, 12, [], shared: false))
        // Table with APTable[1] (b62) and UXNTable (b60).
        #expect(f.decode(0x5000_0000_0000_9003, level: 3) == .table(GuestPhysicalAddress(0x9000), nextLevel: 2, allows: [.read, .user]))
        // 0b01 at the last level and a level-0 block without LPA2 are invalid.
        #expect(f.decode(0x0000_0000_1234_5401, level: 0) == .fault(.leafNotAllowedAtLevel))
        #expect(f.decode(0x0000_0000_0000_0401, level: 3) == .fault(.leafNotAllowedAtLevel))
        // Block with output bits below the block size.
        #expect(f.decode(0x0000_0000_4020_1401, level: 1) == .fault(.reservedBitsSet))
        // Bits 49:48 are RES0 without 52-bit addressing.
        #expect(f.decode(0x0001_0000_0000_0403, level: 0) == .fault(.reservedBitsSet))
        // Invalid: b0 clear.
        #expect(f.decode(0xFFFF_FFFF_FFFF_FFFE, level: 0) == .empty)
    }

    @Test func stage2() {
        let f = Formats.arm4KS2
        // S2AP b6 = read, b7 = write; XN b54.
        #expect(f.decode(0x0040_0000_1234_5443, level: 0) == leaf(0x1234_5000, 12, .read, shared: false))
        #expect(f.decode(0x0000_0000_1234_5483, level: 0) == leaf(0x1234_5000, 12, [.write, .execute], shared: false))
        // Output above a 44-bit OAS.
        #expect(f.decode(0x0000_1000_0000_0443, level: 0) == .fault(.outputBeyondWidth))
        // Concatenated root: 2 tables of 512 entries for a 40-bit IPA.
        #expect(f.topLevel == 2)
        #expect(f.indexBits(level: 2) == 10)
        #expect(f.tableBytes(level: 2) == 8192)
        #expect(Formats.arm16KS2.indexBits(level: Formats.arm16KS2.topLevel) == 15)
    }

    @Test func granulesAndLargeOutput() {
        // 64K granule with FEAT_LPA: OA[51:48] in b15:12.
        let f64 = Formats.arm64K
        #expect(f64.decode(0x0000_BCDE_F123_A703 | 0x0060_0000_0000_0000, level: 0) == leaf(0xA_BCDE_F123_0000, 16, .readWrite, shared: false))
        // 64K contiguous: 32 pages = 2M.
        #expect(f64.decode(0x0010_0000_0001_0403, level: 0) == leaf(0x1_0000, 21, [.read, .write, .execute], shared: false))
        // 512M block at level 2 (ours 1); 4T block at level 1 with 52-bit output.
        #expect(f64.decode(0x0000_0000_2000_0401, level: 1) == leaf(0x2000_0000, 29, [.read, .write, .execute], shared: false))
        #expect(f64.decode(0x0000_0400_0000_0401, level: 2) == leaf(0x400_0000_0000, 42, [.read, .write, .execute], shared: false))
        // 4K with LPA2: OA[51:50] in b9:8.
        #expect(Formats.arm4KLPA2.decode(0x0000_0000_1234_5703, level: 0) == leaf(0xC_0000_1234_5000, 12, [.read, .write, .execute], shared: false))
        #expect(Formats.arm4KLPA2.topLevel == 4)
        #expect(Formats.arm4KLPA2.indexBits(level: 4) == 4)
        // 16K granule: 11 bits per level; 47 = 14 + 3 * 11 gives three full levels.
        #expect(Formats.arm16K.topLevel == 2)
        #expect(Formats.arm16K.itemShift(level: 1) == 25)
        // 16K contiguous page run: 128 x 16K = 2M; table pointer bits 13:12 are RES0.
        #expect(Formats.arm16K.decode(0x0010_0000_0020_0403, level: 0) == leaf(0x20_0000, 21, [.read, .write, .execute], shared: false))
        #expect(Formats.arm16K.decode(0x0000_0000_0000_5003, level: 1) == .fault(.reservedBitsSet))
    }

    @Test func encodes() {
        let f = Formats.arm4K
        #expect(f.encodeLeaf(output: 0x1234_5000, sizeShift: 12, level: 0, permissions: .readWrite, replica: 0) == 0x0060_0000_1234_5703)
        #expect(f.encodeLeaf(output: 0x1235_0000, sizeShift: 16, level: 0, permissions: [.read, .user, .execute], replica: 3) == 0x0010_0000_1235_37C3)
        #expect(f.encodeTable(GuestPhysicalAddress(0x9000), level: 1) == 0x9003)
        #expect(Formats.arm64K.encodeLeaf(output: 0xA_BCDE_F123_0000, sizeShift: 16, level: 0, permissions: .readWrite, replica: 0)
                == 0x0060_BCDE_F123_A703)
        #expect(Formats.arm4KS2.encodeLeaf(output: 0x5000, sizeShift: 12, level: 0, permissions: .readWrite, replica: 0) == 0x0040_0000_0000_57FF)
    }
}

@Suite("Golden vectors: Arm short descriptors (v7s)")
struct V7sGoldenTests {
    let f = Formats.v7s

    @Test func decodes() {
        // Small page: 0b1x, AP0 (b4) = AF, AP1 (b5) = unprivileged, XN (b0) clear.
        #expect(f.decode(0x1234_5032, level: 0) == leaf(0x1234_5000, 12, [.read, .write, .user, .execute]))
        // Small page, XN, AP2 (b9) read-only.
        #expect(f.decode(0x1234_5213, level: 0) == leaf(0x1234_5000, 12, .read))
        // Large page (0b01): XN in b15.
        #expect(f.decode(0xABCD_8011, level: 0) == leaf(0xABCD_0000, 16, .readWrite))
        #expect(f.decode(0xABCD_8211, level: 0) == leaf(0xABCD_0000, 16, .read))
        // Section: AF b10, AP2 b15, XN b4.
        #expect(f.decode(0x4010_8412, level: 1) == leaf(0x4010_0000, 20, .read))
        // Supersection (b18): PA[35:32] = 3 in b23:20, PA[39:36] = 5 in b8:5.
        #expect(f.decode(0x1234_04A2, level: 1) == leaf(0x53_1200_0000, 24, [.read, .write, .execute]))
        // Table pointer (1 KiB aligned).
        #expect(f.decode(0x0010_0C01, level: 1) == .table(GuestPhysicalAddress(0x10_0C00), nextLevel: 0, allows: .all))
        // Section with AF clear grants nothing.
        #expect(f.decode(0x4010_0002, level: 1) == leaf(0x4010_0000, 20, []))
        // Large page with b8:6 set; supersection beyond a 32-bit output.
        #expect(f.decode(0xABCD_0051, level: 0) == .fault(.reservedBitsSet))
        #expect(try! ArmV7Short().decode(0x1234_04A2, level: 1) == .fault(.outputBeyondWidth))
    }

    @Test func encodes() {
        #expect(f.encodeLeaf(output: 0x1234_5000, sizeShift: 12, level: 0, permissions: [.read, .write, .user, .execute], replica: 0) == 0x1234_5032)
        #expect(f.encodeLeaf(output: 0x53_1200_0000, sizeShift: 24, level: 1, permissions: [.read, .write, .execute], replica: 0) == 0x1234_04A2)
        #expect(f.encodeLeaf(output: 0xABCD_0000, sizeShift: 16, level: 0, permissions: .read, replica: 0) == 0xABCD_8211)
        #expect(f.encodeTable(GuestPhysicalAddress(0x10_0C00), level: 1) == 0x0010_0C01)
    }
}

@Suite("Golden vectors: RISC-V Sv39/48/57")
struct RISCVGoldenTests {
    let f = Formats.sv39

    @Test func decodes() {
        // V|R|W|A|D, PPN 0x12345.
        #expect(f.decode(0x048D_14C7, level: 0) == leaf(0x1234_5000, 12, .readWrite))
        // Svnapot 64K: N, ppn[3:0] = 1000, V|R|X|A.
        #expect(f.decode(0x8000_0000_048D_204B, level: 0) == leaf(0x1234_0000, 16, [.read, .execute]))
        // 2M superpage at level 1 with U.
        #expect(f.decode(0x0008_0000 | 0xD3, level: 1) == leaf(0x20_0000, 21, [.read, .user]))
        // Pointer (xwr = 000).
        #expect(f.decode(0x0000_2401, level: 2) == .table(GuestPhysicalAddress(0x9000), nextLevel: 1, allows: .all))
        // A=0 grants nothing; D=0 removes write.
        #expect(f.decode(0x048D_1487, level: 0) == leaf(0x1234_5000, 12, []))
        #expect(f.decode(0x048D_1447, level: 0) == leaf(0x1234_5000, 12, .read))
    }

    @Test func faults() {
        // xwr = 010 and 110 are reserved.
        #expect(f.decode(0x048D_14C5, level: 0) == .fault(.reservedBitsSet))
        #expect(f.decode(0x048D_14CD, level: 0) == .fault(.reservedBitsSet))
        // Bits 60:54 reserved; PBMT = 3 reserved.
        #expect(f.decode(0x0040_0000_048D_14C7, level: 0) == .fault(.reservedBitsSet))
        #expect(f.decode(0x6000_0000_048D_14C7, level: 0) == .fault(.reservedBitsSet))
        // Misaligned 2M superpage (ppn[0] nonzero).
        #expect(f.decode(0x0008_0400 | 0xC7, level: 1) == .fault(.misalignedOutput))
        // Svnapot with ppn[3:0] != 1000.
        #expect(f.decode(0x8000_0000_048D_104B, level: 0) == .fault(.invalidPageSizeEncoding))
        // Pointer at the last level; pointer with A set.
        #expect(f.decode(0x0000_2401, level: 0) == .fault(.leafNotAllowedAtLevel))
        #expect(f.decode(0x0000_2441, level: 1) == .fault(.reservedBitsSet))
    }

    @Test func layout() {
        #expect(Formats.sv39.inputBits == 39)
        #expect(Formats.sv57.inputBits == 57)
        // Sv48x4: 16 KiB root, 50-bit guest-physical input.
        #expect(Formats.sv48x4.inputBits == 50)
        #expect(Formats.sv48x4.tableBytes(level: 3) == 16384)
        #expect(f.encodeLeaf(output: 0x1234_0000, sizeShift: 16, level: 0, permissions: [.read, .execute], replica: 5) == 0x8000_0000_048D_204B)
    }
}
