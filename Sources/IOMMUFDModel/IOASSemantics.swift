#if canImport(Glibc)
import Glibc
#endif
import IOMMUFD
import SystemPackage
import CIOMMUFD

/// A slice of pages to map (`struct iopt_pages_list`): where its first byte comes from.
struct Slice {
    var address: UInt64
    var length: UInt64
    var fd: CInt?
    var writable: Bool
}

private let mapFlags = CIO_IOMMU_IOAS_MAP_FIXED_IOVA | CIO_IOMMU_IOAS_MAP_WRITEABLE | CIO_IOMMU_IOAS_MAP_READABLE
private let accessFlags = CIO_IOMMU_IOAS_MAP_WRITEABLE | CIO_IOMMU_IOAS_MAP_READABLE

/// Merges overlapping and adjacent spans (what the kernel's span iterators see), ascending.
func merged(_ spans: [Span]) -> [Span] {
    var out: [Span] = []
    for s in spans.sorted(by: { $0.first < $1.first }) {
        if let l = out.last, s.first <= l.last || (l.last != .max && s.first == l.last + 1) {
            out[out.count - 1].last = max(l.last, s.last)
        } else {
            out.append(s)
        }
    }
    return out
}

/// The gaps of `used` (merged, ascending) inside `[first, last]`; `first <= last`.
func holes(_ used: [Span], in first: UInt64, _ last: UInt64) -> [Span] {
    var out: [Span] = []
    var cursor = first
    for u in used {
        if u.last < cursor { continue }
        if u.first > last { break }
        if u.first > cursor { out.append(Span(first: cursor, last: u.first - 1)) }
        if u.last >= last { return out }
        cursor = u.last + 1
    }
    out.append(Span(first: cursor, last: last))
    return out
}

func roundUpToPowerOfTwo(_ x: UInt64) -> UInt64 {
    x <= 1 ? 1 : 1 << UInt64(64 - (x - 1).leadingZeroBitCount)
}

extension ModelState {
    private func ioas(_ fd: CInt, _ id: UInt32) throws(Errno) -> IOASState {
        guard let ioas = contexts[fd]!.objects[id] else { throw .noSuchFileOrDirectory }
        return ioas
    }

    // MARK: Objects

    mutating func destroy(_ fd: CInt, _ cmd: inout cio_iommu_destroy) throws(Errno) {
        guard let ioas = contexts[fd]!.objects[cmd.id] else { throw .noSuchFileOrDirectory }
        guard !ioas.inUse else { throw .resourceBusy }
        contexts[fd]!.objects[cmd.id] = nil
        if contexts[fd]!.vfioIOAS == cmd.id { contexts[fd]!.vfioIOAS = nil }
    }

    mutating func allocateIOAS(_ fd: CInt, _ cmd: inout cio_iommu_ioas_alloc) throws(Errno) {
        guard cmd.flags == 0 else { throw .notSupportedOnSocket }
        guard let id = contexts[fd]!.freeID() else { throw .resourceBusy }
        contexts[fd]!.objects[id] = IOASState()
        cmd.out_ioas_id = id
    }

    // MARK: IOVA ranges

    /// `iommufd_ioas_iova_ranges`: the holes between reserved regions. Writes at most
    /// `num_iovas` entries and sets `num_iovas` to how many there are.
    mutating func iovaRanges(_ fd: CInt, _ cmd: inout cio_iommu_ioas_iova_ranges) throws(Errno) {
        guard cmd.__reserved == 0 else { throw .notSupportedOnSocket }
        let ioas = try ioas(fd, cmd.ioas_id)
        let capacity = cmd.num_iovas
        let free = holes(merged(ioas.reserved), in: 0, .max)
        cmd.out_iova_alignment = ioas.alignment(page)
        let stride = UInt64(MemoryLayout<cio_iommu_iova_range>.stride)
        for (i, r) in free.prefix(Int(capacity)).enumerated() {
            var entry = cio_iommu_iova_range(start: r.first, last: r.last)
            try UserMemory.write(cmd.allowed_iovas &+ UInt64(i) &* stride, from: &entry, Int(stride))
        }
        cmd.num_iovas = UInt32(free.count)
    }

