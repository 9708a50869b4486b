import SystemPackage
import CIOMMUFD

/// The IOVA ranges an IOAS accepts, and the alignment maps must keep.
public struct IOVARanges: Hashable, Sendable {
    /// Usable IOVA ranges, ascending; they narrow as devices attach.
    public var ranges: [IOVARange]
    /// Every mapped IOVA and length must be a multiple of this (at most the system page size).
    public var alignment: UInt64
}

extension IOMMUFDContext {
    /// Allocates an empty I/O address space.
    ///
    /// The corresponding ioctl is `IOMMU_IOAS_ALLOC`.
    public func allocateIOAS() throws(IOMMUFDError) -> IOASID {
        var cmd = makeCommand(cio_iommu_ioas_alloc.self)
        try ioctl(.ioasAlloc, &cmd, .allocateIOAS)
        return IOASID(cmd.out_ioas_id)
    }

    /// Maps process memory into `ioas`, pinning it once a device or HWPT needs it.
    ///
    /// - Parameters:
    ///   - host: Process memory that stays mapped until it is unmapped here (a ``DMABuffer``'s
    ///     ``DMABuffer/range``).
    ///   - ioas: The address space.
    ///   - iova: Where to map it, or `nil` to let the kernel choose a free, allowed IOVA.
    ///   - access: What the device may do; the bits go to the kernel as they are.
    /// - Throws: ``IOMMUFDError``; before the call only for a host range of all 2^64 bytes
    ///   (`EOVERFLOW`, as the kernel answers for lengths it cannot take). Everything else is the
    ///   kernel's rule and answer: the IOVA and length must be multiples of the IOAS's alignment
    ///   (``IOVARanges/alignment``: 1 with no domain attached) and the host address must sit at
    ///   the same offset in its page as the IOVA (`EINVAL`), `EEXIST` when the range overlaps a
    ///   mapping, `ENOSPC` when no free IOVA fits, `ENOENT` for an unknown IOAS, `EOPNOTSUPP` for
    ///   access bits the kernel does not know, `EINVAL` for empty access, `EOVERFLOW` past 2^64.
    ///
    /// The corresponding ioctl is `IOMMU_IOAS_MAP`.
    public func map(
        _ host: HostRange, into ioas: IOASID, at iova: IOVA? = nil, access: MapAccess = [.readable, .writeable]
    ) throws(IOMMUFDError) -> IOVA {
        let length = try mapLength(.map, .ioasMap, host)
        var cmd = makeCommand(cio_iommu_ioas_map.self)
        cmd.flags = access.rawValue | (iova == nil ? 0 : MapAccess.fixedIOVA)
        cmd.ioas_id = ioas.rawValue
        cmd.user_va = host.first.rawValue
        cmd.length = length
        cmd.iova = iova?.rawValue ?? 0
        try ioctl(.ioasMap, &cmd, .map)
        return IOVA(cmd.iova)
    }

    /// Maps `length` bytes of a memfd starting at byte `offset` into `ioas`.
    ///
    /// Like ``map(_:into:at:access:)`` but the memory is named by file, so it need not be
    /// mapped in this process. Every check is the kernel's: `EBADF` for a descriptor that is
    /// not open, `EINVAL` for a zero length or an offset the IOAS's alignment refuses,
    /// `EOVERFLOW` when offset + length passes 2^64.
    ///
    /// The corresponding ioctl is `IOMMU_IOAS_MAP_FILE`.
    public func mapFile(
        _ fd: CInt, offset: UInt64, length: UInt64, into ioas: IOASID, at iova: IOVA? = nil,
        access: MapAccess = [.readable, .writeable]
    ) throws(IOMMUFDError) -> IOVA {
        var cmd = makeCommand(cio_iommu_ioas_map_file.self)
        cmd.flags = access.rawValue | (iova == nil ? 0 : MapAccess.fixedIOVA)
        cmd.ioas_id = ioas.rawValue
        cmd.fd = fd
        cmd.start = offset
        cmd.length = length
        cmd.iova = iova?.rawValue ?? 0
        try ioctl(.ioasMapFile, &cmd, .mapFile)
        return IOVA(cmd.iova)
    }

