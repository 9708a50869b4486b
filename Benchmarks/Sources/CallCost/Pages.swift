// Map/unmap of 4 KiB, 2 MiB and 1 GiB pages, random churn and IOAS_COPY: each through the typed
// Swift API and through a C loop doing the same ioctls (CallCostFloor), in turn in one process.
#if canImport(Glibc)
import Glibc
#endif
import BenchRecord
import CallCostFloor
import IOMMUFD

// MARK: BENCH_JSON

/// One measurement of suite `CallCost <suite>` (BenchRecord).
func record(_ suite: String, _ name: String, value: Double, unit: String, baseline: String? = nil,
            baselineValue: Double? = nil, ratio: Double? = nil) {
    BenchRecord.record(suite: "CallCost " + suite, case: name, value: value, unit: unit, baseline: baseline,
                       baselineValue: baselineValue, ratio: ratio)
}

/// A Swift/C pair of medians, printed and recorded with its ratio.
func reportPair(_ suite: String, _ name: String, swift: [Double], c: [Double], unit: String = "ns/op") {
    let s = median(swift), k = median(c)
    print("    \(name): Swift \(fmt(s)) \(unit), C \(fmt(k)) \(unit), Swift/C \(fmt(s / k, 3))x (medians of \(swift.count))")
    record(suite, name, value: s, unit: unit, baseline: "C floor (same ioctls)", baselineValue: k, ratio: s / k)
}

func sizeName(_ size: PageSize) -> String {
    size == .size1G ? "1 GiB" : size == .size2M ? "2 MiB" : "4 KiB"
}

/// Where the kernel cases map: 1 GiB, inside the mock IOMMU's aperture (16 MiB to 2 GiB).
let iovaBase: UInt64 = 1 << 30

func ioasWith(_ ctx: borrowing IOMMUFDContext, domain: Bool) throws(IOMMUFDError) -> IOASID {
    let ioas = try ctx.allocateIOAS()
    if domain { _ = try ctx.addMockDevice(to: PageTableID(ioas)) }
    return ioas
}

func check(_ e: CInt, _ what: String) { if e != 0 { fail("C \(what): errno \(e)") } }

// MARK: Pages