    /// `iommufd_ioas_allow_iovas`: replaces the allowed list after checking every range.
    mutating func allowIOVAs(_ fd: CInt, _ cmd: inout cio_iommu_ioas_allow_iovas) throws(Errno) {
        guard cmd.__reserved == 0 else { throw .notSupportedOnSocket }
        let ioas = try ioas(fd, cmd.ioas_id)
        var loaded: [Span] = []
        let stride = UInt64(MemoryLayout<cio_iommu_iova_range>.stride)
        for i in 0..<UInt64(cmd.num_iovas) {
            var r = cio_iommu_iova_range()
            try UserMemory.read(cmd.allowed_iovas &+ i &* stride, into: &r, Int(stride))
            guard r.start < r.last else { throw .invalidArgument }
            guard !loaded.contains(where: { $0.intersects(r.start, r.last) }) else { throw .invalidArgument }
            loaded.append(Span(first: r.start, last: r.last))
        }
        for a in loaded where ioas.hasReserved(a.first, a.last) { throw .addressInUse }
        contexts[fd]!.objects[cmd.ioas_id]!.allowed = loaded
    }

    // MARK: Map, copy, unmap

    /// `iommufd_ioas_map` and `iopt_map_user_pages`.
    mutating func map(_ fd: CInt, _ cmd: inout cio_iommu_ioas_map) throws(Errno) {
        guard cmd.flags & ~mapFlags == 0, cmd.__reserved == 0 else { throw .notSupportedOnSocket }
        guard cmd.iova != .max, cmd.length != .max else { throw .overflow }
        guard cmd.flags & accessFlags != 0 else { throw .invalidArgument }
        _ = try ioas(fd, cmd.ioas_id)
        guard !cmd.user_va.addingReportingOverflow(cmd.length).overflow else { throw .overflow }
        guard cmd.length != 0, cmd.length <= UInt64.max - page else { throw .invalidArgument }
        let writable = cmd.flags & CIO_IOMMU_IOAS_MAP_WRITEABLE != 0
        try mapSlices(fd, cmd.ioas_id, [Slice(address: cmd.user_va, length: cmd.length, fd: nil, writable: writable)],
                      length: cmd.length, iova: &cmd.iova, flags: cmd.flags)
    }

    /// `iommufd_ioas_map_file` and `iopt_map_file_pages`.
    mutating func mapFile(_ fd: CInt, _ cmd: inout cio_iommu_ioas_map_file) throws(Errno) {
        guard cmd.flags & ~mapFlags == 0 else { throw .notSupportedOnSocket }
        guard cmd.iova != .max, cmd.length != .max else { throw .overflow }
        guard cmd.flags & accessFlags != 0 else { throw .invalidArgument }
        _ = try ioas(fd, cmd.ioas_id)
        guard cmd.length != 0 else { throw .invalidArgument }
        guard !cmd.start.addingReportingOverflow(cmd.length - 1).overflow else { throw .overflow }
        // `fget`: any descriptor open in this process; nothing is pinned without a domain.
        guard cmd.fd >= 0, fcntl(cmd.fd, F_GETFD) != -1 else { throw .badFileDescriptor }
        guard cmd.length <= UInt64.max - page else { throw .invalidArgument }
        let writable = cmd.flags & CIO_IOMMU_IOAS_MAP_WRITEABLE != 0
        try mapSlices(fd, cmd.ioas_id, [Slice(address: cmd.start, length: cmd.length, fd: cmd.fd, writable: writable)],
                      length: cmd.length, iova: &cmd.iova, flags: cmd.flags)
    }

    /// `iommufd_ioas_copy`: the source's contiguous areas over the range, sliced, mapped again.
    mutating func copy(_ fd: CInt, _ cmd: inout cio_iommu_ioas_copy) throws(Errno) {
        guard cmd.flags & ~mapFlags == 0 else { throw .notSupportedOnSocket }
        guard cmd.length != .max, cmd.src_iova != .max, cmd.dst_iova != .max else { throw .overflow }
        guard cmd.flags & accessFlags != 0 else { throw .invalidArgument }
        let source = try ioas(fd, cmd.src_ioas_id)
        let slices = try pages(of: source, cmd.src_iova, cmd.length)
        _ = try ioas(fd, cmd.dst_ioas_id)
        try mapSlices(fd, cmd.dst_ioas_id, slices, length: cmd.length, iova: &cmd.dst_iova, flags: cmd.flags)
    }

