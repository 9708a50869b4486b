/// Why a range could not be formed or used.
public enum AddressRangeError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A range of zero bytes.
    case empty
    /// `base + length` passes the end of the 64-bit space.
    case overflow(base: UInt64, length: UInt64)
    /// The base or the length is not a multiple of the required alignment.
    case misaligned(base: UInt64, length: UInt64, alignment: UInt64)
    /// The range covers all 2^64 addresses, a length no 64-bit field can carry.
    case wholeSpace

    public var description: String {
        switch self {
        case .empty: "empty range"
        case .overflow(let b, let l): "range 0x\(String(b, radix: 16)) + 0x\(String(l, radix: 16)) passes 2^64"
        case .wholeSpace: "the range covers the whole 64-bit space"
        case .misaligned(let b, let l, let a):
            "range 0x\(String(b, radix: 16)) + 0x\(String(l, radix: 16)) is not \(PageSize(rawValue: a)?.description ?? String(a))-aligned"
        }
    }
}

/// A nonempty, inclusive range of addresses in one address space.
///
/// Stored as first and last address, so a range may reach the very top of the space
/// (`last == UInt64.max`) and a whole 64-bit space is representable. ``length`` is `nil` only
/// for that whole space (2^64 bytes).
public struct AddressRange<A: Address>: Hashable, Sendable, CustomStringConvertible {
    public let first: A
    public let last: A

    /// The range `[first, last]`; `first` must not be above `last`.
    @inlinable public init(first: A, last: A) throws(AddressRangeError) {
        guard first <= last else { throw .empty }
        self.first = first
        self.last = last
    }

    /// The `length` bytes starting at `base`.
    /// - Throws: ``AddressRangeError/empty`` for zero bytes, ``AddressRangeError/overflow(base:length:)``
    ///   when the range would pass 2^64.
    @inlinable public init(base: A, length: UInt64) throws(AddressRangeError) {
        guard length > 0 else { throw .empty }
        let (last, overflow) = base.rawValue.addingReportingOverflow(length - 1)
        guard !overflow else { throw .overflow(base: base.rawValue, length: length) }
        self.first = base
        self.last = A(rawValue: last)
    }

    /// The whole 64-bit space.
    @inlinable public static var all: Self { try! Self(first: A(rawValue: 0), last: A(rawValue: .max)) }

    @inlinable public var base: A { first }
    /// Bytes in the range; `nil` for the whole 64-bit space.
    @inlinable public var length: UInt64? {
        let (n, overflow) = (last.rawValue - first.rawValue).addingReportingOverflow(1)
        return overflow ? nil : n
    }
    /// The first address past the range; `nil` when the range reaches the top of the space.
    @inlinable public var end: A? { last.advanced(by: 1) }

    @inlinable public func contains(_ address: A) -> Bool { first <= address && address <= last }
    @inlinable public func contains(_ other: Self) -> Bool { first <= other.first && other.last <= last }
    @inlinable public func overlaps(_ other: Self) -> Bool { first <= other.last && other.first <= last }
    /// The common part of two ranges, if any.
    @inlinable public func intersection(_ other: Self) -> Self? {
        guard overlaps(other) else { return nil }
        return try? Self(first: max(first, other.first), last: min(last, other.last))
    }

    /// Whether both ends sit on `alignment` boundaries (base aligned, length a multiple).
    @inlinable public func isAligned(to alignment: PageSize) -> Bool {
        first.isAligned(to: alignment) && (last.rawValue &+ 1) & (alignment.bytes - 1) == 0
    }

    /// Throws ``AddressRangeError/misaligned(base:length:alignment:)`` unless ``isAligned(to:)``.
    @inlinable public func checkAligned(to alignment: PageSize) throws(AddressRangeError) {
        guard isAligned(to: alignment) else {
            throw .misaligned(base: first.rawValue, length: length ?? 0, alignment: alignment.bytes)
        }
    }

    public var description: String { "[\(first)...\(last)]" }
}

public typealias IOVARange = AddressRange<IOVA>
public typealias HostRange = AddressRange<HostAddress>
public typealias GuestPhysicalRange = AddressRange<GuestPhysicalAddress>
