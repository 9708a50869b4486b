#if canImport(Glibc)
import Glibc
#endif
import IOMMUFD
import IOMMUFDModel
import IOMMUMirror
import IOPageTables
import TestSupport
import Testing

let page: UInt64 = 4096

/// The test's own picture of guest RAM: `(first gpa, last gpa, host, memfd?)`, independent of
/// the engine's region table.
struct RefRegion {
    var first: UInt64
    var last: UInt64
    var host: UInt64
    var fd: Int32?

    func contains(_ gpa: UInt64) -> Bool { first <= gpa && gpa <= last }
}

/// One host area as the reference expects it: IOVA, guest-physical, rights.
struct RefArea: Hashable, CustomStringConvertible {
    var first: UInt64
    var last: UInt64
    var gpa: UInt64
    var perms: Permissions
    var description: String { "[0x\(String(first, radix: 16))-0x\(String(last, radix: 16))] -> 0x\(String(gpa, radix: 16)) \(perms)" }
}

/// Guest RAM backed by real memory: `regions` of `(gpa, bytes)`, the last one memfd-backed
/// when `memfdLast` is set. Owns the memory.
final class TestRAM: @unchecked Sendable {
    let buffers: [UnsafeMutableRawBufferPointer]
    let memfd: Int32?
    let refs: [RefRegion]
    let ram: GuestRAM

    init(_ layout: [(gpa: UInt64, bytes: Int)], memfdLast: Bool = false) throws {
        var buffers: [UnsafeMutableRawBufferPointer] = []
        var refs: [RefRegion] = []
        var ram = GuestRAM()
        var memfd: Int32? = nil
        for (k, l) in layout.enumerated() {
            var fd: Int32? = nil
            let pointer: UnsafeMutableRawPointer
            if memfdLast && k == layout.count - 1 {
                let f = try LinuxKernel().memfdCreate("mirror-test", flags: 1).get()
                precondition(ftruncate(f, off_t(l.bytes)) == 0)
                pointer = mmap(nil, l.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0)!
                fd = f
                memfd = f
            } else {
                pointer = mmap(nil, l.bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
            }
            let b = UnsafeMutableRawBufferPointer(start: pointer, count: l.bytes)
            buffers.append(b)
            let host = UInt64(UInt(bitPattern: pointer))
            refs.append(RefRegion(first: l.gpa, last: l.gpa + UInt64(l.bytes) - 1, host: host, fd: fd))
            try ram.add(MirrorMemoryRegion(guestPhysical: GuestPhysicalAddress(l.gpa), length: UInt64(l.bytes), host: HostAddress(host),
                                           file: fd.map { MirrorFileBacking(descriptor: $0, offset: 0) }))
        }
        self.buffers = buffers
        self.refs = refs
        self.ram = ram
        self.memfd = memfd
    }

    deinit {
        for b in buffers { munmap(b.baseAddress, b.count) }
        if let memfd { close(memfd) }
    }

    /// Writable guest memory over region `k` (where the test builds guest page tables).
    func writable(_ k: Int) -> MutableGuestMemoryBuffer {
        MutableGuestMemoryBuffer(base: GuestPhysicalAddress(refs[k].first), buffer: buffers[k])
    }

    func region(of gpa: UInt64) -> RefRegion? { refs.first { $0.contains(gpa) } }

    /// `[iova, iova+len) -> gpa` split at region boundaries; `nil` when a byte is not RAM.
    func pieces(_ iova: UInt64, _ length: UInt64, _ gpa: UInt64, _ perms: Permissions) -> [RefArea]? {
        var out: [RefArea] = []
        var off: UInt64 = 0
        while off < length {
            guard let r = region(of: gpa + off) else { return nil }
            let n = min(r.last - (gpa + off) + 1, length - off)
            out.append(RefArea(first: iova + off, last: iova + off + n - 1, gpa: gpa + off, perms: perms))
            off += n
        }
        return out
    }
}

/// Two IOAS on one model iommufd, a host page table and a null target.
struct ModelTargets {
    let model: IOMMUFDModel
    let context: SharedIOMMUFDContext
    let ioas: [IOASID]
    let ioasTargets: [IOASTarget]
    let pageTable: any MirrorTarget
    let null: NullTarget
    let behaviour: KernelBehaviour

