// Public so the inlinable flags below can name the kernel's bits.
public import CIOMMUFD

/// What a device may do through a mapping.
///
/// The kernel's flag bits (`enum iommufd_ioas_map_flags`); a fixed IOVA is asked for by
/// passing `at:` to the map calls, never by a flag. Inlinable, so a caller's access argument
/// (the default `[.readable, .writeable]` too) folds to a constant.
public struct MapAccess: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// The device may write the memory. `IOMMU_IOAS_MAP_WRITEABLE`.
    @inlinable public static var writeable: Self { Self(rawValue: CIO_IOMMU_IOAS_MAP_WRITEABLE) }
    /// The device may read the memory. `IOMMU_IOAS_MAP_READABLE`.
    @inlinable public static var readable: Self { Self(rawValue: CIO_IOMMU_IOAS_MAP_READABLE) }

    static let fixedIOVA = CIO_IOMMU_IOAS_MAP_FIXED_IOVA

    public var description: String {
        flagDescription(rawValue, [(Self.readable.rawValue, "readable"), (Self.writeable.rawValue, "writeable")])
    }
}

/// "[a, b]" for the named bits, with any leftover bits in hex.
func flagDescription<T: FixedWidthInteger>(_ value: T, _ names: [(T, String)]) -> String {
    var rest = value
    var parts: [String] = []
    for (bit, name) in names where value & bit == bit && bit != 0 {
        parts.append(name)
        rest &= ~bit
    }
    if rest != 0 { parts.append("0x" + String(rest, radix: 16)) }
    return "[" + parts.joined(separator: ", ") + "]"
}
