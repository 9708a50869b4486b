public import SystemCalls

/// Read access to guest-physical memory, the only way the walker sees a guest's tables.
///
/// Reads are little-endian and bounds-checked: a read that is not wholly inside guest memory
/// returns `nil`, never traps. Conformers must be cheap to call per entry (no allocation).
public protocol GuestMemory {
    /// The 4 bytes at `address`, little-endian; `nil` outside guest memory.
    func load32(at address: GuestPhysicalAddress) -> UInt32?
    /// The 8 bytes at `address`, little-endian; `nil` outside guest memory.
    func load64(at address: GuestPhysicalAddress) -> UInt64?
    /// Whether every byte of `range` can be read. The walker asks this once per table before
    /// reading any of its entries.
    func contains(_ range: GuestPhysicalRange) -> Bool
    /// Where every byte of `range` can be read in place (little-endian, as ``load64(at:)``
    /// reads it), valid for as long as this value lives; `nil` when the bytes are not one run of
    /// host memory (the walker then reads entry by entry). A non-`nil` answer implies
    /// ``contains(_:)``. The walker asks this once per table, to scan a whole table from one
    /// pointer instead of one bounds-checked load per entry. The default answers `nil`.
    func readableBytes(of range: GuestPhysicalRange) -> UnsafeRawPointer?
}

extension GuestMemory {
    /// No bytes in place: the walker reads entry by entry.
    @inlinable
    public func readableBytes(of range: GuestPhysicalRange) -> UnsafeRawPointer? { nil }

    /// Probes every 4-byte word of `range` with ``load32(at:)`` (a range under 4 bytes: the
    /// word at its start), so it is exact for any conformer whose reads are word-granular; costs
    /// one load per word. ``GuestMemoryView`` and ``MutableGuestMemoryBuffer`` answer in one lookup.
    public func contains(_ range: GuestPhysicalRange) -> Bool {
        let first = range.first.rawValue
        let last = range.last.rawValue
        guard last - first >= 3 else { return load32(at: range.first) != nil }
        var a = first
        while last - a >= 3 {
            guard load32(at: GuestPhysicalAddress(a)) != nil else { return false }
            if last - a == 3 { return true }
            a += 4
        }
        return load32(at: GuestPhysicalAddress(last - 3)) != nil
    }
}

/// Guest memory whose bytes are host memory of this process: guest-physical ranges can be
/// turned into host ranges (to map into an IOAS, or to read and write directly).
public protocol HostBackedGuestMemory: GuestMemory {
    /// The host bytes behind `range`, which must lie wholly inside one region of host memory
    /// (contiguous on the host).
    /// - Throws: ``GuestMemoryError/outsideGuestMemory(_:)`` otherwise.
    func hostRange(of range: GuestPhysicalRange) throws(GuestMemoryError) -> HostRange
}

extension HostBackedGuestMemory {
    /// The host address of guest-physical `address` (one byte).
    /// - Throws: ``GuestMemoryError/outsideGuestMemory(_:)`` when it is not guest memory.
    public func hostAddress(of address: GuestPhysicalAddress) throws(GuestMemoryError) -> HostAddress {
        try hostRange(of: try! GuestPhysicalRange(first: address, last: address)).first
    }
}

/// Guest memory the builder may write page-table entries into.
public protocol WritableGuestMemory: GuestMemory {
    /// Stores `value` little-endian at `address`; `false` (and nothing written) outside memory.
    func store32(_ value: UInt32, at address: GuestPhysicalAddress) -> Bool
    /// Stores `value` little-endian at `address`; `false` (and nothing written) outside memory.
    func store64(_ value: UInt64, at address: GuestPhysicalAddress) -> Bool
}