    init(fanOut: IOASTarget.FanOut = .map, pageTable makeTable: () throws -> any MirrorTarget) throws {
        model = IOMMUFDModel(.init(pageSize: page, tracing: false))
        context = SharedIOMMUFDContext(try IOMMUFDContext(kernel: model))
        behaviour = try KernelBehaviour.probe(context.iommufd)
        let a = try context.iommufd.allocateIOAS(), b = try context.iommufd.allocateIOAS()
        ioas = [a, b]
        ioasTargets = [try IOASTarget(name: "ioas-a", context: context, ioas: a, behaviour: behaviour),
                       try IOASTarget(name: "ioas-b", context: context, ioas: b, behaviour: behaviour, fanOut: fanOut)]
        pageTable = try makeTable()
        null = NullTarget()
        model.resetCounters()
    }

    var all: [any MirrorTarget] { ioasTargets + [pageTable, null] }

    var mapCalls: Int { model.ioctlCount(.ioasMap) + model.ioctlCount(.ioasMapFile) }
    var unmapCalls: Int { model.ioctlCount(.ioasUnmap) }

    /// The model's areas of IOAS `k` as reference areas, checked against the host side.
    func areas(_ k: Int, _ ram: TestRAM) -> [RefArea] {
        let list = model.areas(of: ioas[k], in: context.iommufd.descriptor) ?? []
        return list.map { a in
            let gpa: UInt64
            switch a.source {
            case .user(let host):
                let r = ram.refs.first { $0.fd == nil && $0.host <= host.rawValue && host.rawValue <= $0.host + ($0.last - $0.first) }!
                gpa = r.first + (host.rawValue - r.host)
            case .file(let fd, let offset):
                let r = ram.refs.first { $0.fd == fd }!
                gpa = r.first + offset
            }
            return RefArea(first: a.iova.first.rawValue, last: a.iova.last.rawValue, gpa: gpa, perms: a.writable ? .readWrite : .read)
        }
    }
}

func refAreas(_ shadow: IOVAIntervalMap) -> [RefArea] {
    shadow.map { RefArea(first: $0.iova.first.rawValue, last: $0.iova.last.rawValue, gpa: $0.guestPhysical.rawValue, perms: $0.permissions) }
}

/// What an IOAS can record of rights: the model keeps only "writeable", so read-only and
/// read-write compare by the write bit; write-only maps as writeable.
func asIOAS(_ a: [RefArea]) -> [RefArea] {
    a.map { var x = $0; x.perms = $0.perms.contains(.write) ? .readWrite : .read; return x }
}

/// Maximal translation runs of reference areas (for comparing with a page table walked back).
func refRuns(_ areas: [RefArea]) -> [RefArea] {
    var out: [RefArea] = []
    for a in areas.sorted(by: { $0.first < $1.first }) {
        if let l = out.last, l.last + 1 == a.first, l.perms == a.perms, l.gpa &- l.first == a.gpa &- a.first {
            out[out.count - 1].last = a.last
        } else { out.append(a) }
    }
    return out
}

func runsAsRef(_ runs: [MirrorRun]) -> [RefArea] {
    runs.map { RefArea(first: $0.iova.first.rawValue, last: $0.iova.last.rawValue, gpa: $0.guestPhysical.rawValue, perms: $0.permissions) }
}

extension SplitMix64 {
    mutating func below(_ n: UInt64) -> UInt64 { next() % n }
    mutating func chance(_ percent: UInt64) -> Bool { next() % 100 < percent }
}
