public import IOMMUAddresses
public import IOPageTables
import NUMA

/// One guest unit: everything one request-mode map, or one invalidation, put in place.
/// Host areas never merge across units, so a guest unmap of what the guest mapped never cuts one.
public struct MirrorUnit: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public var description: String { "unit \(rawValue)" }
}

/// One host area: an IOVA range translated to guest-physical memory with one set of rights.
///
/// For an IOAS target the host address follows from the guest memory region holding
/// ``guestPhysical``; a host page-table target holds the guest-physical address itself.
public struct MirrorExtent: Hashable, Sendable, CustomStringConvertible {
    public var iova: IOVARange
    public var guestPhysical: GuestPhysicalAddress
    /// Read and write only: what a host mapping can carry.
    public var permissions: Permissions
    public var unit: MirrorUnit

    public init(iova: IOVARange, guestPhysical: GuestPhysicalAddress, permissions: Permissions, unit: MirrorUnit) {
        self.iova = iova
        self.guestPhysical = guestPhysical
        self.permissions = permissions
        self.unit = unit
    }

    /// Bytes in the extent (never the whole 64-bit space: guest ranges are checked).
    @inlinable public var length: UInt64 { iova.last.rawValue &- iova.first.rawValue &+ 1 }
    /// The guest-physical bytes behind the extent.
    public var guestPhysicalRange: GuestPhysicalRange {
        try! GuestPhysicalRange(first: guestPhysical, last: GuestPhysicalAddress(guestPhysical.rawValue &+ (length &- 1)))
    }
    /// `guestPhysical - iova` (wrapping): equal for two extents that translate alike.
    @inlinable var offset: UInt64 { guestPhysical.rawValue &- iova.first.rawValue }

    /// Whether `other` translates every byte it shares with this extent the same way.
    @inlinable public func translatesLike(_ other: MirrorExtent) -> Bool {
        offset == other.offset && permissions == other.permissions
    }

    /// The part of this extent inside `range` (same translation), if any.
    public func clipped(to range: IOVARange) -> MirrorExtent? {
        guard let r = iova.intersection(range) else { return nil }
        return MirrorExtent(iova: r, guestPhysical: GuestPhysicalAddress(r.first.rawValue &+ offset), permissions: permissions, unit: unit)
    }

    public var description: String { "\(iova) -> \(guestPhysical) \(permissions) \(unit)" }
}

/// Why an extent could not be inserted.
public enum IntervalMapError: Error, Hashable, Sendable {
    /// The extent overlaps one already held.
    case overlaps(MirrorExtent)
}

/// An exact map of non-overlapping IOVA extents, sorted by IOVA: what one target holds, area
/// for area (adjacent extents are never merged).
///
/// Lookups are binary searches over a contiguous array and allocate nothing. The array keeps
/// free room before its first extent, so an insertion or removal moves whichever side of it is
/// shorter (removing the oldest areas of a FIFO-like stream costs O(1)); it allocates only when
/// the array grows past its capacity.
public struct IOVAIntervalMap: RandomAccessCollection, Hashable, Sendable, CustomStringConvertible {
    /// Extents live in `storage[head...]`; `storage[..<head]` is free room.
    @usableFromInline var storage: [MirrorExtent]
    @usableFromInline var head = 0

    /// An empty map with room for `capacity` extents.
    public init(capacity: Int = 0) {
        storage = []
        storage.reserveCapacity(capacity)
    }

    /// Writes every slot of the reserved storage once (first touch places its pages on the
    /// calling thread's node) and returns the node of its first page, as the kernel reports it.
    /// Only on an empty map; the map stays empty, its capacity kept.
    mutating func prefault(placingOn node: NUMANode? = nil) -> NUMANode? {
        precondition(isEmpty && head == 0, "prefault is for a new map")
        let e = MirrorExtent(iova: try! IOVARange(first: IOVA(0), last: IOVA(0)), guestPhysical: GuestPhysicalAddress(0),
                             permissions: .read, unit: MirrorUnit(rawValue: 0))
        storage.append(contentsOf: repeatElement(e, count: Swift.max(storage.capacity, 1)))
        if let node { storage.withUnsafeBytes { _ = node.place($0) } }
        let found = storage.withUnsafeBufferPointer { $0.baseAddress.flatMap { NUMANode.of(memory: $0) } }
        storage.removeAll(keepingCapacity: true)
        return found
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { storage.count - head }
    @inlinable public subscript(position: Int) -> MirrorExtent { storage[head + position] }

    /// The index of the first extent whose last byte is at or above `address` (`endIndex` if none).
    @inlinable
    public func firstIndex(endingAtOrAbove address: IOVA) -> Int {
        storage.withUnsafeBufferPointer { s in
            var lo = head, hi = s.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if s[mid].iova.last < address { lo = mid + 1 } else { hi = mid }
            }
            return lo - head
        }
    }

