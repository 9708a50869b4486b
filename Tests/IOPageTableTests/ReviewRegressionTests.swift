import IOPageTables
import Testing

/// Cases found in review: each failed before its fix.
@Suite struct ReviewRegressionTests {
    /// Linux builds x86 first-stage IO page tables with U=1 and XD clear (`rwxu`); mirroring such
    /// a guest table into VT-d second stage, which has only R and W, keeps read and write.
    @Test func mirroringDropsRightsTheTargetCannotExpress() throws {
        let source = Arena(), target = Arena()
        var guest = try source.builder(try X86FirstStage(levels: 4))
        try guest.map(IOVA(0x20_0000), to: GuestPhysicalAddress(0x4000_0000), size: .size2M, permissions: .all)
        try guest.map(IOVA(0x40_0000), to: GuestPhysicalAddress(0x5000_0000), size: .size4K, permissions: [.read, .user])
        var host = try target.builder(try VTdSecondStage(levels: 4))
        #expect(try host.mirror(guest.walker()) == 2)
        let leaves = try host.walker().extents()
        #expect(leaves.map(\.permissions) == [.readWrite, .read])
        #expect(leaves.map(\.output) == [GuestPhysicalAddress(0x4000_0000), GuestPhysicalAddress(0x5000_0000)])
    }

    /// Write-only cannot be expressed in x86 first stage (present implies readable); the mirror
    /// refuses instead of granting read.
    @Test func mirroringNeverAddsReadOrWrite() throws {
        let source = Arena(), target = Arena()
        // Arm stage 2 can express write-only (S2AP = 10); x86 first stage cannot.
        let arm = try ArmVMSAv8(stage: .stage2, granule: .size4K, inputBits: 40, outputBits: 48)
        var armGuest = try source.builder(arm)
        try armGuest.map(IOVA(0x10_0000), to: GuestPhysicalAddress(0x10_0000), size: .size4K, permissions: [.write])
        var host = try target.builder(try X86FirstStage(levels: 4))
        #expect(throws: PageTableBuildError.permissionsNotExpressible([.write])) { try host.mirror(armGuest.walker()) }
        // AMD v1 has independent IR and IW bits: write-only mirrors as it is.
        let amdArena = Arena()  // kept alive while the builder writes into it
        var amd = try amdArena.builder(try AMDv1(levels: 4))
        #expect(try amd.mirror(armGuest.walker()) == 1)
        #expect(try amd.walker().extents().map(\.permissions) == [[.write]])
        withExtendedLifetime(amdArena) {}
    }

    /// AMD v1 never installs 512 GiB leaves (a hardware erratum the kernel honours).
    @Test func amdV1SkipsThe512GiBLeaf() throws {
        let format = try AMDv1(levels: 6)
        for level in 0...5 { #expect(format.leafSizes(level: level) & (1 << 39) == 0) }
        let arena = Arena(bytes: 8 << 20)
        var table = try arena.builder(format)
        #expect(throws: PageTableBuildError.self) {
            try table.map(IOVA(0), to: GuestPhysicalAddress(0), size: PageSize(shift: 39), permissions: .readWrite)
        }
        // A 512 GiB range is built from two 256 GiB leaves instead.
        let leaves = try table.map(try IOVARange(base: IOVA(0), length: 1 << 39), to: GuestPhysicalAddress(0), permissions: .readWrite)
        #expect(leaves == 2)
    }

    /// A bump allocator reaching the top of the 64-bit space hands out nothing more, instead of
    /// wrapping to address 0.
    @Test func bumpAllocatorStopsAtTheTopOfTheSpace() throws {
        var allocator = BumpTableAllocator(range: try GuestPhysicalRange(first: GuestPhysicalAddress(UInt64.max - 8191), last: GuestPhysicalAddress(.max)))
        #expect(allocator.allocateTable(bytes: 4096, alignment: 4096) == GuestPhysicalAddress(UInt64.max - 8191))
        #expect(allocator.allocateTable(bytes: 4096, alignment: 4096) == GuestPhysicalAddress(UInt64.max - 4095))
        #expect(allocator.allocateTable(bytes: 4096, alignment: 4096) == nil)
        #expect(allocator.allocateTable(bytes: 4096, alignment: 4096) == nil)
    }

    /// An empty buffer has no region to view: a typed error, not a trap.
    @Test func emptyBufferHasNoRegion() {
        let empty = MutableGuestMemoryBuffer(base: GuestPhysicalAddress(0), buffer: UnsafeMutableRawBufferPointer(start: nil, count: 0))
        #expect(throws: GuestMemoryError.self) { try empty.region() }
    }
}

extension ReviewRegressionTests {
    /// With hardware dirty management, an Arm leaf with DBM set is writable although AP[2]
    /// (stage 1) or S2AP[1] (stage 2) still says clean: the mirror must map it writable, or the
    /// device's first write faults.
    @Test func armDirtyBitModifierMakesCleanLeavesWritable() throws {
        // Stage 1, 4K page at level 0: valid|page (0b11), AF (b10), AP[2] (b7) read-only, DBM (b51).
        let entry: UInt64 = 0x3 | 1 << 10 | 1 << 7 | 1 << 51 | 0x8000_0000
        let plain = try ArmVMSAv8(stage: .stage1)
        let managed = try ArmVMSAv8(stage: .stage1, hardwareDirty: true)
        guard case .leaf(let clean) = plain.decode(entry, level: 0), case .leaf(let dirtyManaged) = managed.decode(entry, level: 0) else {
            Issue.record("not decoded as leaves")
            return
        }
        #expect(!clean.permissions.contains(.write))
        #expect(dirtyManaged.permissions.contains(.write))
        // Stage 2: S2AP = 01 (read only), DBM set.
        let s2 = try ArmVMSAv8(stage: .stage2, inputBits: 40, hardwareDirty: true)
        guard case .leaf(let s2Leaf) = s2.decode(0x3 | 1 << 10 | 1 << 6 | 1 << 51 | 0x8000_0000, level: 0) else {
            Issue.record("stage-2 entry not decoded as a leaf")
            return
        }
        #expect(s2Leaf.permissions.isSuperset(of: .readWrite))
    }
}
