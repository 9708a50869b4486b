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

extension Context {
    private func object(_ id: UInt32) throws(Errno) -> IOASObject {
        guard let ioas = objects[id] else { throw .noSuchFileOrDirectory }
        return ioas
    }

    private func ioas(_ id: UInt32) throws(Errno) -> IOASState { try object(id).state }

    // MARK: Objects

    mutating func destroy(_ cmd: inout cio_iommu_destroy) throws(Errno) {
        guard let ioas = objects[cmd.id] else { throw .noSuchFileOrDirectory }
        guard !ioas.state.inUse else { throw .resourceBusy }
        objects[cmd.id] = nil
        if vfioIOAS == cmd.id { vfioIOAS = nil }
    }

    mutating func allocateIOAS(_ cmd: inout cio_iommu_ioas_alloc) throws(Errno) {
        guard cmd.flags == 0 else { throw .notSupportedOnSocket }
        guard let id = freeID() else { throw .resourceBusy }
        objects[id] = IOASObject()
        cmd.out_ioas_id = id
    }

    // MARK: IOVA ranges

    /// `iommufd_ioas_iova_ranges`: the holes between reserved regions. Writes at most
    /// `num_iovas` entries and sets `num_iovas` to how many there are.
    mutating func iovaRanges(_ cmd: inout cio_iommu_ioas_iova_ranges) throws(Errno) {
        guard cmd.__reserved == 0 else { throw .notSupportedOnSocket }
        let ioas = try ioas(cmd.ioas_id)
        let capacity = cmd.num_iovas
        let free = holes(ioas.reserved, in: 0, .max)
        cmd.out_iova_alignment = ioas.alignment(page)
        let stride = UInt64(MemoryLayout<cio_iommu_iova_range>.stride)
        for (i, r) in free.prefix(Int(capacity)).enumerated() {
            var entry = cio_iommu_iova_range(start: r.first, last: r.last)
            try UserMemory.write(cmd.allowed_iovas &+ UInt64(i) &* stride, from: &entry, Int(stride))
        }
        cmd.num_iovas = UInt32(free.count)
    }

    /// `iommufd_ioas_allow_iovas`: replaces the allowed list after checking every range.
    mutating func allowIOVAs(_ cmd: inout cio_iommu_ioas_allow_iovas) throws(Errno) {
        guard cmd.__reserved == 0 else { throw .notSupportedOnSocket }
        let ioas = try ioas(cmd.ioas_id)
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
        objects[cmd.ioas_id]!.state.allowed = merged(loaded)
    }

    // MARK: Map, copy, unmap

    /// `iommufd_ioas_map` and `iopt_map_user_pages`.
    mutating func map(_ cmd: inout cio_iommu_ioas_map) throws(Errno) {
        guard cmd.flags & ~mapFlags == 0, cmd.__reserved == 0 else { throw .notSupportedOnSocket }
        guard cmd.iova != .max, cmd.length != .max else { throw .overflow }
        guard cmd.flags & accessFlags != 0 else { throw .invalidArgument }
        let ioas = try object(cmd.ioas_id)
        guard !cmd.user_va.addingReportingOverflow(cmd.length).overflow else { throw .overflow }
        guard cmd.length != 0, cmd.length <= UInt64.max - page else { throw .invalidArgument }
        let writable = cmd.flags & CIO_IOMMU_IOAS_MAP_WRITEABLE != 0
        let slice = Slice(address: cmd.user_va, length: cmd.length, fd: nil, writable: writable)
        try ioas.state.map(CollectionOfOne(slice), length: cmd.length, iova: &cmd.iova, flags: cmd.flags, configuration)
    }

    /// `iommufd_ioas_map_file` and `iopt_map_file_pages`.
    mutating func mapFile(_ cmd: inout cio_iommu_ioas_map_file) throws(Errno) {
        guard cmd.flags & ~mapFlags == 0 else { throw .notSupportedOnSocket }
        guard cmd.iova != .max, cmd.length != .max else { throw .overflow }
        guard cmd.flags & accessFlags != 0 else { throw .invalidArgument }
        let ioas = try object(cmd.ioas_id)
        guard cmd.length != 0 else { throw .invalidArgument }
        guard !cmd.start.addingReportingOverflow(cmd.length - 1).overflow else { throw .overflow }
        // `fget`: any descriptor open in this process; nothing is pinned without a domain.
        guard cmd.fd >= 0, fcntl(cmd.fd, F_GETFD) != -1 else { throw .badFileDescriptor }
        guard cmd.length <= UInt64.max - page else { throw .invalidArgument }
        let writable = cmd.flags & CIO_IOMMU_IOAS_MAP_WRITEABLE != 0
        let slice = Slice(address: cmd.start, length: cmd.length, fd: cmd.fd, writable: writable)
        try ioas.state.map(CollectionOfOne(slice), length: cmd.length, iova: &cmd.iova, flags: cmd.flags, configuration)
    }

