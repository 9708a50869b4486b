#if canImport(Glibc)
import Glibc
#endif
import IOMMUFD
import IOMMUMirror
import IOPageTables
import Testing

// Shared by the fault-injection sweeps and the soak: guest RAM whose pages carry their own
// guest-physical address, and the kernel's view of an IOAS read back through a mock access and
// the mock domain, page by page, without the library's bookkeeping.

/// The tag in the first 8 bytes of every guest data page: the page's guest-physical address.
func pageTag(_ gpa: UInt64) -> UInt64 { 0x5A5A_0000_0000_0000 | gpa }

/// Guest RAM of the reliability tests: region 0 anonymous memory at guest-physical 0, region 1
/// a memfd at 1 MiB (mapped by `IOMMU_IOAS_MAP_FILE` where the kernel has it). Every page's
/// first 8 bytes hold ``pageTag(_:)``, except the pages set aside for guest page tables.
final class TaggedRAM: @unchecked Sendable {
    struct Region {
        let gpa: UInt64
        let pages: Int
        let base: UnsafeMutableRawPointer
        let fd: Int32?
        var bytes: Int { pages * page }
        func contains(_ g: UInt64) -> Bool { g >= gpa && g < gpa + UInt64(bytes) }
    }

    let regions: [Region]
    /// Pages of region 0, from this one on, hold guest page tables (not tagged).
    let firstTablePage: Int

    init(pages0: Int = 64, tablePages: Int = 16, pages1: Int = 32) throws {
        let a = try #require(mmap(nil, pages0 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))
        let fd = try LinuxKernel().memfdCreate("reliability-ram", flags: 1).get()
        #expect(ftruncate(fd, off_t(pages1 * page)) == 0)
        let b = try #require(mmap(nil, pages1 * page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0))
        regions = [Region(gpa: 0, pages: pages0, base: a, fd: nil), Region(gpa: 0x10_0000, pages: pages1, base: b, fd: fd)]
        firstTablePage = pages0 - tablePages
        retag()
    }

    deinit {
        for r in regions {
            munmap(r.base, r.bytes)
            if let fd = r.fd { close(fd) }
        }
    }

    /// Writes every data page's tag again (a DMA write through an access may have changed it).
    func retag() {
        for (k, r) in regions.enumerated() {
            for p in 0..<r.pages where !(k == 0 && p >= firstTablePage) {
                r.base.storeBytes(of: pageTag(r.gpa + UInt64(p * page)).littleEndian, toByteOffset: p * page, as: UInt64.self)
            }
        }
    }

    /// Region `k` as the engine takes it.
    func region(_ k: Int) throws -> MirrorMemoryRegion {
        let r = regions[k]
        return try MirrorMemoryRegion(guestPhysical: GuestPhysicalAddress(r.gpa), length: UInt64(r.bytes), host: HostAddress(r.base),
                                      file: r.fd.map { MirrorFileBacking(descriptor: $0, offset: 0) })
    }

    /// Guest RAM of the regions `ks`.
    func ram(_ ks: [Int] = [0, 1]) throws -> GuestRAM {
        var ram = GuestRAM()
        for k in ks { try ram.add(try region(k)) }
        return ram
    }

    /// The host address of guest-physical `gpa`.
    func host(_ gpa: UInt64) -> HostAddress? {
        regions.first { $0.contains(gpa) }.map { HostAddress($0.base + Int(gpa - $0.gpa)) }
    }

    /// The guest-physical address of data page `p` of region `k`.
    func gpa(_ k: Int, _ p: Int) -> UInt64 { regions[k].gpa + UInt64(p * page) }

    /// Writable memory over the table pages of region 0, and an allocator over them.
    func tableMemory() -> (MutableGuestMemoryBuffer, BumpTableAllocator) {
        let r = regions[0]
        let memory = MutableGuestMemoryBuffer(base: GuestPhysicalAddress(0), buffer: UnsafeMutableRawBufferPointer(start: r.base, count: r.bytes))
        let first = UInt64(firstTablePage * page)
        return (memory, BumpTableAllocator(range: try! GuestPhysicalRange(first: GuestPhysicalAddress(first), last: GuestPhysicalAddress(UInt64(r.bytes) - 1))))
    }

