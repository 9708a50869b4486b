#if canImport(Glibc)
import Glibc
#endif
import IOMMUFD
import IOMMUFDModel
import TestSupport
import Testing

/// Random map/unmap/copy/unmapAll sequences through the typed core on the model, against a
/// plain reference: a sorted array of areas per IOAS. Every result, every errno and the state
/// after every step must match.
@Suite struct PropertyTests {
    struct RefArea: Equatable {
        var first: UInt64
        var last: UInt64
        var host: UInt64
        var writable: Bool
    }

    /// The reference: areas sorted by IOVA, whole-area unmap, no splitting.
    struct Reference {
        var spaces: [IOASID: [RefArea]] = [:]

        func overlaps(_ id: IOASID, _ first: UInt64, _ last: UInt64) -> Bool {
            spaces[id, default: []].contains { $0.first <= last && first <= $0.last }
        }

        mutating func insert(_ id: IOASID, _ a: RefArea) {
            spaces[id, default: []].append(a)
            spaces[id]!.sort { $0.first < $1.first }
        }

        mutating func unmap(_ id: IOASID, _ first: UInt64, _ last: UInt64) -> Result<UInt64, Errno> {
            var bytes: UInt64 = 0
            var kept: [RefArea] = []
            var failed = false
            for a in spaces[id, default: []] {
                let intersects = a.first <= last && first <= a.last
                if failed || !intersects { kept.append(a); continue }
                if a.first < first || a.last > last { failed = true; kept.append(a); continue }
                bytes += a.last - a.first + 1
            }
            spaces[id] = kept
            if failed || (bytes == 0 && !(first == 0 && last == .max)) { return .failure(.noSuchFileOrDirectory) }
            return .success(bytes)
        }

        /// The slices of contiguous areas covering `[first, last]`, or nil (ENOENT).
        func slices(_ id: IOASID, _ first: UInt64, _ last: UInt64) -> [RefArea]? {
            var cursor = first
            var out: [RefArea] = []
            for a in spaces[id, default: []] where a.last >= cursor {
                guard a.first <= cursor else { return nil }
                let end = min(a.last, last)
                out.append(RefArea(first: cursor, last: end, host: a.host + (cursor - a.first), writable: a.writable))
                if end == last { return out }
                cursor = end + 1
            }
            return nil
        }
    }

    static func outcome<T>(_ body: () throws -> T) -> Result<T, Errno> {
        do { return .success(try body()) } catch let e as IOMMUFDError {
            return .failure(e.errno ?? Errno(rawValue: -1))
        } catch { return .failure(Errno(rawValue: -2)) }
    }

    @Test(arguments: Array(UInt64(1)...UInt64(20)))
    func randomSequencesMatchTheReference(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let model = IOMMUFDModel(.init(tracing: false))
        let fd = try IOMMUFDContext(kernel: model)
        let ids = [try fd.allocateIOAS(), try fd.allocateIOAS()]
        var ref = Reference()
        let window: UInt64 = 0x100_0000
        func r(_ n: UInt64) -> UInt64 { rng.next() % n }

        for step in 0..<300 {
            let id = ids[Int(r(2))]
            let op = r(10)
            switch op {
            case 0, 1, 2:  // fixed map
                let pages = 1 + r(8), iova = window + r(64) * page, h = fakeHost + r(64) * page
                let writable = r(2) == 0
                let got = Self.outcome { try fd.map(host(h, pages * page), into: id, at: IOVA(iova), access: writable ? [.readable, .writeable] : .readable) }
                let last = iova + pages * page - 1
                let want: Result<IOVA, Errno>
                if ref.overlaps(id, iova, last) { want = .failure(.fileExists) } else {
                    ref.insert(id, RefArea(first: iova, last: last, host: h, writable: writable))
                    want = .success(IOVA(iova))
                }
                #expect(got == want, "seed \(seed) step \(step) fixed map")
            case 3:  // automatic map: any free, aligned, nonzero IOVA is right
                let pages = 1 + r(8), h = fakeHost + r(64) * page
                let got = Self.outcome { try fd.map(host(h, pages * page), into: id) }
                guard case .success(let iova) = got else {
                    Issue.record("seed \(seed) step \(step): automatic map failed: \(got)"); continue
                }
                let last = iova.rawValue + pages * page - 1
                #expect(iova.rawValue != 0 && iova.isAligned(to: .system) && !ref.overlaps(id, iova.rawValue, last))
                ref.insert(id, RefArea(first: iova.rawValue, last: last, host: h, writable: true))
            case 4, 5, 6:
                let first = window + r(72) * page, pages = 1 + r(16)
                let got = Self.outcome { try fd.unmap(iovas(first, pages * page), from: id) }
                #expect(got == ref.unmap(id, first, first + pages * page - 1), "seed \(seed) step \(step) unmap")
            case 7:
                let got = Self.outcome { try fd.unmapAll(from: id) }
                #expect(got == ref.unmap(id, 0, .max), "seed \(seed) step \(step) unmapAll")
            default:  // copy to the other IOAS at a fixed IOVA
                let dst = ids[Int(r(2))]
                let first = window + r(64) * page, pages = 1 + r(6), at = window + r(64) * page
                let writeable = r(2) == 0
                let access: MapAccess = writeable ? [.readable, .writeable] : .readable
                let got = Self.outcome { try fd.copy(iovas(first, pages * page), from: id, to: dst, at: IOVA(at), access: access) }
                let want: Result<IOVA, Errno>
                if let slices = ref.slices(id, first, first + pages * page - 1) {
                    if ref.overlaps(dst, at, at + pages * page - 1) {
                        want = .failure(.fileExists)
                    } else if writeable && slices.contains(where: { !$0.writable }) {
                        want = .failure(Errno(rawValue: EPERM))
                    } else {
                        var cursor = at
                        for s in slices {
                            let length = s.last - s.first + 1
                            ref.insert(dst, RefArea(first: cursor, last: cursor + length - 1, host: s.host, writable: s.writable))
                            cursor += length
                        }
                        want = .success(IOVA(at))
                    }
                } else {
                    want = .failure(.noSuchFileOrDirectory)
                }
                #expect(got == want, "seed \(seed) step \(step) copy")
            }
            for i in ids {
                let areas = model.areas(of: i, in: fd.descriptor) ?? []
                let mine = areas.map { a -> RefArea in
                    guard case .user(let h) = a.source else { return RefArea(first: 0, last: 0, host: 0, writable: false) }
                    return RefArea(first: a.iova.first.rawValue, last: a.iova.last.rawValue, host: h.rawValue, writable: a.writable)
                }
                if mine != ref.spaces[i, default: []] {
                    Issue.record("seed \(seed) step \(step): state of \(i) differs\nmodel: \(areas)\nref:   \(ref.spaces[i, default: []])")
                    return
                }
            }
        }
    }
}