    /// `iommufd_ioas_copy`: the source's contiguous areas over the range, sliced, mapped again.
    mutating func copy(_ cmd: inout cio_iommu_ioas_copy) throws(Errno) {
        guard cmd.flags & ~mapFlags == 0 else { throw .notSupportedOnSocket }
        guard cmd.length != .max, cmd.src_iova != .max, cmd.dst_iova != .max else { throw .overflow }
        guard cmd.flags & accessFlags != 0 else { throw .invalidArgument }
        let slices = try object(cmd.src_ioas_id).state.pages(cmd.src_iova, cmd.length)
        try object(cmd.dst_ioas_id).state.map(slices, length: cmd.length, iova: &cmd.dst_iova, flags: cmd.flags, configuration)
    }

    /// `iommufd_ioas_unmap`.
    mutating func unmap(_ cmd: inout cio_iommu_ioas_unmap) throws(Errno) {
        let ioas = try object(cmd.ioas_id)
        if cmd.iova == 0 && cmd.length == .max {
            let (bytes, error) = ioas.state.unmap(0, .max)
            if let error { throw error }
            cmd.length = bytes
            return
        }
        guard cmd.iova != .max, cmd.length != .max else { throw .overflow }
        guard cmd.length != 0 else { throw .invalidArgument }
        let (last, overflow) = cmd.iova.addingReportingOverflow(cmd.length - 1)
        guard !overflow else { throw .overflow }
        let (bytes, error) = ioas.state.unmap(cmd.iova, last)
        if let error { throw error }
        guard bytes != 0 else { throw .noSuchFileOrDirectory }
        cmd.length = bytes
    }

    // MARK: Process, options, VFIO compatibility, no-IOMMU, selftest

    /// `iommufd_ioas_change_process`: only file-backed areas can move to another process.
    func changeProcess(_ cmd: cio_iommu_ioas_change_process) throws(Errno) {
        guard cmd.__reserved == 0 else { throw .notSupportedOnSocket }
        for (_, ioas) in objects.sorted(by: { $0.key < $1.key }) where ioas.state.areas.contains(where: { $0.fd == nil }) {
            throw .invalidArgument
        }
    }