    /// The indices of the extents that share at least one byte with `range`.
    @inlinable
    public func indices(overlapping range: IOVARange) -> Range<Int> {
        let lo = firstIndex(endingAtOrAbove: range.first)
        var hi = lo
        while hi < endIndex, self[hi].iova.first <= range.last { hi += 1 }
        return lo..<hi
    }

    /// The extent holding `address`, if any.
    @inlinable
    public func extent(containing address: IOVA) -> MirrorExtent? {
        let i = firstIndex(endingAtOrAbove: address)
        guard i < endIndex, self[i].iova.first <= address else { return nil }
        return self[i]
    }

    /// Inserts `extent` in IOVA order.
    /// - Throws: ``IntervalMapError/overlaps(_:)`` (and changes nothing) when it overlaps an extent.
    public mutating func insert(_ extent: MirrorExtent) throws(IntervalMapError) {
        // After the last extent (a sync in IOVA order): append.
        if storage.last.map({ $0.iova.last < extent.iova.first }) ?? true, head == 0 || storage.count < storage.capacity {
            storage.append(extent)
            return
        }
        let i = firstIndex(endingAtOrAbove: extent.iova.first)
        if i < endIndex, self[i].iova.first <= extent.iova.last { throw .overlaps(self[i]) }
        if head > 0 && i < endIndex / 2 {
            // Move the extents before the new one down into the free room.
            storage.withUnsafeMutableBufferPointer { s in
                let base = s.baseAddress!
                (base + head - 1).update(from: base + head, count: i)
            }
            head -= 1
            storage[head + i] = extent
        } else {
            // Give the free room back when it is as large as the map, or before the array
            // would grow: the move costs what the removals that made the room saved.
            if head > 0 && (head >= endIndex || storage.count == storage.capacity) {
                storage.removeSubrange(0..<head)
                head = 0
            }
            storage.insert(extent, at: head + i)
        }
    }

    /// Removes and returns the extent at `index`.
    @discardableResult
    public mutating func remove(at index: Int) -> MirrorExtent {
        let e = self[index]
        removeSubrange(index..<(index + 1))
        return e
    }

    /// Removes the extent equal to `extent`; `false` when it is not held.
    @discardableResult
    public mutating func remove(_ extent: MirrorExtent) -> Bool {
        let i = firstIndex(endingAtOrAbove: extent.iova.first)
        guard i < endIndex, self[i] == extent else { return false }
        removeSubrange(i..<(i + 1))
        return true
    }

    public mutating func removeSubrange(_ range: Range<Int>) {
        let n = range.count
        guard n > 0 else { return }
        if range.lowerBound < endIndex - range.upperBound {
            // Fewer extents before the range: move them up over it.
            storage.withUnsafeMutableBufferPointer { s in
                let base = s.baseAddress!
                (base + head + n).update(from: base + head, count: range.lowerBound)
            }
            head += n
            if head == storage.count { removeAll() }
        } else {
            storage.removeSubrange((head + range.lowerBound)..<(head + range.upperBound))
        }
    }

    public mutating func removeAll() {
        storage.removeAll(keepingCapacity: true)
        head = 0
    }

    /// Bytes held.
    public var mappedBytes: UInt64 { reduce(0) { $0 &+ $1.length } }

    public static func == (a: Self, b: Self) -> Bool { a.elementsEqual(b) }
    public func hash(into hasher: inout Hasher) {
        hasher.combine(count)
        for e in self { hasher.combine(e) }
    }

    public var description: String { "[" + map(\.description).joined(separator: ", ") + "]" }
}

/// A translation run: bytes contiguous in IOVA and guest-physical address with equal rights,
/// whatever the area boundaries; two targets hold the same translations when their runs match.
public struct MirrorRun: Hashable, Sendable, CustomStringConvertible {
    public var iova: IOVARange
    public var guestPhysical: GuestPhysicalAddress
    public var permissions: Permissions

    public init(iova: IOVARange, guestPhysical: GuestPhysicalAddress, permissions: Permissions) {
        self.iova = iova
        self.guestPhysical = guestPhysical
        self.permissions = permissions
    }

    /// Merges extents given in IOVA order into maximal runs (allocates the result; for checks).
    public static func runs(_ extents: some Sequence<MirrorExtent>) -> [MirrorRun] {
        var out: [MirrorRun] = []
        for e in extents {
            if let last = out.last, last.permissions == e.permissions, let next = last.iova.end, next == e.iova.first,
               last.guestPhysical.rawValue &- last.iova.first.rawValue == e.offset {
                out[out.count - 1].iova = try! IOVARange(first: last.iova.first, last: e.iova.last)
            } else {
                out.append(MirrorRun(iova: e.iova, guestPhysical: e.guestPhysical, permissions: e.permissions))
            }
        }
        return out
    }

    public var description: String { "\(iova) -> \(guestPhysical) \(permissions)" }
}