    /// Unmaps every mapping inside `range` and returns the number of bytes unmapped.
    ///
    /// The range must cover whole mapped areas: the kernel never splits one. An area the range
    /// cuts into makes the call fail with `ENOENT`, and areas wholly inside the range that came
    /// before it may already be gone (the kernel's semantics; re-query with ``iovaRanges(of:)``
    /// or track mappings to recover). A range that maps nothing also fails with `ENOENT`. The
    /// whole 64-bit range unmaps everything (``unmapAll(from:)``).
    ///
    /// The corresponding ioctl is `IOMMU_IOAS_UNMAP`.
    public func unmap(_ range: IOVARange, from ioas: IOASID) throws(IOMMUFDError) -> UInt64 {
        try unmap(iova: range.first.rawValue, length: range.last.rawValue &- range.first.rawValue &+ 1, ioas, .unmap)
    }

    /// Unmaps everything in `ioas` and returns the number of bytes unmapped (0 if it was empty).
    ///
    /// The corresponding ioctl is `IOMMU_IOAS_UNMAP` with the whole 64-bit range.
    public func unmapAll(from ioas: IOASID) throws(IOMMUFDError) -> UInt64 {
        try unmap(iova: 0, length: .max, ioas, .unmapAll)
    }

    /// `IOMMU_IOAS_UNMAP` of `length` bytes at `iova`; a length of 0 stands for the whole
    /// 64-bit space (`[0, 2^64)` wraps to 0), which the kernel takes as iova 0, length
    /// `UInt64.max`.
    @inline(__always)
    func unmap(iova: UInt64, length: UInt64, _ ioas: IOASID, _ operation: IOMMUFDError.Operation) throws(IOMMUFDError) -> UInt64 {
        var cmd = makeCommand(cio_iommu_ioas_unmap.self)
        cmd.ioas_id = ioas.rawValue
        cmd.iova = iova
        cmd.length = length == 0 ? .max : length
        try ioctl(.ioasUnmap, &cmd, operation)
        return cmd.length
    }

    /// Maps into `destination` the memory already mapped at `range` of `source`, without
    /// pinning it again. `range` must lie in mapped areas of `source` (`ENOENT` otherwise); the
    /// 7.3 kernel accepts part of an area although the uAPI comment asks for an exact match.
    /// Only a range of all 2^64 bytes is refused before the call (`EOVERFLOW`); alignment,
    /// access and overlap are the kernel's to check.
    ///
    /// - Returns: The IOVA of the new mapping in `destination`.
    ///
    /// The corresponding ioctl is `IOMMU_IOAS_COPY`.
    public func copy(
        _ range: IOVARange, from source: IOASID, to destination: IOASID, at iova: IOVA? = nil,
        access: MapAccess = [.readable, .writeable]
    ) throws(IOMMUFDError) -> IOVA {
        guard let length = range.length else {
            throw IOMMUFDError(.copy, request: .ioasCopy, reason: .invalidRange(.wholeSpace))
        }
        var cmd = makeCommand(cio_iommu_ioas_copy.self)
        cmd.flags = access.rawValue | (iova == nil ? 0 : MapAccess.fixedIOVA)
        cmd.dst_ioas_id = destination.rawValue
        cmd.src_ioas_id = source.rawValue
        cmd.length = length
        cmd.dst_iova = iova?.rawValue ?? 0
        cmd.src_iova = range.first.rawValue
        try ioctl(.ioasCopy, &cmd, .copy)
        return IOVA(cmd.dst_iova)
    }

    /// The IOVA ranges `ioas` accepts now, and the alignment a map must keep.
    ///
    /// Query again after each attach or detach: devices narrow the ranges.
    ///
    /// The corresponding ioctl is `IOMMU_IOAS_IOVA_RANGES` (repeated with a larger array while the
    /// kernel answers `EMSGSIZE`).
    public func iovaRanges(of ioas: IOASID) throws(IOMMUFDError) -> IOVARanges {
        var capacity = 8
        while true {
            var storage = [cio_iommu_iova_range](repeating: cio_iommu_iova_range(), count: capacity)
            var cmd = makeCommand(cio_iommu_ioas_iova_ranges.self)
            cmd.ioas_id = ioas.rawValue
            cmd.num_iovas = UInt32(capacity)
            let result: Result<Void, IOMMUFDError> = storage.withUnsafeMutableBufferPointer { buf in
                cmd.allowed_iovas = UInt64(UInt(bitPattern: buf.baseAddress))
                return withUnsafeMutableBytes(of: &cmd) { ioctl(.ioasIOVARanges, buffer: $0.baseAddress!, .iovaRanges) }
            }
            switch result {
            case .failure(let e) where e.errno == .messageTooLong && Int(cmd.num_iovas) > capacity:
                capacity = Int(cmd.num_iovas)
                continue
            case .failure(let e):
                throw e
            case .success:
                var ranges: [IOVARange] = []
                for r in storage.prefix(Int(cmd.num_iovas)) {
                    guard let range = try? IOVARange(first: IOVA(r.start), last: IOVA(r.last)) else {
                        throw IOMMUFDError(.iovaRanges, request: .ioasIOVARanges,
                                           reason: .unexpectedResult("range start 0x\(String(r.start, radix: 16)) above its last"))
                    }
                    ranges.append(range)
                }
                return IOVARanges(ranges: ranges, alignment: cmd.out_iova_alignment)
            }
        }
    }

