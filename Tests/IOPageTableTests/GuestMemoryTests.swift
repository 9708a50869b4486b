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

    /// Guest-physical ranges become host ranges with a bounds check and a typed error, instead
    /// of pointer arithmetic and `try!` at the call site.
    @Test func guestPhysicalToHost() throws {
        let a = UnsafeMutableRawBufferPointer.allocate(byteCount: 0x2000, alignment: 4096)
        let c = UnsafeMutableRawBufferPointer.allocate(byteCount: 0x1000, alignment: 4096)
        defer { a.deallocate(); c.deallocate() }
        let ra = try GuestMemoryRegion(base: GuestPhysicalAddress(0x10_0000), pointer: UnsafeRawPointer(a.baseAddress!), length: 0x2000)
        let rc = try GuestMemoryRegion(base: GuestPhysicalAddress(0x10_2000), pointer: UnsafeRawPointer(c.baseAddress!), length: 0x1000)
        let view = try GuestMemoryView(regions: [ra, rc])
        let inA = try GuestPhysicalRange(base: GuestPhysicalAddress(0x10_1000), length: 0x1000)
        #expect(try view.hostRange(of: inA) == HostRange(base: HostAddress(UnsafeRawPointer(a.baseAddress! + 0x1000)), length: 0x1000))
        #expect(try view.hostAddress(of: GuestPhysicalAddress(0x10_2010)) == HostAddress(UnsafeRawPointer(c.baseAddress! + 0x10)))
        // Adjacent in guest-physical space, not on the host: refused.
        let across = try GuestPhysicalRange(base: GuestPhysicalAddress(0x10_1800), length: 0x1000)
        #expect(throws: GuestMemoryError.outsideGuestMemory(across)) { try view.hostRange(of: across) }
        #expect(throws: GuestMemoryError.outsideGuestMemory(.all)) { try view.hostRange(of: .all) }
        let below = GuestPhysicalAddress(0xF_FFFF)
        #expect(throws: GuestMemoryError.outsideGuestMemory(try GuestPhysicalRange(first: below, last: below))) {
            try view.hostAddress(of: below)
        }
        // The writable buffer answers the same way.
        let w = MutableGuestMemoryBuffer(base: GuestPhysicalAddress(0x10_0000), buffer: a)
        #expect(try w.hostRange(of: inA) == view.hostRange(of: inA))
        #expect(throws: GuestMemoryError.self) { try w.hostRange(of: try GuestPhysicalRange(base: GuestPhysicalAddress(0x10_1001), length: 0x1000)) }
        // Generic code can ask any host-backed memory.
        func host<M: HostBackedGuestMemory>(_ m: M, _ r: GuestPhysicalRange) throws(GuestMemoryError) -> HostRange { try m.hostRange(of: r) }
        #expect(try host(view, inA).length == 0x1000)
        // And whether a range is wholly readable.
        #expect(view.contains(inA) && !view.contains(across) && w.contains(inA))
    }
}