/// `count` areas of `size` (hugetlb-backed for 2 MiB and 1 GiB), mapped one ioctl each then
/// unmapped, and the whole buffer mapped as one range then unmapped; Swift and C take turns
/// call by call (which goes first alternates), so a slow moment of the machine falls on both.
/// Swift maps from 1 GiB, C from 1.5 GiB; a 1 GiB area has only one aligned place in the mock
/// IOMMU's aperture, so there each side maps and unmaps before the other. Medians of the
/// single calls over `rounds` rounds, and of 8 range calls a round.
func pageCosts(_ ctx: borrowing IOMMUFDContext, domain: Bool, size: PageSize, count: Int, rounds: Int) throws(IOMMUFDError) {
    let label = domain ? "mock domain" : "no domain"
    let buffer: DMABuffer
    do {
        buffer = try DMABuffer(length: Int(size.bytes) * count, hugePages: size == .size4K ? nil : size, populate: true)
    } catch {
        print("  \(sizeName(size)) pages, \(label): not available here: \(error)")
        record("pages", "\(sizeName(size)) pages available, \(label)", value: 0, unit: "available")
        return
    }
    record("pages", "\(sizeName(size)) pages available, \(label)", value: 1, unit: "available")
    let ioas = try ioasWith(ctx, domain: domain)
    let fd = ctx.descriptor
    let host = buffer.address.rawValue, total = UInt64(count) * size.bytes
    let apart = size == .size1G
    let swiftBase = iovaBase, cBase = apart ? iovaBase : iovaBase + (512 << 20)
    precondition(apart || total <= 512 << 20, "areas past the aperture")
    let all = buffer.range
    var swiftMap: [Double] = [], swiftUnmap: [Double] = [], cMap: [Double] = [], cUnmap: [Double] = []
    var swiftRangeMap: [Double] = [], swiftRangeUnmap: [Double] = [], cRangeMap: [Double] = [], cRangeUnmap: [Double] = []
    var failure: IOMMUFDError?
    func swift(_ map: Bool, _ k: UInt64) -> Double {
        let t = now()
        do throws(IOMMUFDError) {
            if map {
                let h = try! HostRange(base: HostAddress(host + k * size.bytes), length: size.bytes)
                _ = try ctx.map(h, into: ioas, at: IOVA(swiftBase + k * size.bytes))
            } else {
                _ = try ctx.unmap(iovaRange(swiftBase + k * size.bytes, size.bytes), from: ioas)
            }
        } catch { failure = error }
        return Double(now() - t)
    }
    func c(_ map: Bool, _ k: UInt64) -> Double {
        let t = now()
        check(map ? cc_map(fd, ioas.rawValue, host + k * size.bytes, size.bytes, cBase + k * size.bytes, readWrite)
                  : cc_unmap(fd, ioas.rawValue, cBase + k * size.bytes, size.bytes), map ? "map" : "unmap")
        return Double(now() - t)
    }
    func swiftRange(_ map: Bool) -> Double {
        let t = now()
        do throws(IOMMUFDError) {
            if map { _ = try ctx.map(all, into: ioas, at: IOVA(swiftBase)) } else { _ = try ctx.unmap(iovaRange(swiftBase, total), from: ioas) }
        } catch { failure = error }
        return Double(now() - t)
    }
    func cRange(_ map: Bool) -> Double {
        let t = now()
        check(map ? cc_map(fd, ioas.rawValue, host, total, cBase, readWrite) : cc_unmap(fd, ioas.rawValue, cBase, total),
              map ? "range map" : "range unmap")
        return Double(now() - t)
    }
    for round in -1..<rounds {  // round -1 warms up
        let keep = round >= 0
        if apart {
            // One area at one IOVA: each side maps and unmaps in turn, which first alternates.
            for swiftFirst in round % 2 == 0 ? [true, false] : [false, true] {
                if swiftFirst {
                    let m = swift(true, 0), u = swift(false, 0), rm = swiftRange(true), ru = swiftRange(false)
                    if keep { swiftMap.append(m); swiftUnmap.append(u); swiftRangeMap.append(rm); swiftRangeUnmap.append(ru) }
                } else {
                    let m = c(true, 0), u = c(false, 0), rm = cRange(true), ru = cRange(false)
                    if keep { cMap.append(m); cUnmap.append(u); cRangeMap.append(rm); cRangeUnmap.append(ru) }
                }
                if let failure { throw failure }
            }
            continue
        }
        for map in [true, false] {
            for k in 0..<UInt64(count) {
                let swiftFirst = (Int(k) + round) % 2 == 0
                let first = swiftFirst ? swift(map, k) : c(map, k)
                let second = swiftFirst ? c(map, k) : swift(map, k)
                if let failure { throw failure }
                guard keep else { continue }
                let (s, cc) = swiftFirst ? (first, second) : (second, first)
                if map { swiftMap.append(s); cMap.append(cc) } else { swiftUnmap.append(s); cUnmap.append(cc) }
            }
        }
        // One range call is one sample: 8 map/unmap pairs a round.
        for rep in 0..<8 {
            for map in [true, false] {
                let swiftFirst = (round + rep) % 2 == 0
                let first = swiftFirst ? swiftRange(map) : cRange(map)
                let second = swiftFirst ? cRange(map) : swiftRange(map)
                if let failure { throw failure }
                guard keep else { continue }
                let (s, cc) = swiftFirst ? (first, second) : (second, first)
                if map { swiftRangeMap.append(s); cRangeMap.append(cc) } else { swiftRangeUnmap.append(s); cRangeUnmap.append(cc) }
            }
        }
    }
    let name = "\(sizeName(size)), \(label)"
    let areas = count == 1 ? "1 area" : "\(count) areas"
    reportPair("pages", "map \(name), singly (\(areas))", swift: swiftMap, c: cMap, unit: "ns/call")
    reportPair("pages", "unmap \(name), singly (\(areas))", swift: swiftUnmap, c: cUnmap, unit: "ns/call")
    reportPair("pages", "map \(name), one range of \(areas)", swift: swiftRangeMap, c: cRangeMap, unit: "ns/call")
    reportPair("pages", "unmap \(name), one range of \(areas)", swift: swiftRangeUnmap, c: cRangeUnmap, unit: "ns/call")
}

// MARK: Churn

