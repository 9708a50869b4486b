#if canImport(Glibc)
import Glibc
#endif

/// A power-of-two size in bytes: a page, a huge page, a leaf size or an alignment.
public struct PageSize: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    /// log2 of the size in bytes (0...63).
    public let shift: UInt8
    @inlinable public var rawValue: UInt64 { bytes }
    @inlinable public var bytes: UInt64 { 1 << UInt64(shift) }

    /// A size of `1 << shift` bytes. Traps when `shift > 63` (a programmer error).
    @inlinable public init(shift: Int) {
        precondition((0...63).contains(shift), "page size shift out of range")
        self.shift = UInt8(shift)
    }

    /// `nil` unless `rawValue` is a nonzero power of two.
    @inlinable public init?(rawValue: UInt64) {
        guard rawValue != 0, rawValue & (rawValue - 1) == 0 else { return nil }
        self.shift = UInt8(rawValue.trailingZeroBitCount)
    }

    @inlinable public static var size4K: PageSize { PageSize(shift: 12) }
    @inlinable public static var size16K: PageSize { PageSize(shift: 14) }
    @inlinable public static var size64K: PageSize { PageSize(shift: 16) }
    @inlinable public static var size2M: PageSize { PageSize(shift: 21) }
    @inlinable public static var size32M: PageSize { PageSize(shift: 25) }
    @inlinable public static var size512M: PageSize { PageSize(shift: 29) }
    @inlinable public static var size1G: PageSize { PageSize(shift: 30) }

    /// The base page size of this machine (`sysconf(_SC_PAGESIZE)`).
    public static let system: PageSize = {
        #if canImport(Glibc)
        return PageSize(rawValue: UInt64(sysconf(Int32(_SC_PAGESIZE)))) ?? .size4K
        #else
        return .size4K
        #endif
    }()

    @inlinable public static func < (lhs: Self, rhs: Self) -> Bool { lhs.shift < rhs.shift }

    public var description: String {
        let units: [(Int, String)] = [(60, "E"), (50, "P"), (40, "T"), (30, "G"), (20, "M"), (10, "K")]
        for (s, u) in units where Int(shift) >= s { return "\(1 << (Int(shift) - s))\(u)" }
        return "\(bytes)"
    }
}

/// A set of page sizes as the kernel and the hardware report them: bit *n* set means 2^n bytes.
public struct PageSizeSet: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ sizes: some Sequence<PageSize>) { self.rawValue = sizes.reduce(0) { $0 | $1.bytes } }

    @inlinable public func contains(_ size: PageSize) -> Bool { rawValue & size.bytes != 0 }
    /// The sizes in ascending order.
    public var sizes: [PageSize] {
        (0..<64).compactMap { rawValue & (1 << UInt64($0)) != 0 ? PageSize(shift: $0) : nil }
    }
    /// The smallest size in the set.
    @inlinable public var smallest: PageSize? { rawValue == 0 ? nil : PageSize(shift: rawValue.trailingZeroBitCount) }
    public var description: String { "[" + sizes.map(\.description).joined(separator: ", ") + "]" }
}