    /// `iopt_get_pages`: the areas covering `[iova, iova + length)` back to back.
    private func pages(of ioas: IOASState, _ iova: UInt64, _ length: UInt64) throws(Errno) -> [Slice] {
        guard length != 0 else { throw .invalidArgument }
        let (last, overflow) = iova.addingReportingOverflow(length - 1)
        guard !overflow else { throw .overflow }
        var i = ioas.firstArea(endingAtOrAbove: iova)
        guard i < ioas.areas.count, ioas.areas[i].first <= iova else { throw .noSuchFileOrDirectory }
        var cursor = iova
        var slices: [Slice] = []
        while true {
            let a = ioas.areas[i]
            let sliceLast = min(last, a.last)
            slices.append(Slice(address: a.address &+ (cursor - a.first), length: sliceLast - cursor + 1, fd: a.fd, writable: a.writable))
            if last <= a.last { return slices }
            cursor = a.last + 1
            i += 1
            guard i < ioas.areas.count, ioas.areas[i].first == cursor else { throw .noSuchFileOrDirectory }
        }
    }

    /// `iopt_alloc_area_pages` and `iopt_map_pages`: choose or check the IOVA, then insert an
    /// area per slice.
    private mutating func mapSlices(
        _ fd: CInt, _ id: UInt32, _ slices: [Slice], length: UInt64, iova: inout UInt64, flags: UInt32
    ) throws(Errno) {
        let ioas = contexts[fd]!.objects[id]!
        let alignment = ioas.alignment(page)
        guard length & (alignment - 1) == 0, length != 0 else { throw .invalidArgument }
        if flags & CIO_IOMMU_IOAS_MAP_FIXED_IOVA == 0 {
            iova = try allocateIOVA(ioas, address: slices[0].address, length: length)
        } else {
            try checkIOVA(ioas, iova, length)
        }
        let writeable = flags & CIO_IOMMU_IOAS_MAP_WRITEABLE != 0
        var cursor = iova
        var areas: [ModelArea] = []
        for s in slices {
            guard !writeable || s.writable else { throw .notPermitted }
            guard (s.address % page) & (alignment - 1) == 0 else { throw .invalidArgument }
            areas.append(ModelArea(first: cursor, last: cursor + (s.length - 1), address: s.address, fd: s.fd, writable: s.writable))
            cursor &+= s.length
        }
        for a in areas { contexts[fd]!.objects[id]!.insert(a) }
    }

    /// `iopt_check_iova`.
    private func checkIOVA(_ ioas: IOASState, _ iova: UInt64, _ length: UInt64) throws(Errno) {
        guard iova & (ioas.alignment(page) - 1) == 0 else { throw .invalidArgument }
        let (last, overflow) = iova.addingReportingOverflow(length - 1)
        guard !overflow else { throw .overflow }
        guard !ioas.hasReserved(iova, last) else { throw .invalidArgument }
        guard !ioas.hasArea(iova, last) else { throw .fileExists }
    }

    /// `iopt_alloc_iova`: first fit inside the allowed ranges (or `[PAGE_SIZE, ULONG_MAX -
    /// PAGE_SIZE]`), avoiding reserved regions and areas, aligned to the smaller of the length
    /// rounded up to a power of two and the lowest set bit of the source address, capped at
    /// ``IOMMUFDModel/Configuration/maximumAutomaticAlignment``; never IOVA 0.
    private func allocateIOVA(_ ioas: IOASState, address: UInt64, length: UInt64) throws(Errno) -> UInt64 {
        let pageOffset = address % page
        guard length != 0, length < UInt64.max / 2 else { throw .overflow }
        var alignment = roundUpToPowerOfTwo(length)
        if address != 0 { alignment = min(alignment, 1 << UInt64(address.trailingZeroBitCount)) }
        if alignment >= configuration.maximumAutomaticAlignment { alignment = configuration.maximumAutomaticAlignment }
        guard alignment >= ioas.alignment(page) else { throw .invalidArgument }

        func fit(_ start: UInt64, _ last: UInt64) -> UInt64? {
            let (up, overflow) = start.addingReportingOverflow(alignment - 1)
            guard !overflow else { return nil }
            let aligned = (up & ~(alignment - 1)) | pageOffset
            guard aligned < last, last - aligned >= length - 1 else { return nil }
            return aligned
        }

        let lower = page, upper = UInt64.max - page
        let allowed = ioas.allowed.isEmpty
            ? [Span(first: lower, last: upper)]
            : merged(ioas.allowed).compactMap { s -> Span? in
                let f = max(s.first, lower), l = min(s.last, upper)
                return f <= l ? Span(first: f, last: l) : nil
            }
        var used: [Span]? = nil
        for span in allowed {
            guard let start = fit(span.first, span.last) else { continue }
            if used == nil { used = merged(ioas.reserved + ioas.areas.map { Span(first: $0.first, last: $0.last) }) }
            for hole in holes(used!, in: start, span.last) {
                if let iova = fit(hole.first, hole.last) { return iova }
            }
        }
        throw .noSpace
    }