/// A small deterministic generator (xorshift64*), so Swift and C get the same operations.
struct Xorshift {
    var state: UInt64
    mutating func next() -> UInt64 {
        state ^= state >> 12; state ^= state << 25; state ^= state >> 27
        return state &* 2_685_821_657_736_338_717
    }
}

/// Random map/unmap churn over `slots` one-page slots: batches of `batch` random slots, each
/// mapped if free and unmapped if mapped, the same sequence through Swift (IOVAs from 1 GiB)
/// and through C (from 1.25 GiB) in turn, which goes first alternating. Per-op medians of batches.
func churnCosts(_ ctx: borrowing IOMMUFDContext, domain: Bool, batches: [Int], operations: Int, slots: Int) throws(IOMMUFDError) {
    let label = domain ? "mock domain" : "no domain"
    let ioas = try ioasWith(ctx, domain: domain)
    let fd = ctx.descriptor
    let buffer = try DMABuffer(length: slots * Int(page), populate: true)
    let host = buffer.address.rawValue
    let swiftBase = iovaBase, cBase = iovaBase + (256 << 20)
    var rng = Xorshift(state: 0x9E37_79B9_7F4A_7C15)
    var mapped = [Bool](repeating: false, count: slots)
    print("kernel, \(label): random map/unmap churn over \(slots) one-page slots, \(operations) operations per batch size")
    for batch in batches {
        var swiftNs: [Double] = [], cNs: [Double] = []
        var offsets = [UInt64](repeating: 0, count: batch), maps = [UInt8](repeating: 0, count: batch)
        var cIOVAs = [UInt64](repeating: 0, count: batch), userVAs = [UInt64](repeating: 0, count: batch)
        var failure: IOMMUFDError?
        for b in -1..<max(1, operations / batch) {  // b == -1 warms up
            for k in 0..<batch {
                let slot = Int(rng.next() % UInt64(slots))
                offsets[k] = UInt64(slot) * page
                maps[k] = mapped[slot] ? 0 : 1
                mapped[slot].toggle()
                cIOVAs[k] = cBase + offsets[k]
                userVAs[k] = host + offsets[k]
            }
            func swift() -> Double {
                let t = now()
                do throws(IOMMUFDError) {
                    for k in 0..<batch {
                        if maps[k] == 1 {
                            let h = try! HostRange(base: HostAddress(userVAs[k]), length: page)
                            _ = try ctx.map(h, into: ioas, at: IOVA(swiftBase + offsets[k]))
                        } else {
                            _ = try ctx.unmap(iovaRange(swiftBase + offsets[k], page), from: ioas)
                        }
                    }
                } catch { failure = error }
                return Double(now() - t) / Double(batch)
            }
            func c() -> Double {
                let t = now()
                check(cc_churn(fd, ioas.rawValue, cIOVAs, userVAs, maps, UInt32(batch), page, readWrite), "churn")
                return Double(now() - t) / Double(batch)
            }
            let (s, k): (Double, Double)
            if b % 2 == 0 { s = swift(); k = c() } else { k = c(); s = swift() }
            if let failure { throw failure }
            if b >= 0 { swiftNs.append(s); cNs.append(k) }
        }
        reportPair("churn", "churn, batches of \(batch), \(label)", swift: swiftNs, c: cNs)
    }
    _ = try ctx.unmapAll(from: ioas)
}

// MARK: Copy