/// Why guest memory could not be set up.
public enum GuestMemoryError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Two regions cover the same guest-physical byte.
    case overlappingRegions(GuestPhysicalAddress, GuestPhysicalAddress)
    /// A region would pass the end of the 64-bit guest-physical space, or has no bytes.
    case invalidRegion(base: GuestPhysicalAddress, length: Int)
    /// A system call failed; `errno` is the C errno.
    case systemCall(String, errno: Int32)
    /// The guest-physical range is not wholly inside one region of guest memory.
    case outsideGuestMemory(GuestPhysicalRange)

    public var description: String {
        switch self {
        case .outsideGuestMemory(let r): "\(r) is not inside one region of guest memory"
        case .overlappingRegions(let a, let b): "guest memory regions at \(a) and \(b) overlap"
        case .invalidRegion(let b, let l): "invalid guest memory region \(b) + \(l) bytes"
        case .systemCall(let name, let e): "\(name) failed: errno \(e)"
        }
    }
}

/// A run of guest-physical memory backed by host memory at `pointer`.
///
/// The region does not own the bytes: keep the mapping alive while the region is used
/// (``MemfdGuestMemory/region`` keeps its owner alive for you through ``owner``).
public struct GuestMemoryRegion: @unchecked Sendable {
    public let base: GuestPhysicalAddress
    public let length: Int
    public let pointer: UnsafeRawPointer
    /// Kept alive as long as the region is (the mapping's owner), if any.
    public let owner: (any AnyObject & Sendable)?

    /// A region of `length` bytes at guest-physical `base`, read from `pointer`.
    /// - Throws: ``GuestMemoryError/invalidRegion(base:length:)`` for an empty region or one
    ///   that passes 2^64.
    public init(base: GuestPhysicalAddress, pointer: UnsafeRawPointer, length: Int,
                owner: (any AnyObject & Sendable)? = nil) throws(GuestMemoryError) {
        guard length > 0, base.rawValue.addingReportingOverflow(UInt64(length) - 1).overflow == false else {
            throw .invalidRegion(base: base, length: length)
        }
        self.base = base
        self.pointer = pointer
        self.length = length
        self.owner = owner
    }

    /// The last guest-physical byte of the region.
    public var last: UInt64 { base.rawValue &+ UInt64(length) &- 1 }

    /// Offset of `[address, address + size)` in the region, or `nil` if not wholly inside.
    @inline(__always)
    func offset(of address: UInt64, size: UInt64) -> Int? {
        let off = address &- base.rawValue
        guard address >= base.rawValue, off <= UInt64(length), UInt64(length) - off >= size else { return nil }
        return Int(off)
    }
}

/// A read-only, bounds-checked view of guest-physical memory made of non-overlapping regions.
///
/// Lookup is a binary search over the regions (one comparison for the common single region);
/// a read touches no reference counts.
public struct GuestMemoryView: HostBackedGuestMemory, @unchecked Sendable {
    public let regions: [GuestMemoryRegion]
    /// The regions' bounds and pointers, sorted, without their owners.
    @usableFromInline let spans: [Span]

    @usableFromInline
    struct Span {
        @usableFromInline let first: UInt64
        @usableFromInline let last: UInt64
        @usableFromInline let pointer: UnsafeRawPointer
    }

    /// - Throws: ``GuestMemoryError/overlappingRegions(_:_:)`` when two regions overlap.
    public init(regions: [GuestMemoryRegion]) throws(GuestMemoryError) {
        let sorted = regions.sorted { $0.base < $1.base }
        for i in sorted.indices.dropFirst() where sorted[i].base.rawValue <= sorted[i - 1].last {
            throw .overlappingRegions(sorted[i - 1].base, sorted[i].base)
        }
        self.regions = sorted
        self.spans = sorted.map { Span(first: $0.base.rawValue, last: $0.last, pointer: $0.pointer) }
    }

    @inlinable @inline(__always)
    func pointer(_ address: GuestPhysicalAddress, size: UInt64) -> UnsafeRawPointer? {
        let a = address.rawValue
        return spans.withUnsafeBufferPointer { spans -> UnsafeRawPointer? in
            var lo = 0
            var hi = spans.count
            while hi - lo > 1 {
                let mid = (lo + hi) / 2
                if spans[mid].first <= a { lo = mid } else { hi = mid }
            }
            guard lo < spans.count else { return nil }
            let s = spans[lo]
            let (end, overflow) = a.addingReportingOverflow(size - 1)
            guard a >= s.first, !overflow, end <= s.last else { return nil }
            return s.pointer + Int(a - s.first)
        }
    }

