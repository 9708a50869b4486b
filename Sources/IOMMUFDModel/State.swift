#if canImport(Glibc)
import Glibc
#endif
import IOMMUFD
import SystemPackage
import Synchronization

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
    /// As loaded by `IOMMU_IOAS_ALLOW_IOVAS`, merged where adjacent: sorted, disjoint.
    var allowed: [Span] = []
    /// Reserved regions (selftest `ADD_RESERVED`), merged where they overlap or touch: sorted,
    /// disjoint. The kernel keeps them apart, but every rule sees only their union.
    var reserved: [Span] = []
    var disableLargePages = false
    var inUse = false

    func alignment(_ page: UInt64) -> UInt64 { disableLargePages ? page : 1 }

    /// Index of the first area whose last byte is at or above `address`.
    func firstArea(endingAtOrAbove address: UInt64) -> Int { firstIndex(areas, endingAtOrAbove: address) { $0.last } }

    /// Index of the first reserved region whose last byte is at or above `address`.
    func firstReserved(endingAtOrAbove address: UInt64) -> Int { firstIndex(reserved, endingAtOrAbove: address) { $0.last } }

    /// Whether any area intersects `[first, last]`.
    func hasArea(_ first: UInt64, _ last: UInt64) -> Bool {
        let i = firstArea(endingAtOrAbove: first)
        return i < areas.count && areas[i].first <= last
    }

    func hasReserved(_ first: UInt64, _ last: UInt64) -> Bool {
        let i = firstReserved(endingAtOrAbove: first)
        return i < reserved.count && reserved[i].first <= last
    }

    mutating func insert(_ area: ModelArea) {
        areas.insert(area, at: firstArea(endingAtOrAbove: area.first))
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

/// Binary search in `elements`, sorted by `last`: the first whose last byte is at or above `address`.
private func firstIndex<T>(_ elements: [T], endingAtOrAbove address: UInt64, _ last: (T) -> UInt64) -> Int {
    var lo = 0, hi = elements.count
    while lo < hi {
        let mid = (lo + hi) / 2
        if last(elements[mid]) < address { lo = mid + 1 } else { hi = mid }
    }
    return lo
}

/// An IOAS object, by reference: operations change its state in place, with no copy of its
/// arrays and no dictionary accessor (whose coroutine frame would be allocated). Touched only
/// under its context's lock, hence unchecked.
final class IOASObject: @unchecked Sendable {
    /// Not checked for exclusive access at run time: the context's lock gives it.
    @exclusivity(unchecked) var state = IOASState()
}

/// One open `/dev/iommu` (`struct iommufd_ctx`). Only IOAS objects exist in the model.
struct Context {
    let configuration: IOMMUFDModel.Configuration
    var objects: [UInt32: IOASObject] = [:]
    /// `IOPT_PAGES_ACCOUNT_MM` (per process) rather than per user.
    var accountPerProcess = false
    var vfioIOAS: UInt32?
    /// Ioctls on this descriptor since the last reset, per request.
    var counts: [IoctlRequest: Int] = [:]
    /// Set by `close`: a call that found the context just before answers `EBADF`.
    var closed = false

    init(configuration: IOMMUFDModel.Configuration) { self.configuration = configuration }

    var page: UInt64 { configuration.pageSize }

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

/// An open iommufd of the model, with its own lock: calls on different descriptors never wait
/// for one another (unless tracing, which appends to the one shared trace).
final class ModelContext: Sendable {
    /// Behind a pthread lock, not Synchronization's Mutex: ThreadSanitizer sees the order a
    /// pthread lock gives (that Mutex is a bare futex to it, and the accesses it orders were
    /// reported as races).
    let state: ReadWriteLock<Context>
    init(_ configuration: IOMMUFDModel.Configuration) { state = ReadWriteLock(Context(configuration: configuration)) }
}

/// Which descriptors are open.
struct Files {
    var contexts: [CInt: ModelContext] = [:]
    /// Descriptors of files that are not iommufds, by path.
    var otherFiles: [CInt: String] = [:]
    var otherPaths: Set<String> = []
    static let firstDescriptor: CInt = 65536
    var nextFD: CInt = firstDescriptor

    func isOpen(_ fd: CInt) -> Bool { contexts[fd] != nil || otherFiles[fd] != nil }
}

/// What the model keeps across descriptors.
struct Shared {
    var trace: [IOMMUFDModel.TraceEntry] = []
    /// Ioctls on descriptors that are not open iommufds, and those of closed iommufds.
    var counts: [IoctlRequest: Int] = [:]
    var injections: [IoctlRequest: [Errno]] = [:]
}

/// A value behind a `pthread_rwlock_t`: any number of readers at once, or one writer.
final class ReadWriteLock<Value: Sendable>: @unchecked Sendable {
    private let lock = UnsafeMutablePointer<pthread_rwlock_t>.allocate(capacity: 1)
    /// Outside the object, so access is not checked for exclusivity on each call: the lock
    /// provides it.
    private let value = UnsafeMutablePointer<Value>.allocate(capacity: 1)

    init(_ initial: Value) {
        lock.initialize(to: pthread_rwlock_t())
        pthread_rwlock_init(lock, nil)
        value.initialize(to: initial)
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
        value.deinitialize(count: 1)
        value.deallocate()
    }

    func read<R>(_ body: (borrowing Value) -> R) -> R {
        pthread_rwlock_rdlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return body(value.pointee)
    }

    func write<R>(_ body: (inout Value) -> R) -> R {
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return body(&value.pointee)
    }
}

/// The decoded fields of one call; kept only while tracing, so a call that is not traced
/// builds none of them.
struct FieldLog {
    let enabled: Bool
    private(set) var fields: [IOMMUFDModel.Field] = []

    init(enabled: Bool) { self.enabled = enabled }

    mutating func append(_ field: @autoclosure () -> IOMMUFDModel.Field) {
        if enabled { fields.append(field()) }
    }

    static func += (log: inout FieldLog, more: @autoclosure () -> [IOMMUFDModel.Field]) {
        if log.enabled { log.fields += more() }
    }
}