    /// Zeroes the table pages.
    func clearTables() {
        let r = regions[0]
        memset(r.base + firstTablePage * page, 0, (r.pages - firstTablePage) * page)
    }
}

/// What one IOVA page translates to.
struct PageTranslation: Hashable, CustomStringConvertible {
    var gpa: UInt64
    var writable: Bool
    var description: String { "0x\(String(gpa, radix: 16))\(writable ? " rw" : " r")" }
}

/// IOVA page -> translation.
typealias PageMap = [UInt64: PageTranslation]

/// A mapping of `pages` pages at `iova` to `gpa`, as a test states what it expects.
struct Expected: Hashable {
    var iova: UInt64
    var pages: Int
    var gpa: UInt64
    var writable: Bool

    var change: MirrorChange {
        .map(iova: IOVA(iova), length: UInt64(pages * page), guestPhysical: GuestPhysicalAddress(gpa),
             permissions: writable ? .readWrite : .read)
    }
}

func pageMap(_ list: [Expected]) -> PageMap {
    var out: PageMap = [:]
    for e in list {
        for p in 0..<e.pages { out[e.iova + UInt64(p * page)] = PageTranslation(gpa: e.gpa + UInt64(p * page), writable: e.writable) }
    }
    return out
}

/// What the engine says a target holds, page by page.
func pageMap(_ shadow: IOVAIntervalMap) -> PageMap {
    var out: PageMap = [:]
    for e in shadow {
        let n = (e.iova.last.rawValue - e.iova.first.rawValue + 1) / UInt64(page)
        for p in 0..<n {
            out[e.iova.first.rawValue + p * UInt64(page)] = PageTranslation(gpa: e.guestPhysical.rawValue + p * UInt64(page),
                                                                          writable: e.permissions.contains(.write))
        }
    }
    return out
}

/// The differences between two page maps, in words (at most `limit`).
func differences(_ a: PageMap, _ b: PageMap, _ aName: String, _ bName: String, limit: Int = 4) -> [String] {
    var out: [String] = []
    for k in Set(a.keys).union(b.keys).sorted() where a[k] != b[k] {
        if out.count == limit { out.append("..."); break }
        out.append("IOVA 0x\(String(k, radix: 16)): \(aName) \(a[k].map { "\($0)" } ?? "unmapped"), \(bName) \(b[k].map { "\($0)" } ?? "unmapped")")
    }
    return out
}

/// Reads what the kernel maps in `window` of an IOAS through a mock access on it: per page, an
/// 8-byte read (`ENOENT`: nothing mapped) gives the page's tag, so its guest-physical address;
/// writing the same value back tells writable from read-only (`EPERM`). Where `hwpt` (a mock
/// domain of the IOAS) is given, `MD_CHECK_MAP` confirms the domain maps each mapped page to
/// the process's page at `ram.host(gpa)`.
/// Counts its ioctls into `checks`.
func kernelView(_ fd: borrowing IOMMUFDContext, _ access: borrowing MockAccess, window: IOVARange, ram: TaggedRAM,
                hwpt: HWPTID?, checks: inout Int, problems: inout [String]) -> PageMap {
    var out: PageMap = [:]
    var iova = window.first.rawValue
    while iova <= window.last.rawValue {
        defer { iova += UInt64(page) }
        let value: UInt64
        checks += 1
        do {
            value = try fd.read(UInt64.self, at: IOVA(iova), through: access)
        } catch where error.errno == .noSuchFileOrDirectory {
            continue
        } catch {
            problems.append("IOVA 0x\(String(iova, radix: 16)): access read: \(error)")
            continue
        }
        guard value & 0xFFFF_0000_0000_0000 == 0x5A5A_0000_0000_0000 else {
            problems.append("IOVA 0x\(String(iova, radix: 16)) reads 0x\(String(value, radix: 16)), not a guest page's tag")
            continue
        }
        let gpa = value & 0x0000_FFFF_FFFF_FFFF
        var writable = true
        checks += 1
        do { try fd.write(value, at: IOVA(iova), through: access) } catch where error.errno == .notPermitted { writable = false } catch {
            problems.append("IOVA 0x\(String(iova, radix: 16)): access write: \(error)")
        }
        if let hwpt, let host = ram.host(gpa) {
            checks += 1
            do { try fd.mockCheckMap(hwpt, range(iova, page), maps: host) } catch {
                problems.append("IOVA 0x\(String(iova, radix: 16)): the mock domain does not map guest page 0x\(String(gpa, radix: 16)): \(error)")
            }
        }
        out[iova] = PageTranslation(gpa: gpa, writable: writable)
    }
    return out
}