    /// `iommufd_ioas_unmap`.
    mutating func unmap(_ fd: CInt, _ cmd: inout cio_iommu_ioas_unmap) throws(Errno) {
        _ = try ioas(fd, cmd.ioas_id)
        if cmd.iova == 0 && cmd.length == .max {
            let (bytes, error) = unmapRange(fd, cmd.ioas_id, 0, .max)
            if let error { throw error }
            cmd.length = bytes
            return
        }
        guard cmd.iova != .max, cmd.length != .max else { throw .overflow }
        guard cmd.length != 0 else { throw .invalidArgument }
        let (last, overflow) = cmd.iova.addingReportingOverflow(cmd.length - 1)
        guard !overflow else { throw .overflow }
        let (bytes, error) = unmapRange(fd, cmd.ioas_id, cmd.iova, last)
        if let error { throw error }
        guard bytes != 0 else { throw .noSuchFileOrDirectory }
        cmd.length = bytes
    }

    /// `iopt_unmap_iova_range`: removes the areas inside `[first, last]` in ascending order; an
    /// area reaching outside stops it with `ENOENT`, and what was removed before stays removed.
    private mutating func unmapRange(_ fd: CInt, _ id: UInt32, _ first: UInt64, _ last: UInt64) -> (UInt64, Errno?) {
        let ioas = contexts[fd]!.objects[id]!
        let start = ioas.firstArea(endingAtOrAbove: first)
        var end = start
        var bytes: UInt64 = 0
        var error: Errno?
        while end < ioas.areas.count, ioas.areas[end].first <= last {
            let a = ioas.areas[end]
            if a.first < first || a.last > last {
                error = .noSuchFileOrDirectory
                break
            }
            bytes &+= a.length
            end += 1
        }
        if end > start { contexts[fd]!.objects[id]!.areas.removeSubrange(start..<end) }
        return (bytes, error)
    }

    // MARK: Process, options, VFIO compatibility, no-IOMMU, selftest

    /// `iommufd_ioas_change_process`: only file-backed areas can move to another process.
    func changeProcess(_ fd: CInt, _ cmd: cio_iommu_ioas_change_process) throws(Errno) {
        guard cmd.__reserved == 0 else { throw .notSupportedOnSocket }
        for (_, ioas) in contexts[fd]!.objects.sorted(by: { $0.key < $1.key }) where ioas.areas.contains(where: { $0.fd == nil }) {
            throw .invalidArgument
        }
    }

