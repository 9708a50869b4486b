// A synthetic guest for the engine's benchmarks: a VT-d second-stage table of N 4 KiB leaves
// in real memory, its data region at a host address the null target never touches.
#if canImport(Glibc)
import Glibc
#endif
public import IOMMUMirror
public import IOPageTables

/// A guest of `leaves` 4 KiB leaves at IOVA 1 GiB: tables in real memory at GPA 0, data
/// (never touched: null targets and IOAS targets without DMA) at GPA 4 GiB.
public struct SyntheticGuest {
    public let format: VTdSecondStage
    public let ram: GuestRAM
    public let root: GuestPhysicalAddress
    public let leaves: Int
    public static let iova: UInt64 = 1 << 30
    public static let data: UInt64 = 4 << 30

    /// `contiguous`: leaf k maps data + k pages (one maximal run); else data + (3k mod N)
    /// pages, so no two neighbours continue (N runs).
    public init(leaves: Int, contiguous: Bool, dataHost: UInt64) throws {
        format = try VTdSecondStage(levels: 4)
        let tableBytes = (leaves / 512 + 64) * 4096
        let mem = mmap(nil, tableBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0)!
        var ram = GuestRAM()
        try ram.add(MirrorMemoryRegion(guestPhysical: GuestPhysicalAddress(0), length: UInt64(tableBytes), host: HostAddress(mem)))
        try ram.add(MirrorMemoryRegion(guestPhysical: GuestPhysicalAddress(Self.data), length: UInt64(leaves) * 4096, host: HostAddress(dataHost)))
        let writable = MutableGuestMemoryBuffer(base: GuestPhysicalAddress(0), buffer: UnsafeMutableRawBufferPointer(start: mem, count: tableBytes))
        var b = try PageTableBuilder(format: format, memory: writable,
                                     allocator: BumpTableAllocator(range: try GuestPhysicalRange(base: GuestPhysicalAddress(0), length: UInt64(tableBytes))))
        if contiguous {
            try b.map(try IOVARange(base: IOVA(Self.iova), length: UInt64(leaves) * 4096), to: GuestPhysicalAddress(Self.data),
                      permissions: .readWrite, sizes: PageSizeSet([.size4K]))
        } else {
            for k in 0..<leaves {
                let out = Self.data + UInt64((3 * k) % leaves) * 4096
                try b.map(IOVA(Self.iova + UInt64(k) * 4096), to: GuestPhysicalAddress(out), size: .size4K, permissions: .readWrite)
            }
        }
        self.ram = ram
        self.root = b.root
        self.leaves = leaves
    }

    public var walker: PageTableWalker<VTdSecondStage, GuestRAM> { PageTableWalker(format: format, memory: ram, root: root) }
    public var space: IOVARange { try! IOVARange(first: IOVA(0), last: IOVA((1 << 39) - 1)) }
}