    /// `iommufd_option`.
    mutating func option(_ cmd: inout cio_iommu_option) throws(Errno) {
        guard cmd.__reserved == 0 else { throw .notSupportedOnSocket }
        switch cmd.option_id {
        case CIO_IOMMU_OPTION_RLIMIT_MODE:
            guard cmd.object_id == 0 else { throw .notSupportedOnSocket }
            switch cmd.op {
            case CIO_IOMMU_OPTION_OP_GET:
                cmd.val64 = accountPerProcess ? 1 : 0
            case CIO_IOMMU_OPTION_OP_SET:
                guard configuration.privileged else { throw .notPermitted }
                guard objects.isEmpty else { throw .resourceBusy }
                guard cmd.val64 <= 1 else { throw .invalidArgument }
                accountPerProcess = cmd.val64 == 1
            default:
                throw .notSupportedOnSocket
            }
        case CIO_IOMMU_OPTION_HUGE_PAGES:
            let ioas = try ioas(cmd.object_id)
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
                    objects[cmd.object_id]!.state.disableLargePages = true
                case 1:
                    objects[cmd.object_id]!.state.disableLargePages = false
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
    mutating func vfioIOAS(_ cmd: inout cio_iommu_vfio_ioas) throws(Errno) {
        guard cmd.__reserved == 0 else { throw .notSupportedOnSocket }
        switch cmd.op {
        case CIO_IOMMU_VFIO_IOAS_GET:
            guard let id = vfioIOAS else { throw .operationNotSupportedByDevice }
            cmd.ioas_id = id
        case CIO_IOMMU_VFIO_IOAS_SET:
            _ = try ioas(cmd.ioas_id)
            vfioIOAS = cmd.ioas_id
        case CIO_IOMMU_VFIO_IOAS_CLEAR:
            vfioIOAS = nil
        default:
            throw .notSupportedOnSocket
        }
    }

    /// `iommufd_ioas_noiommu_get_pa`: without `CONFIG_IOMMUFD_NOIOMMU` (the default, and the
    /// VM's kernel) a stub answering `EOPNOTSUPP`; with it, as for an IOAS whose areas an IOMMU
    /// translates.
    func noIOMMUPhysicalAddress(_ cmd: inout cio_iommu_ioas_noiommu_get_pa) throws(Errno) {
        guard configuration.noIOMMU else { throw .notSupportedOnSocket }
        guard configuration.privileged else { throw .notPermitted }
        guard cmd.flags == 0, cmd.__reserved == 0 else { throw .notSupportedOnSocket }
        guard cmd.length != 0 else { throw .invalidArgument }
        guard cmd.iova != .max else { throw .overflow }
        let ioas = try ioas(cmd.ioas_id)
        guard ioas.hasArea(cmd.iova, cmd.iova) else { throw .noSuchFileOrDirectory }
        throw .notSupportedOnSocket
    }

    /// `IOMMU_TEST_CMD`: only `IOMMU_TEST_OP_ADD_RESERVED` (`iommufd_test_add_reserved`).
    mutating func selftest(_ cmd: cio_iommu_test_cmd, _ fields: inout FieldLog) throws(Errno) {
        guard cmd.op == CIO_IOMMU_TEST_OP_ADD_RESERVED else { throw .notSupportedOnSocket }
        let start = cmd.add_reserved.start, length = cmd.add_reserved.length
        fields += [Field("start", start), Field("length", length)]
        guard length != 0 else { throw .invalidArgument }
        let (last, overflow) = start.addingReportingOverflow(length - 1)
        guard !overflow else { throw .overflow }
        let ioas = try ioas(cmd.id)
        guard !ioas.hasArea(start, last), !ioas.allowed.contains(where: { $0.intersects(start, last) }) else { throw .addressInUse }
        objects[cmd.id]!.state.reserved = merged(ioas.reserved + [Span(first: start, last: last)])
    }
}

extension IOASState {
    /// `iopt_get_pages`: the areas covering `[iova, iova + length)` back to back.
    func pages(_ iova: UInt64, _ length: UInt64) throws(Errno) -> [Slice] {
        guard length != 0 else { throw .invalidArgument }
        let (last, overflow) = iova.addingReportingOverflow(length - 1)
        guard !overflow else { throw .overflow }
        var i = firstArea(endingAtOrAbove: iova)
        guard i < areas.count, areas[i].first <= iova else { throw .noSuchFileOrDirectory }
        var cursor = iova
        var slices: [Slice] = []
        while true {
            let a = areas[i]
            let sliceLast = min(last, a.last)
            slices.append(Slice(address: a.address &+ (cursor - a.first), length: sliceLast - cursor + 1, fd: a.fd, writable: a.writable))
            if last <= a.last { return slices }
            cursor = a.last + 1
            i += 1
            guard i < areas.count, areas[i].first == cursor else { throw .noSuchFileOrDirectory }
        }
    }

    /// `iopt_alloc_area_pages` and `iopt_map_pages`: choose or check the IOVA, check every
    /// slice, then insert an area per slice.
    mutating func map(
        _ slices: some Collection<Slice>, length: UInt64, iova: inout UInt64, flags: UInt32,
        _ configuration: IOMMUFDModel.Configuration
    ) throws(Errno) {
        let page = configuration.pageSize
        let alignment = alignment(page)
        guard length & (alignment - 1) == 0, length != 0 else { throw .invalidArgument }
        if flags & CIO_IOMMU_IOAS_MAP_FIXED_IOVA == 0 {
            iova = try allocateIOVA(address: slices.first!.address, length: length, configuration)
        } else {
            try checkIOVA(iova, length, page)
        }
        let writeable = flags & CIO_IOMMU_IOAS_MAP_WRITEABLE != 0
        for s in slices {
            guard !writeable || s.writable else { throw .notPermitted }
            guard (s.address % page) & (alignment - 1) == 0 else { throw .invalidArgument }
        }
        var cursor = iova
        for s in slices {
            insert(ModelArea(first: cursor, last: cursor + (s.length - 1), address: s.address, fd: s.fd, writable: s.writable))
            cursor &+= s.length
        }
    }

    /// `iopt_check_iova`.
    private func checkIOVA(_ iova: UInt64, _ length: UInt64, _ page: UInt64) throws(Errno) {
        guard iova & (alignment(page) - 1) == 0 else { throw .invalidArgument }
        let (last, overflow) = iova.addingReportingOverflow(length - 1)
        guard !overflow else { throw .overflow }
        guard !hasReserved(iova, last) else { throw .invalidArgument }
        guard !hasArea(iova, last) else { throw .fileExists }
    }

    /// `iopt_alloc_iova`: first fit inside the allowed ranges (or `[PAGE_SIZE, ULONG_MAX -
    /// PAGE_SIZE]`), avoiding reserved regions and areas, aligned to the smaller of the length
    /// rounded up to a power of two and the lowest set bit of the source address, capped at
    /// ``IOMMUFDModel/Configuration/maximumAutomaticAlignment``; never IOVA 0.
    ///
    /// Searches the sorted areas and reserved regions from the first that could matter; costs
    /// one step per area or region passed, and allocates nothing.
    private func allocateIOVA(address: UInt64, length: UInt64, _ configuration: IOMMUFDModel.Configuration) throws(Errno) -> UInt64 {
        let page = configuration.pageSize
        let pageOffset = address % page
        guard length != 0, length < UInt64.max / 2 else { throw .overflow }
        var alignment = roundUpToPowerOfTwo(length)
        if address != 0 { alignment = min(alignment, 1 << UInt64(address.trailingZeroBitCount)) }
        if alignment >= configuration.maximumAutomaticAlignment { alignment = configuration.maximumAutomaticAlignment }
        guard alignment >= self.alignment(page) else { throw .invalidArgument }

        func fit(_ start: UInt64, _ last: UInt64) -> UInt64? {
            let (up, overflow) = start.addingReportingOverflow(alignment - 1)
            guard !overflow else { return nil }
            let aligned = (up & ~(alignment - 1)) | pageOffset
            guard aligned < last, last - aligned >= length - 1 else { return nil }
            return aligned
        }

        let lower = page, upper = UInt64.max - page
        if allowed.isEmpty {
            if let iova = firstFit(lower, upper, length, fit) { return iova }
        } else {
            for span in allowed {
                let first = max(span.first, lower), last = min(span.last, upper)
                if first <= last, let iova = firstFit(first, last, length, fit) { return iova }
            }
        }
        throw .noSpace
    }

    /// The first `fit` in the holes of `[first, last]` that no area or reserved region uses,
    /// from the start `fit(first, last)` gives. Walks both sorted lists as one, ordered by
    /// first byte: a gap before the next used span is a hole, and spans that overlap or touch
    /// leave none between them (as if merged). A hole shorter than `length` cannot fit.
    private func firstFit(_ first: UInt64, _ last: UInt64, _ length: UInt64, _ fit: (UInt64, UInt64) -> UInt64?) -> UInt64? {
        guard let start = fit(first, last) else { return nil }
        var a = firstArea(endingAtOrAbove: start), r = firstReserved(endingAtOrAbove: start)
        var cursor = start
        while true {
            let used: Span
            if a < areas.count, r >= reserved.count || areas[a].first <= reserved[r].first {
                used = Span(first: areas[a].first, last: areas[a].last)
                a += 1
            } else if r < reserved.count {
                used = reserved[r]
                r += 1
            } else {
                break
            }
            if used.last < cursor { continue }
            if used.first > last { break }
            if used.first > cursor, used.first - cursor >= length, let iova = fit(cursor, used.first - 1) { return iova }
            if used.last >= last { return nil }
            cursor = used.last + 1
        }
        return fit(cursor, last)
    }

    /// `iopt_unmap_iova_range`: removes the areas inside `[first, last]` in ascending order; an
    /// area reaching outside stops it with `ENOENT`, and what was removed before stays removed.
    mutating func unmap(_ first: UInt64, _ last: UInt64) -> (UInt64, Errno?) {
        let start = firstArea(endingAtOrAbove: first)
        var end = start
        var bytes: UInt64 = 0
        var error: Errno?
        while end < areas.count, areas[end].first <= last {
            let a = areas[end]
            if a.first < first || a.last > last {
                error = .noSuchFileOrDirectory
                break
            }
            bytes &+= a.length
            end += 1
        }
        if end > start { areas.removeSubrange(start..<end) }
        return (bytes, error)
    }
}