/// `count` areas of `size` (4 KiB pages) mapped into a source IOAS; a second IOAS gets each by
/// `IOMMU_IOAS_COPY` and a third by a second `IOMMU_IOAS_MAP`, through Swift (at the source's
/// IOVAs) and through C (512 MiB above): first every copy, then every map, Swift and C in turn
/// call by call, which goes first alternating (as the page cases), each call timed.
func copyCosts(_ ctx: borrowing IOMMUFDContext, domain: Bool, size: PageSize, count: Int) throws(IOMMUFDError) {
    let label = domain ? "mock domain" : "no domain"
    let fd = ctx.descriptor
    let buffer = try DMABuffer(length: Int(size.bytes) * count, populate: true)
    let host = buffer.address.rawValue
    let source = try ioasWith(ctx, domain: domain), copies = try ioasWith(ctx, domain: domain), maps = try ioasWith(ctx, domain: domain)
    let cOffset: UInt64 = 512 << 20
    var swiftCopy: [Double] = [], cCopy: [Double] = [], swiftMap: [Double] = [], cMap: [Double] = []
    var failure: IOMMUFDError?
    func area(_ k: UInt64) -> (HostRange, IOVARange) {
        (try! HostRange(base: HostAddress(host + k * size.bytes), length: size.bytes), iovaRange(iovaBase + k * size.bytes, size.bytes))
    }
    for k in 0..<UInt64(count) { _ = try ctx.map(area(k).0, into: source, at: area(k).1.first) }
    for copy in [true, false] {
        for k in 0..<UInt64(count) {
            let (h, r) = area(k)
            func swift() -> Double {
                let t = now()
                do throws(IOMMUFDError) {
                    if copy { _ = try ctx.copy(r, from: source, to: copies, at: r.first) } else { _ = try ctx.map(h, into: maps, at: r.first) }
                } catch { failure = error }
                return Double(now() - t)
            }
            func c() -> Double {
                let t = now()
                if copy {
                    check(cc_copy(fd, copies.rawValue, source.rawValue, r.first.rawValue, size.bytes, r.first.rawValue + cOffset, readWrite), "copy")
                } else {
                    check(cc_map(fd, maps.rawValue, h.first.rawValue, size.bytes, r.first.rawValue + cOffset, readWrite), "map")
                }
                return Double(now() - t)
            }
            let swiftFirst = k % 2 == 0
            let first = swiftFirst ? swift() : c()
            let second = swiftFirst ? c() : swift()
            if let failure { throw failure }
            let (sNs, cNs) = swiftFirst ? (first, second) : (second, first)
            if copy { swiftCopy.append(sNs); cCopy.append(cNs) } else { swiftMap.append(sNs); cMap.append(cNs) }
        }
    }
    for id in [source, copies, maps] { _ = try ctx.unmapAll(from: id) }
    let name = "\(sizeName(size)) areas, \(label)"
    reportPair("copy", "second IOAS by IOAS_COPY, \(name)", swift: swiftCopy, c: cCopy, unit: "ns/call")
    reportPair("copy", "second IOAS by IOAS_MAP, \(name)", swift: swiftMap, c: cMap, unit: "ns/call")
    let copyMedian = median(cCopy), mapMedian = median(cMap)
    print("    IOAS_COPY / second IOAS_MAP (C), \(name): \(fmt(copyMedian / mapMedian, 3))x")
    record("copy", "IOAS_COPY against a second IOAS_MAP, \(name)", value: copyMedian, unit: "ns/call",
           baseline: "second IOAS_MAP (C)", baselineValue: mapMedian, ratio: copyMedian / mapMedian)
}

/// The kernel suite beyond one 4 KiB page: pages of three sizes, churn, copy; no domain and
/// a mock domain. `scale` 1 is the full run; the quick run passes a smaller one.
func suite(scale: Int) throws(IOMMUFDError) {
    let ctx = try IOMMUFDContext()
    guard ctx.hasMockIOMMU else { fail("this kernel has no mock IOMMU (CONFIG_IOMMUFD_TEST)") }
    let rounds = max(3, 20 / scale)
    for domain in [false, true] {
        print("kernel, \(domain ? "mock-IOMMU domain" : "no domain"): map/unmap, Swift and C in turn call by call, \(rounds) rounds "
              + "(1 GiB: \(domain ? max(3, rounds / 2) : 5 * rounds))")
        try pageCosts(ctx, domain: domain, size: .size4K, count: max(16, 256 / scale), rounds: rounds)
        try pageCosts(ctx, domain: domain, size: .size2M, count: max(2, 16 / scale), rounds: rounds)
        // A 1 GiB area is one sample a round: more rounds where they are cheap (no domain).
        try pageCosts(ctx, domain: domain, size: .size1G, count: 1, rounds: domain ? max(3, rounds / 2) : 5 * rounds)
        try churnCosts(ctx, domain: domain, batches: [1, 8, 64, 256], operations: max(512, 8192 / scale), slots: 512)
        print("kernel, \(domain ? "mock-IOMMU domain" : "no domain"): a second IOAS by IOAS_COPY and by IOAS_MAP")
        try copyCosts(ctx, domain: domain, size: .size4K, count: max(32, 256 / scale))
        try copyCosts(ctx, domain: domain, size: .size2M, count: max(4, 32 / scale))
    }
}
