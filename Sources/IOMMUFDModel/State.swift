#if canImport(Glibc)
import Glibc
#endif
import IOMMUFD
import SystemPackage

/// An inclusive span `[first, last]` of a 64-bit space.
struct Span: Hashable {
    var first: UInt64
    var last: UInt64
    func intersects(_ first: UInt64, _ last: UInt64) -> Bool { self.first <= last && first <= self.last }
}

/// One area of an IOAS (`struct iopt_area`).
struct ModelArea {
    var first: UInt64
    var last: UInt64
    /// The user address (or file offset) of the area's first byte.
    var address: UInt64
    /// The file, for an area made by `IOMMU_IOAS_MAP_FILE` (or copied from one).
    var fd: CInt?
    /// Whether the pages were mapped writeable (`iopt_pages.writable`).
    var writable: Bool
    var length: UInt64 { last &- first &+ 1 }
}

/// One IOAS (`struct iommufd_ioas` / `struct io_pagetable`).
struct IOASState {
    /// Sorted by `first`, disjoint.
    var areas: [ModelArea] = []
    /// As loaded by `IOMMU_IOAS_ALLOW_IOVAS`: disjoint.
    var allowed: [Span] = []
    /// Reserved regions (selftest `ADD_RESERVED`); may overlap one another.
    var reserved: [Span] = []
    var disableLargePages = false
    var inUse = false

    func alignment(_ page: UInt64) -> UInt64 { disableLargePages ? page : 1 }

    /// Index of the first area whose last byte is at or above `address`.
    func firstArea(endingAtOrAbove address: UInt64) -> Int {
        var lo = 0, hi = areas.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if areas[mid].last < address { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// Whether any area intersects `[first, last]`.
    func hasArea(_ first: UInt64, _ last: UInt64) -> Bool {
        let i = firstArea(endingAtOrAbove: first)
        return i < areas.count && areas[i].first <= last
    }

    func hasReserved(_ first: UInt64, _ last: UInt64) -> Bool { reserved.contains { $0.intersects(first, last) } }

    mutating func insert(_ area: ModelArea) {
        let i = firstArea(endingAtOrAbove: area.first)
        areas.insert(area, at: i)
    }

    var publicAreas: [IOMMUFDModel.Area] {
        areas.map { a in
            IOMMUFDModel.Area(
                iova: try! IOVARange(first: IOVA(a.first), last: IOVA(a.last)),
                source: a.fd.map { .file(fd: $0, offset: a.address) } ?? .user(HostAddress(a.address)),
                writable: a.writable)
        }
    }
}

/// One open `/dev/iommu` (`struct iommufd_ctx`). Only IOAS objects exist in the model.
struct Context {
    var objects: [UInt32: IOASState] = [:]
    /// `IOPT_PAGES_ACCOUNT_MM` (per process) rather than per user.
    var accountPerProcess = false
    var vfioIOAS: UInt32?

    /// The kernel's `xa_alloc` with `XA_FLAGS_ALLOC1` and a 31-bit limit: the lowest free id.
    func freeID() -> UInt32? {
        var id: UInt32 = 1
        while objects[id] != nil {
            id += 1
            if id > UInt32(Int32.max) { return nil }
        }
        return id
    }
}

struct ModelState {
    let configuration: IOMMUFDModel.Configuration
    var contexts: [CInt: Context] = [:]
    /// Descriptors of files that are not iommufds, by path.
    var otherFiles: [CInt: String] = [:]
    var otherPaths: Set<String> = []
    static let firstDescriptor: CInt = 65536
    var nextFD: CInt = firstDescriptor
    var trace: [IOMMUFDModel.TraceEntry] = []
    var counts: [IoctlRequest: Int] = [:]
    var injections: [IoctlRequest: [Errno]] = [:]

    init(configuration: IOMMUFDModel.Configuration) { self.configuration = configuration }

    var page: UInt64 { configuration.pageSize }

    mutating func record(_ fd: CInt, _ call: IOMMUFDModel.TraceEntry.Call, _ fields: [IOMMUFDModel.Field], _ errno: Errno?, injected: Bool = false) {
        guard configuration.tracing else { return }
        trace.append(IOMMUFDModel.TraceEntry(fd: fd, call: call, fields: fields, errno: errno, injected: injected))
    }

    mutating func open(_ path: String) -> Result<CInt, Errno> {
        let fd: CInt
        if path == "/dev/iommu" {
            fd = nextFD
            contexts[fd] = Context()
        } else if otherPaths.contains(path) {
            fd = nextFD
            otherFiles[fd] = path
        } else {
            record(-1, .open(path), [], .noSuchFileOrDirectory)
            return .failure(.noSuchFileOrDirectory)
        }
        nextFD += 1
        record(fd, .open(path), [], nil)
        return .success(fd)
    }

    mutating func close(_ fd: CInt) -> Result<Void, Errno> {
        if contexts.removeValue(forKey: fd) != nil || otherFiles.removeValue(forKey: fd) != nil {
            record(fd, .close, [], nil)
            return .success(())
        }
        record(fd, .close, [], .badFileDescriptor)
        return .failure(.badFileDescriptor)
    }

    /// A call the model's files do not implement: `EBADF` for unknown descriptors, else `errno`.
    mutating func other(_ fd: CInt, _ name: String, _ errno: Errno) -> Result<Void, Errno> {
        let e = contexts[fd] != nil || otherFiles[fd] != nil ? errno : .badFileDescriptor
        record(fd, .other(name), [], e)
        return .failure(e)
    }
}