    /// Whether `range` lies wholly inside one region (a binary search).
    @inlinable
    public func contains(_ range: GuestPhysicalRange) -> Bool {
        guard let length = range.length else { return false }
        return pointer(range.first, size: length) != nil
    }

    /// The bytes of `range` in place when it lies wholly inside one region (a binary search).
    @inlinable @inline(__always)
    public func readableBytes(of range: GuestPhysicalRange) -> UnsafeRawPointer? {
        guard let length = range.length else { return nil }
        return pointer(range.first, size: length)
    }

    /// The host bytes behind `range`, which must lie wholly inside one region.
    /// - Throws: ``GuestMemoryError/outsideGuestMemory(_:)`` otherwise.
    public func hostRange(of range: GuestPhysicalRange) throws(GuestMemoryError) -> HostRange {
        guard let length = range.length, let p = pointer(range.first, size: length),
              let host = try? HostRange(base: HostAddress(p), length: length) else { throw .outsideGuestMemory(range) }
        return host
    }

    @inlinable
    public func load32(at address: GuestPhysicalAddress) -> UInt32? {
        guard let p = pointer(address, size: 4) else { return nil }
        return UInt32(littleEndian: p.loadUnaligned(as: UInt32.self))
    }

    @inlinable
    public func load64(at address: GuestPhysicalAddress) -> UInt64? {
        guard let p = pointer(address, size: 8) else { return nil }
        return UInt64(littleEndian: p.loadUnaligned(as: UInt64.self))
    }
}

/// Writable guest memory over one caller-provided buffer at guest-physical `base`.
///
/// The buffer is not owned: the caller keeps it alive and does not share it across threads
/// while the builder writes.
public struct MutableGuestMemoryBuffer: WritableGuestMemory, HostBackedGuestMemory, @unchecked Sendable {
    public let base: GuestPhysicalAddress
    public let buffer: UnsafeMutableRawBufferPointer

    public init(base: GuestPhysicalAddress, buffer: UnsafeMutableRawBufferPointer) {
        self.base = base
        self.buffer = buffer
    }

    @inline(__always)
    func pointer(_ address: GuestPhysicalAddress, size: Int) -> UnsafeMutableRawPointer? {
        let off = address.rawValue &- base.rawValue
        guard address >= base, off <= UInt64(buffer.count), UInt64(buffer.count) - off >= UInt64(size),
              let start = buffer.baseAddress else { return nil }
        return start + Int(off)
    }

    public func contains(_ range: GuestPhysicalRange) -> Bool {
        guard let length = range.length, length <= UInt64(Int.max) else { return false }
        return pointer(range.first, size: Int(length)) != nil
    }

    /// The bytes of `range` in place when it lies wholly inside the buffer.
    public func readableBytes(of range: GuestPhysicalRange) -> UnsafeRawPointer? {
        guard let length = range.length, length <= UInt64(Int.max), let p = pointer(range.first, size: Int(length)) else { return nil }
        return UnsafeRawPointer(p)
    }

    /// The host bytes behind `range`, which must lie wholly inside the buffer.
    /// - Throws: ``GuestMemoryError/outsideGuestMemory(_:)`` otherwise.
    public func hostRange(of range: GuestPhysicalRange) throws(GuestMemoryError) -> HostRange {
        guard let length = range.length, length <= UInt64(Int.max), let p = pointer(range.first, size: Int(length)),
              let host = try? HostRange(base: HostAddress(UnsafeRawPointer(p)), length: length) else {
            throw .outsideGuestMemory(range)
        }
        return host
    }

    public func load32(at address: GuestPhysicalAddress) -> UInt32? {
        pointer(address, size: 4).map { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) }
    }
    public func load64(at address: GuestPhysicalAddress) -> UInt64? {
        pointer(address, size: 8).map { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
    }
    public func store32(_ value: UInt32, at address: GuestPhysicalAddress) -> Bool {
        guard let p = pointer(address, size: 4) else { return false }
        p.storeBytes(of: value.littleEndian, as: UInt32.self)
        return true
    }
    public func store64(_ value: UInt64, at address: GuestPhysicalAddress) -> Bool {
        guard let p = pointer(address, size: 8) else { return false }
        p.storeBytes(of: value.littleEndian, as: UInt64.self)
        return true
    }

    /// A read-only region over the same bytes, for a ``GuestMemoryView``.
    /// - Throws: ``GuestMemoryError/invalidRegion(base:length:)`` for an empty buffer.
    public func region() throws(GuestMemoryError) -> GuestMemoryRegion {
        guard let start = buffer.baseAddress else { throw .invalidRegion(base: base, length: 0) }
        return try GuestMemoryRegion(base: base, pointer: UnsafeRawPointer(start), length: buffer.count)
    }
}

