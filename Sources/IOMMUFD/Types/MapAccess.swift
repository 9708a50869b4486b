import CIOMMUFD

/// What a device may do through a mapping.
///
/// The kernel's flag bits (`enum iommufd_ioas_map_flags`); a fixed IOVA is asked for by
/// passing `at:` to the map calls, never by a flag.
public struct MapAccess: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// The device may write the memory. `IOMMU_IOAS_MAP_WRITEABLE`.
    public static let writeable = Self(rawValue: CIO_IOMMU_IOAS_MAP_WRITEABLE)
    /// The device may read the memory. `IOMMU_IOAS_MAP_READABLE`.
    public static let readable = Self(rawValue: CIO_IOMMU_IOAS_MAP_READABLE)

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