/// Checks that every page of guest RAM is pinned exactly as often as `mapped` (the views of the
/// IOAS with a domain) map it (`MD_CHECK_REFS`, one call per run of pages of equal count).
/// Returns the pages whose count differs, in words.
func pinProblems(_ fd: borrowing IOMMUFDContext, ram: TaggedRAM, mapped: [PageMap], checks: inout Int) -> [String] {
    var count: [UInt64: UInt32] = [:]
    for m in mapped { for t in m.values { count[t.gpa, default: 0] += 1 } }
    var out: [String] = []
    for r in ram.regions {
        var p = 0
        while p < r.pages {
            let n = count[r.gpa + UInt64(p * page)] ?? 0
            var q = p + 1
            while q < r.pages, (count[r.gpa + UInt64(q * page)] ?? 0) == n { q += 1 }
            checks += 1
            let host = try! HostRange(base: HostAddress(r.base + p * page), length: UInt64((q - p) * page))
            do { try fd.mockCheckPins(host, equal: n) } catch {
                out.append("guest pages 0x\(String(r.gpa + UInt64(p * page), radix: 16))+\(q - p): not pinned \(n) times: \(error)")
            }
            p = q
        }
    }
    return out
}

/// The reliability tests' rig on the kernel: an IOAS with a mock device (a mock domain), a
/// second IOAS (mapped directly, or filled by `IOMMU_IOAS_COPY` from the first), a mock access
/// to each to read back what the kernel maps, and the engine's three targets: the two IOAS and
/// a host AMD v1 table.
struct KernelRig: ~Copyable {
    let mockIOAS: IOASID
    let mock: MockDevice
    let secondIOAS: IOASID
    let mockAccess: MockAccess
    let secondAccess: MockAccess
    let targets: [any MirrorTarget]

    init(_ fd: SharedIOMMUFDContext, behaviour: KernelBehaviour, second name: String, fanOut: IOASTarget.FanOut = .map) throws {
        let mockIOAS = try fd.iommufd.allocateIOAS()
        let mock = try fd.iommufd.addMockDevice(to: PageTableID(mockIOAS))
        let secondIOAS = try fd.iommufd.allocateIOAS()
        let mockAccess = try fd.iommufd.createMockAccess(to: mockIOAS)
        let secondAccess = try fd.iommufd.createMockAccess(to: secondIOAS)
        targets = [
            try IOASTarget(name: "mock", context: fd, ioas: mockIOAS, behaviour: behaviour),
            try IOASTarget(name: name, context: fd, ioas: secondIOAS, behaviour: behaviour, fanOut: fanOut),
            try PageTableTarget(name: "amdv1", format: try AMDv1(levels: 4)),
        ]
        (self.mockIOAS, self.mock, self.secondIOAS) = (mockIOAS, mock, secondIOAS)
        self.mockAccess = mockAccess
        self.secondAccess = secondAccess
    }

    /// What the kernel maps over `window` in the two IOAS, in target order (``kernelView``).
    func views(_ fd: borrowing IOMMUFDContext, window: IOVARange, ram: TaggedRAM, checks: inout Int,
               problems: inout [String]) -> [PageMap] {
        [kernelView(fd, mockAccess, window: window, ram: ram, hwpt: mock.hwpt, checks: &checks, problems: &problems),
         kernelView(fd, secondAccess, window: window, ram: ram, hwpt: nil, checks: &checks, problems: &problems)]
    }

    /// Closes both accesses, then destroys the mock device and both IOAS.
    consuming func tearDown(_ fd: borrowing IOMMUFDContext) throws {
        try mockAccess.close()
        try secondAccess.close()
        try fd.destroy(mock.id)
        try fd.destroy(mockIOAS)
        try fd.destroy(secondIOAS)
    }
}