    /// `iommufd_option`.
    mutating func option(_ fd: CInt, _ cmd: inout cio_iommu_option) throws(Errno) {
        guard cmd.__reserved == 0 else { throw .notSupportedOnSocket }
        switch cmd.option_id {
        case CIO_IOMMU_OPTION_RLIMIT_MODE:
            guard cmd.object_id == 0 else { throw .notSupportedOnSocket }
            switch cmd.op {
            case CIO_IOMMU_OPTION_OP_GET:
                cmd.val64 = contexts[fd]!.accountPerProcess ? 1 : 0
            case CIO_IOMMU_OPTION_OP_SET:
                guard configuration.privileged else { throw .notPermitted }
                guard contexts[fd]!.objects.isEmpty else { throw .resourceBusy }
                guard cmd.val64 <= 1 else { throw .invalidArgument }
                contexts[fd]!.accountPerProcess = cmd.val64 == 1
            default:
                throw .notSupportedOnSocket
            }
        case CIO_IOMMU_OPTION_HUGE_PAGES:
            let ioas = try ioas(fd, cmd.object_id)
            switch cmd.op {
            case CIO_IOMMU_OPTION_OP_GET:
                cmd.val64 = ioas.disableLargePages ? 0 : 1
            case CIO_IOMMU_OPTION_OP_SET:
                switch cmd.val64 {
                case 0:
                    guard !ioas.disableLargePages else { return }
                    // iopt_check_iova_alignment for the page alignment huge pages off needs.
                    let mask = page - 1
                    for a in ioas.areas where a.first & mask != 0 || a.length & mask != 0 || (a.address % page) & mask != 0 {
                        throw .addressInUse
                    }
                    contexts[fd]!.objects[cmd.object_id]!.disableLargePages = true
                case 1:
                    contexts[fd]!.objects[cmd.object_id]!.disableLargePages = false
                default:
                    throw .invalidArgument
                }
            default:
                throw .notSupportedOnSocket
            }
        default:
            throw .notSupportedOnSocket
        }
    }

    /// `iommufd_vfio_ioas`.
    mutating func vfioIOAS(_ fd: CInt, _ cmd: inout cio_iommu_vfio_ioas) throws(Errno) {
        guard cmd.__reserved == 0 else { throw .notSupportedOnSocket }
        switch cmd.op {
        case CIO_IOMMU_VFIO_IOAS_GET:
            guard let id = contexts[fd]!.vfioIOAS else { throw .operationNotSupportedByDevice }
            cmd.ioas_id = id
        case CIO_IOMMU_VFIO_IOAS_SET:
            _ = try ioas(fd, cmd.ioas_id)
            contexts[fd]!.vfioIOAS = cmd.ioas_id
        case CIO_IOMMU_VFIO_IOAS_CLEAR:
            contexts[fd]!.vfioIOAS = nil
        default:
            throw .notSupportedOnSocket
        }
    }

    /// `iommufd_ioas_noiommu_get_pa`: without `CONFIG_IOMMUFD_NOIOMMU` (the default, and the
    /// VM's kernel) a stub answering `EOPNOTSUPP`; with it, as for an IOAS whose areas an IOMMU
    /// translates.
    func noIOMMUPhysicalAddress(_ fd: CInt, _ cmd: inout cio_iommu_ioas_noiommu_get_pa) throws(Errno) {
        guard configuration.noIOMMU else { throw .notSupportedOnSocket }
        guard configuration.privileged else { throw .notPermitted }
        guard cmd.flags == 0, cmd.__reserved == 0 else { throw .notSupportedOnSocket }
        guard cmd.length != 0 else { throw .invalidArgument }
        guard cmd.iova != .max else { throw .overflow }
        let ioas = try ioas(fd, cmd.ioas_id)
        guard ioas.hasArea(cmd.iova, cmd.iova) else { throw .noSuchFileOrDirectory }
        throw .notSupportedOnSocket
    }

    /// `IOMMU_TEST_CMD`: only `IOMMU_TEST_OP_ADD_RESERVED` (`iommufd_test_add_reserved`).
    mutating func selftest(_ fd: CInt, _ cmd: cio_iommu_test_cmd, _ fields: inout [Field]) throws(Errno) {
        guard cmd.op == CIO_IOMMU_TEST_OP_ADD_RESERVED else { throw .notSupportedOnSocket }
        let start = cmd.add_reserved.start, length = cmd.add_reserved.length
        fields += [Field("start", start), Field("length", length)]
        guard length != 0 else { throw .invalidArgument }
        let (last, overflow) = start.addingReportingOverflow(length - 1)
        guard !overflow else { throw .overflow }
        let ioas = try ioas(fd, cmd.id)
        guard !ioas.hasArea(start, last), !ioas.allowed.contains(where: { $0.intersects(start, last) }) else { throw .addressInUse }
        contexts[fd]!.objects[cmd.id]!.reserved.append(Span(first: start, last: last))
    }
}