    /// Sets the IOVA ranges `ioas` must always keep usable (and where automatic IOVAs go).
    /// Replaces the previous list; an empty list removes the restriction. Device attachment
    /// that would narrow the ranges below these fails from then on.
    ///
    /// - Throws: ``IOMMUFDError`` from the kernel: `EINVAL` when two ranges overlap or one is a
    ///   single byte (the kernel wants `start < last`), `EADDRINUSE` when a range overlaps a
    ///   reserved region, `ENOENT` for an unknown IOAS.
    ///
    /// The corresponding ioctl is `IOMMU_IOAS_ALLOW_IOVAS`.
    public func allowIOVAs(_ ranges: [IOVARange], in ioas: IOASID) throws(IOMMUFDError) {
        var storage = ranges.map { cio_iommu_iova_range(start: $0.first.rawValue, last: $0.last.rawValue) }
        var cmd = makeCommand(cio_iommu_ioas_allow_iovas.self)
        cmd.ioas_id = ioas.rawValue
        cmd.num_iovas = UInt32(storage.count)
        let result: Result<Void, IOMMUFDError> = storage.withUnsafeMutableBufferPointer { buf in
            cmd.allowed_iovas = UInt64(UInt(bitPattern: buf.baseAddress))
            return withUnsafeMutableBytes(of: &cmd) { ioctl(.ioasAllowIOVAs, buffer: $0.baseAddress!, .allowIOVAs) }
        }
        try result.get()
    }

    /// Moves the pinned-page accounting of every mapping made from memfds (`IOMMU_IOAS_MAP_FILE`)
    /// in this iommufd to the calling process, after a live update hands the iommufd over.
    ///
    /// The corresponding ioctl is `IOMMU_IOAS_CHANGE_PROCESS`.
    public func changeProcess() throws(IOMMUFDError) {
        var cmd = makeCommand(cio_iommu_ioas_change_process.self)
        try ioctl(.ioasChangeProcess, &cmd, .changeProcess)
    }

    /// The physical address behind `iova` and how many bytes from there are contiguous, capped
    /// at `maximumLength`. Only for no-IOMMU devices, which DMA to physical addresses unsafely;
    /// other IOAS answer an error.
    ///
    /// The corresponding ioctl is `IOMMU_IOAS_NOIOMMU_GET_PA`.
    public func noIOMMUPhysicalAddress(
        of iova: IOVA, maximumLength: UInt64, in ioas: IOASID
    ) throws(IOMMUFDError) -> (physicalAddress: UInt64, contiguousLength: UInt64) {
        var cmd = makeCommand(cio_iommu_ioas_noiommu_get_pa.self)
        cmd.ioas_id = ioas.rawValue
        cmd.iova = iova.rawValue
        cmd.length = maximumLength
        try ioctl(.ioasNoIOMMUGetPA, &cmd, .physicalAddress)
        return (cmd.out_phys, cmd.length)
    }

    // MARK: Checks made before the kernel sees the call

    /// The length of a map's host range; only a range of 2^64 bytes, which no 64-bit field
    /// carries, is refused here (`EOVERFLOW`, the kernel's answer for lengths past its range).
    @inline(__always)
    func mapLength(_ op: IOMMUFDError.Operation, _ request: IoctlRequest, _ host: HostRange) throws(IOMMUFDError) -> UInt64 {
        let length = host.last.rawValue &- host.first.rawValue &+ 1
        if length == 0 { throw Self.wholeSpace(op, request) }
        return length
    }

    /// The error for a range of 2^64 bytes; out of line, so the call's fast path stays small.
    @inline(never)
    static func wholeSpace(_ op: IOMMUFDError.Operation, _ request: IoctlRequest) -> IOMMUFDError {
        IOMMUFDError(op, request: request, reason: .invalidRange(.wholeSpace))
    }
}
