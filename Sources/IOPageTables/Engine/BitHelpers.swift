/// `bits` low bits set; all 64 for `bits >= 64`.
@inlinable @inline(__always)
func lowMask(_ bits: Int) -> UInt64 {
    bits >= 64 ? .max : (bits <= 0 ? 0 : (1 << UInt64(bits)) &- 1)
}

/// Bits `high` down to `low` (inclusive) set.
@inlinable @inline(__always)
func bitField(_ high: Int, _ low: Int) -> UInt64 {
    lowMask(high + 1) & ~lowMask(low)
}

@inlinable @inline(__always)
func bit(_ n: Int) -> UInt64 { 1 << UInt64(n) }

@inlinable @inline(__always)
func isSet(_ value: UInt64, _ n: Int) -> Bool { value & (1 << UInt64(n)) != 0 }