/// Guest memory in a memfd, mapped read-only into this process; unmapped and closed on deinit.
///
/// Create it empty (``init(name:length:kernel:)``) and fill it with ``write(_:at:)`` (pwrite), or
/// adopt an existing guest-memory fd (``init(adopting:offset:length:kernel:)``). ``region(at:)``
/// places it in guest-physical space for a ``GuestMemoryView``. Every system call goes through
/// `kernel` (the package's choke point). The corresponding C functions are `memfd_create(2)`,
/// `ftruncate(2)`, `mmap(2)` and `pwrite(2)`.
public final class MemfdGuestMemory: @unchecked Sendable {
    /// The memfd (owned: closed on deinit).
    public let fileDescriptor: Int32
    public let length: Int
    private let mapping: UnsafeMutableRawPointer
    private let kernel: any KernelInterface

    /// A new zero-filled memfd of `length` bytes, mapped read-only.
    /// - Throws: ``GuestMemoryError/systemCall(_:errno:)`` naming the failing call.
    public convenience init(name: String, length: Int, kernel: any KernelInterface = LinuxKernel()) throws(GuestMemoryError) {
        let fd: CInt
        switch kernel.memfdCreate(name, flags: 1 /* MFD_CLOEXEC */) {
        case .success(let f): fd = f
        case .failure(let e): throw .systemCall("memfd_create", errno: e.rawValue)
        }
        if case .failure(let e) = kernel.ftruncate(fd, length: Int64(length)) {
            _ = kernel.close(fd)
            throw .systemCall("ftruncate", errno: e.rawValue)
        }
        try self.init(adopting: fd, offset: 0, length: length, kernel: kernel)
    }

    /// Maps `length` bytes of `fd` from `offset` read-only and takes ownership of `fd`
    /// (closed on deinit, also when this throws).
    public init(adopting fd: Int32, offset: Int, length: Int, kernel: any KernelInterface = LinuxKernel()) throws(GuestMemoryError) {
        guard length > 0 else {
            _ = kernel.close(fd)
            throw .invalidRegion(base: GuestPhysicalAddress(0), length: length)
        }
        switch kernel.mmap(length: length, protection: 1 /* PROT_READ */, flags: 1 /* MAP_SHARED */, fd: fd, offset: Int64(offset)) {
        case .success(let p): mapping = p
        case .failure(let e):
            _ = kernel.close(fd)
            throw .systemCall("mmap", errno: e.rawValue)
        }
        self.fileDescriptor = fd
        self.length = length
        self.kernel = kernel
    }

    deinit {
        _ = kernel.munmap(mapping, length: length)
        _ = kernel.close(fileDescriptor)
    }

    /// Writes `bytes` at byte `offset` of the memfd (visible through the read-only mapping).
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(GuestMemoryError) {
        guard offset >= 0, offset <= length, bytes.count <= length - offset else {
            throw .invalidRegion(base: GuestPhysicalAddress(UInt64(max(offset, 0))), length: bytes.count)
        }
        var done = 0
        while done < bytes.count {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[done...])
            switch kernel.pwrite(fileDescriptor, from: rest, at: Int64(offset + done)) {
            case .success(let n): done += n
            case .failure(let e): throw .systemCall("pwrite", errno: e.rawValue)
            }
        }
    }

    /// The mapping placed at guest-physical `base`; the region keeps this owner alive.
    public func region(at base: GuestPhysicalAddress) throws(GuestMemoryError) -> GuestMemoryRegion {
        try GuestMemoryRegion(base: base, pointer: UnsafeRawPointer(mapping), length: length, owner: self)
    }
}
