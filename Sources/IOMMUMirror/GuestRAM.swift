public import IOMMUAddresses
public import IOPageTables

/// The memfd behind a guest memory region, for `IOMMU_IOAS_MAP_FILE`.
public struct MirrorFileBacking: Hashable, Sendable {
    /// The memfd (not owned: the region's owner keeps it open).
    public var descriptor: Int32
    /// Byte offset in the file of the region's first byte.
    public var offset: UInt64
    public init(descriptor: Int32, offset: UInt64) {
        self.descriptor = descriptor
        self.offset = offset
    }
}

/// One run of guest RAM: a guest-physical range backed by this process's memory at ``host``
/// (and by a memfd, when ``file`` is set).
public struct MirrorMemoryRegion: @unchecked Sendable, CustomStringConvertible {
    public let guestPhysical: GuestPhysicalRange
    public let host: HostAddress
    public let file: MirrorFileBacking?
    /// Kept alive as long as the region is (the mapping's owner), if any.
    public let owner: (any AnyObject & Sendable)?

    /// A region of `length` bytes at `guestPhysical`, mapped at `host` in this process.
    /// - Throws: ``MirrorRefusal/invalidRegion`` for an empty region, or one passing 2^64 in
    ///   either address space.
    public init(guestPhysical base: GuestPhysicalAddress, length: UInt64, host: HostAddress, file: MirrorFileBacking? = nil,
                owner: (any AnyObject & Sendable)? = nil) throws(MirrorRefusal) {
        guard let range = try? GuestPhysicalRange(base: base, length: length), length > 0,
              host.advanced(by: length - 1) != nil else { throw .invalidRegion }
        self.guestPhysical = range
        self.host = host
        self.file = file
        self.owner = owner
    }

    public var length: UInt64 { guestPhysical.last.rawValue - guestPhysical.first.rawValue + 1 }

    /// The host address of `address`, which must lie in the region.
    @inlinable public func host(of address: GuestPhysicalAddress) -> HostAddress {
        HostAddress(host.rawValue &+ (address.rawValue &- guestPhysical.first.rawValue))
    }

    public var description: String { "\(guestPhysical) at host \(host)" + (file.map { " (fd \($0.descriptor) +0x\(String($0.offset, radix: 16)))" } ?? "") }
}

/// The guest's RAM: non-overlapping regions sorted by guest-physical address.
///
/// Lookups are binary searches and allocate nothing. It is also the ``GuestMemory`` the
/// guest's IO page tables are read through (bounds-checked reads of this process's memory).
public struct GuestRAM: GuestMemory, @unchecked Sendable {
    public private(set) var regions: [MirrorMemoryRegion]
    /// Per region, its guest-physical range and host base: what lookups read, without copying
    /// a region (and retaining its owner).
    @usableFromInline private(set) var bounds: [GuestPhysicalRange]
    @usableFromInline private(set) var hostBases: [UInt64]

    public init(capacity: Int = 8) {
        regions = []
        regions.reserveCapacity(capacity)
        bounds = []
        bounds.reserveCapacity(capacity)
        hostBases = []
        hostBases.reserveCapacity(capacity)
    }

    /// The guest-physical range of region `i`.
    @inlinable func range(ofRegion i: Int) -> GuestPhysicalRange { bounds[i] }

    /// The host address of `address` in region `i`, which must hold it.
    @inlinable func host(of address: GuestPhysicalAddress, inRegion i: Int) -> HostAddress {
        HostAddress(hostBases[i] &+ (address.rawValue &- bounds[i].first.rawValue))
    }

    /// The index of the region holding `address`, if any.
    @inlinable
    public func regionIndex(containing address: GuestPhysicalAddress) -> Int? {
        bounds.withUnsafeBufferPointer { r -> Int? in
            var lo = 0, hi = r.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if r[mid].last < address { lo = mid + 1 } else { hi = mid }
            }
            return lo < r.count && r[lo].first <= address ? lo : nil
        }
    }

    /// Whether every byte of `range` is guest RAM.
    public func contains(_ range: GuestPhysicalRange) -> Bool {
        var cursor = range.first
        while true {
            guard let i = regionIndex(containing: cursor) else { return false }
            let last = bounds[i].last
            if last >= range.last { return true }
            cursor = last.advanced(by: 1)!
        }
    }

    /// The first address of a region sharing a byte with `range`, if any.
    public func overlappingRegion(_ range: GuestPhysicalRange) -> GuestPhysicalAddress? {
        regions.first { $0.guestPhysical.overlaps(range) }?.guestPhysical.first
    }

    /// Adds `region`.
    /// - Throws: ``MirrorRefusal/regionOverlaps(_:)`` when it shares a byte with a region.
    public mutating func add(_ region: MirrorMemoryRegion) throws(MirrorRefusal) {
        if let other = overlappingRegion(region.guestPhysical) { throw .regionOverlaps(other) }
        let i = regions.firstIndex { $0.guestPhysical.first > region.guestPhysical.first } ?? regions.count
        regions.insert(region, at: i)
        bounds.insert(region.guestPhysical, at: i)
        hostBases.insert(region.host.rawValue, at: i)
    }

    /// Removes and returns the region starting at `base`.
    /// - Throws: ``MirrorRefusal/unknownRegion(_:)`` when no region starts there.
    @discardableResult
    public mutating func remove(base: GuestPhysicalAddress) throws(MirrorRefusal) -> MirrorMemoryRegion {
        guard let i = regions.firstIndex(where: { $0.guestPhysical.first == base }) else { throw .unknownRegion(base) }
        bounds.remove(at: i)
        hostBases.remove(at: i)
        return regions.remove(at: i)
    }

    @inlinable @inline(__always)
    func pointer(_ address: GuestPhysicalAddress, size: UInt64) -> UnsafeRawPointer? {
        guard let i = regionIndex(containing: address) else { return nil }
        let (end, overflow) = address.rawValue.addingReportingOverflow(size - 1)
        guard !overflow, end <= bounds[i].last.rawValue else { return nil }
        return UnsafeRawPointer(host(of: address, inRegion: i).unsafePointer)
    }

    /// The bytes of `range` in place when it lies wholly inside one region, so the walker
    /// scans a guest table from one pointer.
    @inlinable @inline(__always)
    public func readableBytes(of range: GuestPhysicalRange) -> UnsafeRawPointer? {
        guard let length = range.length else { return nil }
        return pointer(range.first, size: length)
    }

    @inlinable
    public func load32(at address: GuestPhysicalAddress) -> UInt32? {
        pointer(address, size: 4).map { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) }
    }

    @inlinable
    public func load64(at address: GuestPhysicalAddress) -> UInt64? {
        pointer(address, size: 8).map { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
    }
}
