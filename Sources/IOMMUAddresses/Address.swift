/// A 64-bit address in one specific address space.
///
/// Each address space gets its own type (``IOVA``, ``HostAddress``, ``GuestPhysicalAddress``),
/// so the compiler refuses to mix them; there is no arithmetic between two of them. Offsets are
/// byte counts, and every operation that could wrap past 2^64 is checked.
public protocol Address: RawRepresentable<UInt64>, Hashable, Comparable, Sendable,
    CustomStringConvertible
{
    init(rawValue: UInt64)
}

extension Address {
    @inlinable public init(_ rawValue: UInt64) { self.init(rawValue: rawValue) }

    @inlinable public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    /// This address moved up by `bytes`, or `nil` if that passes the end of the 64-bit space.
    @inlinable public func advanced(by bytes: UInt64) -> Self? {
        let (sum, overflow) = rawValue.addingReportingOverflow(bytes)
        return overflow ? nil : Self(rawValue: sum)
    }

    /// The byte distance from `other` up to this address; `other` must not be above it.
    @inlinable public func distance(from other: Self) -> UInt64 {
        precondition(other <= self, "distance(from:) with a higher address")
        return rawValue - other.rawValue
    }

    /// Whether the address is a multiple of `alignment` (a power of two).
    @inlinable public func isAligned(to alignment: PageSize) -> Bool { rawValue & (alignment.bytes - 1) == 0 }

    /// The address rounded down to a multiple of `alignment`.
    @inlinable public func alignedDown(to alignment: PageSize) -> Self { Self(rawValue: rawValue & ~(alignment.bytes - 1)) }

    public var description: String { "0x" + String(rawValue, radix: 16) }
}

/// An I/O virtual address: what a device puts on the bus, translated by the IOMMU.
public struct IOVA: Address {
    public let rawValue: UInt64
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue }
}

/// A guest-physical address: what a guest writes into its own IO page tables.
public struct GuestPhysicalAddress: Address {
    public let rawValue: UInt64
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue }
}

/// A virtual address in this process (the user address the kernel pins for DMA).
public struct HostAddress: Address {
    public let rawValue: UInt64
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// The address of `pointer` in this process.
    @inlinable public init(_ pointer: UnsafeRawPointer) { self.rawValue = UInt64(UInt(bitPattern: pointer)) }

    /// The address as a pointer; `nil` for address zero. Dereferencing it is the caller's risk.
    @inlinable public var unsafePointer: UnsafeMutableRawPointer? { UnsafeMutableRawPointer(bitPattern: UInt(rawValue)) }
}

extension IOVA {
    /// The IOVA equal to a host address, for identity-mapped DMA (IOVA == process address).
    @inlinable public init(identityMapping host: HostAddress) { self.init(rawValue: host.rawValue) }
}
