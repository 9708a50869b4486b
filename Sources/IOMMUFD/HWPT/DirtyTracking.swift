import CIOMMUFD

/// Dirty bits of an IOVA range: bit `i` stands for the page at `range.first + i * pageSize`.
public struct DirtyBitmap: Hashable, Sendable {
    public let range: IOVARange
    public let pageSize: PageSize
    /// The bits as the kernel wrote them, 64 pages a word, lowest bit first.
    public let words: [UInt64]

    /// Pages in the range.
    public var pageCount: Int { Int((range.length ?? 0) >> UInt64(pageSize.shift)) }

    /// Whether the page holding `iova` is dirty; false outside the range.
    public func isDirty(_ iova: IOVA) -> Bool {
        guard range.contains(iova) else { return false }
        let i = Int(iova.distance(from: range.first) >> UInt64(pageSize.shift))
        return words[i / 64] >> UInt64(i % 64) & 1 == 1
    }

    /// Indices of the dirty pages, in order.
    public var dirtyPageIndices: [Int] {
        (0..<pageCount).filter { words[$0 / 64] >> UInt64($0 % 64) & 1 == 1 }
    }
}

/// Flags of `IOMMU_HWPT_SET_DIRTY_TRACKING`. Bits this type does not name reach the kernel
/// unchanged (7.3 answers `EOPNOTSUPP` for them), so a newer flag can be probed.
public struct DirtyTrackingFlags: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// Track (set) or stop tracking (clear). `IOMMU_HWPT_DIRTY_TRACKING_ENABLE`.
    public static let enable = Self(rawValue: CIO_IOMMU_HWPT_DIRTY_TRACKING_ENABLE)
    public var description: String { flagDescription(rawValue, [(Self.enable.rawValue, "enable")]) }
}

extension IOMMUFDContext {
    /// Starts or stops dirty tracking on a HWPT allocated with ``HWPTAllocationFlags/dirtyTracking``.
    /// Starting clears any dirty bits the IOMMU set before.
    ///
    /// - Throws: ``IOMMUFDError``; `EOPNOTSUPP` when the HWPT cannot track, `ENOENT` for an
    ///   unknown or non-paging HWPT.
    ///
    /// The corresponding ioctl is `IOMMU_HWPT_SET_DIRTY_TRACKING`.
    public func setDirtyTracking(_ enabled: Bool, for hwpt: HWPTID) throws(IOMMUFDError) {
        try setDirtyTracking(enabled ? .enable : [], for: hwpt)
    }

    /// Sets the dirty-tracking flags of a HWPT: ``DirtyTrackingFlags/enable`` starts tracking,
    /// no flags stop it. Every bit is passed to the kernel as given.
    ///
    /// - Throws: ``IOMMUFDError``; from the kernel `EOPNOTSUPP` for a flag it does not know or
    ///   a HWPT that cannot track, `ENOENT` for an unknown or non-paging HWPT.
    ///
    /// The corresponding ioctl is `IOMMU_HWPT_SET_DIRTY_TRACKING`.
    public func setDirtyTracking(_ flags: DirtyTrackingFlags, for hwpt: HWPTID) throws(IOMMUFDError) {
        var cmd = makeCommand(cio_iommu_hwpt_set_dirty_tracking.self)
        cmd.hwpt_id = hwpt.rawValue
        cmd.flags = flags.rawValue
        try ioctl(.hwptSetDirtyTracking, &cmd, .setDirtyTracking)
    }

    /// Reads the dirty bits of `range` into a caller's buffer, one bit per `pageSize` page
    /// (bit `i` for the page at `range.first + i * pageSize`), and by default clears them in
    /// the IOMMU. Bits of clean pages are left as they were: pass a zeroed buffer.
    ///
    /// No allocation: the kernel writes straight into `bitmap`.
    ///
    /// - Parameters:
    ///   - bitmap: At least `ceil(pages / 64)` 8-byte words, 8-byte aligned.
    ///   - clear: Clear the bits read (`false` sets `IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR`).
    /// - Throws: ``IOMMUFDError`` before the call only when `bitmap` is smaller than the whole
    ///   64-bit words the kernel writes for `range` (`EINVAL`; the kernel cannot know the
    ///   buffer's size, so this guards memory); from the kernel `ENOENT` for an unknown HWPT,
    ///   `EINVAL` when the range is not aligned to `pageSize` or the IOAS's alignment,
    ///   `EOVERFLOW` past 2^64. The buffer needs no particular alignment.
    ///
    /// The corresponding ioctl is `IOMMU_HWPT_GET_DIRTY_BITMAP`.
    public func dirtyBitmap(
        of hwpt: HWPTID, range: IOVARange, pageSize: PageSize, clear: Bool = true,
        into bitmap: UnsafeMutableRawBufferPointer
    ) throws(IOMMUFDError) {
        let need = Self.dirtyBitmapBytes(range, pageSize)
        guard let base = bitmap.baseAddress, UInt64(bitmap.count) >= need else {
            throw IOMMUFDError(.dirtyBitmap, request: .hwptGetDirtyBitmap,
                               reason: .invalidArgument("the bitmap of \(range) in \(pageSize) pages needs \(need) bytes; got \(bitmap.count)"))
        }
        var cmd = makeCommand(cio_iommu_hwpt_get_dirty_bitmap.self)
        cmd.hwpt_id = hwpt.rawValue
        cmd.flags = clear ? 0 : CIO_IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR
        cmd.iova = range.first.rawValue
        cmd.length = range.length ?? 0
        cmd.page_size = pageSize.bytes
        cmd.data = UInt64(UInt(bitPattern: base))
        try ioctl(.hwptGetDirtyBitmap, &cmd, .dirtyBitmap)
    }

    /// Reads the dirty bits of `range` into a new ``DirtyBitmap``; see
    /// ``dirtyBitmap(of:range:pageSize:clear:into:)``.
    ///
    /// The corresponding ioctl is `IOMMU_HWPT_GET_DIRTY_BITMAP`.
    public func dirtyBitmap(
        of hwpt: HWPTID, range: IOVARange, pageSize: PageSize, clear: Bool = true
    ) throws(IOMMUFDError) -> DirtyBitmap {
        let bytes = Self.dirtyBitmapBytes(range, pageSize)
        guard bytes <= UInt64(Self.maximumBitmapBytes) else {
            throw IOMMUFDError(.dirtyBitmap, request: .hwptGetDirtyBitmap,
                               reason: .invalidArgument("a bitmap of \(bytes) bytes is more than this call allocates (\(Self.maximumBitmapBytes)); pass a buffer", errno: .noMemory))
        }
        var words = [UInt64](repeating: 0, count: Int(bytes / 8))
        try words.withUnsafeMutableBytes { b in
            Result { () throws(IOMMUFDError) in try dirtyBitmap(of: hwpt, range: range, pageSize: pageSize, clear: clear, into: b) }
        }.get()
        return DirtyBitmap(range: range, pageSize: pageSize, words: words)
    }

    /// The largest bitmap ``dirtyBitmap(of:range:pageSize:clear:)`` allocates: 256 MiB, the
    /// bits of 8 TiB in 4 KiB pages.
    public static let maximumBitmapBytes = 1 << 28

    /// Bytes of the whole 64-bit words that hold one bit per `pageSize` page of `range` (the
    /// last page rounded up; the kernel refuses a misaligned range itself).
    static func dirtyBitmapBytes(_ range: IOVARange, _ pageSize: PageSize) -> UInt64 {
        let span = range.last.rawValue - range.first.rawValue
        let pages = span >> UInt64(pageSize.shift) + 1
        return (pages + 63) / 64 * 8
    }
}
