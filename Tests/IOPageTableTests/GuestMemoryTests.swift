import IOPageTables
import Testing

@Suite("Guest memory views")
struct GuestMemoryTests {
    @Test func memfdBackedWalkMatchesTheBuffer() throws {
        let arena = Arena(bytes: 1 << 20, base: 0x4000_0000)
        var b = try arena.builder(Formats.arm4K)
        try b.map(IOVA(0x40_0000), to: GuestPhysicalAddress(0x8000_0000), size: .size2M, permissions: .readWrite)
        try b.map(IOVA(0x1000), to: GuestPhysicalAddress(0x9000), size: .size4K, permissions: .read)
        let memfd = try MemfdGuestMemory(name: "guest-ram", length: arena.buffer.count)
        try memfd.write(UnsafeRawBufferPointer(arena.buffer), at: 0)
        let view = try GuestMemoryView(regions: [try memfd.region(at: arena.base)])
        let walker = PageTableWalker(format: Formats.arm4K, memory: view, root: b.root)
        #expect(try walker.extents() == b.walker().extents())
        #expect(try walker.extents().count == 2)
    }

    @Test func regionsAreBoundsChecked() throws {
        let a = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)
        let c = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)
        defer { a.deallocate(); c.deallocate() }
        a.initializeMemory(as: UInt8.self, repeating: 0x11)
        c.initializeMemory(as: UInt8.self, repeating: 0x22)
        let ra = try GuestMemoryRegion(base: GuestPhysicalAddress(0x1000), pointer: UnsafeRawPointer(a.baseAddress!), length: 4096)
        let rc = try GuestMemoryRegion(base: GuestPhysicalAddress(0x3000), pointer: UnsafeRawPointer(c.baseAddress!), length: 4096)
        let view = try GuestMemoryView(regions: [rc, ra])
        #expect(view.load64(at: GuestPhysicalAddress(0x1000)) == 0x1111_1111_1111_1111)
        #expect(view.load32(at: GuestPhysicalAddress(0x3FFC)) == 0x2222_2222)
        #expect(view.load64(at: GuestPhysicalAddress(0x1FFC)) == nil)  // straddles the end
        #expect(view.load64(at: GuestPhysicalAddress(0x2000)) == nil)  // the hole
        #expect(view.load64(at: GuestPhysicalAddress(0xFFF)) == nil)
        #expect(view.load64(at: GuestPhysicalAddress(.max - 3)) == nil)
        #expect(throws: GuestMemoryError.self) {
            try GuestMemoryView(regions: [ra, try GuestMemoryRegion(base: GuestPhysicalAddress(0x1800), pointer: UnsafeRawPointer(c.baseAddress!), length: 4096)])
        }
        #expect(throws: GuestMemoryError.self) {
            try GuestMemoryRegion(base: GuestPhysicalAddress(.max - 10), pointer: UnsafeRawPointer(c.baseAddress!), length: 4096)
        }
        let w = MutableGuestMemoryBuffer(base: GuestPhysicalAddress(0x1000), buffer: a)
        #expect(w.store64(0x0102_0304_0506_0708, at: GuestPhysicalAddress(0x1008)))
        #expect(a[8] == 0x08)  // little-endian
        #expect(!w.store64(0, at: GuestPhysicalAddress(0x1FFC)))
    }
}
