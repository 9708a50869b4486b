// Request-mode churn through the engine against a one-ioctl-per-change shadow (what a VMM
// keeps today: a dictionary of its mappings and one IOAS ioctl per guest request), on the
// same iommufd (the model on the host, the kernel in the VM), in the same run.
import BenchRecord
import IOMMUFD
import IOMMUMirror

/// A seeded stream of virtio-iommu requests over `slots` slots of 16 pages.
struct ChurnStream {
    enum Pattern: String { case dmaAPI = "DMA-API (maps, then one unmap per batch)", random = "random" }
    var changes: [MirrorChange] = []

    /// DMA API: `batch` maps of 1-16 pages at ascending IOVA, then one unmap request covering
    /// them. Random: map, unmap or re-map (a duplicate, elided) a random slot, by what is there.
    init(_ pattern: Pattern, batch: Int, count: Int, slots: Int, seed: UInt64) {
        var rng = seed
        func next() -> UInt64 {
            rng &+= 0x9E37_79B9_7F4A_7C15
            var z = rng
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        let slotBytes: UInt64 = 16 * page
        switch pattern {
        case .dmaAPI:
            var slot = 0
            while changes.count < count {
                let first = slot
                for _ in 0..<batch {
                    let iova = IOVA(churnBase + UInt64(slot % slots) * slotBytes)
                    let pages = 1 + next() % 16
                    changes.append(.map(iova: iova, length: pages * page, guestPhysical: GuestPhysicalAddress(UInt64(slot % slots) * slotBytes),
                                        permissions: .readWrite))
                    slot += 1
                    if slot % slots == 0 { break }
                }
                let lo = UInt64(first % slots) * slotBytes, hi = UInt64((slot - 1) % slots + 1) * slotBytes
                changes.append(.unmap(iova: IOVA(churnBase + lo), length: hi - lo))
            }
        case .random:
            var mapped = [UInt64?](repeating: nil, count: slots)
            while changes.count < count {
                let s = Int(next() % UInt64(slots))
                let iova = IOVA(churnBase + UInt64(s) * slotBytes)
                if let pages = mapped[s], next() % 4 != 0 {
                    if next() % 5 == 0 {
                        changes.append(.map(iova: iova, length: pages * page, guestPhysical: GuestPhysicalAddress(UInt64(s) * slotBytes),
                                            permissions: .readWrite))
                    } else {
                        changes.append(.unmap(iova: iova, length: pages * page))
                        mapped[s] = nil
                    }
                } else if mapped[s] == nil {
                    let pages = 1 + next() % 16
                    changes.append(.map(iova: iova, length: pages * page, guestPhysical: GuestPhysicalAddress(UInt64(s) * slotBytes),
                                        permissions: .readWrite))
                    mapped[s] = pages
                }
            }
        }
    }
}

let churnBase: UInt64 = 0x1000_0000

/// The baseline: a dictionary of what is mapped and one ioctl per request that changes it.
func shadowBaseline(_ changes: [MirrorChange], context: SharedIOMMUFDContext, ioas: IOASID, host: UInt64) throws -> (seconds: Double, ioctls: Int) {
    var shadow: [UInt64: UInt64] = [:]
    var ioctls = 0
    let t0 = now()
    for c in changes {
        switch c {
        case .map(let iova, let length, let gpa, _):
            if shadow[iova.rawValue] == length { continue }
            _ = try context.iommufd.map(try HostRange(base: HostAddress(host + gpa.rawValue), length: length), into: ioas, at: iova)
            shadow[iova.rawValue] = length
            ioctls += 1
        case .unmap(let iova, let length):
            if shadow[iova.rawValue] == length {
                _ = try context.iommufd.unmap(try IOVARange(base: iova, length: length), from: ioas)
                shadow[iova.rawValue] = nil
                ioctls += 1
                continue
            }
            let range = try IOVARange(base: iova, length: length)
            guard shadow.keys.contains(where: { range.contains(IOVA($0)) }) else { continue }
            _ = try context.iommufd.unmap(range, from: ioas)
            shadow = shadow.filter { !range.contains(IOVA($0.key)) }
            ioctls += 1
        default: break
        }
    }
    return (now() - t0, ioctls)
}

/// The engine on `stream` into a fresh IOAS in batches of `batchSize`: seconds and ioctls.
func engineRun(_ stream: ChurnStream, batchSize: Int, context: SharedIOMMUFDContext, behaviour: KernelBehaviour, host: UInt64,
               slots: Int, ioas: IOASID) throws -> (seconds: Double, ioctls: Int) {
    var ram = GuestRAM()
    try ram.add(MirrorMemoryRegion(guestPhysical: GuestPhysicalAddress(0), length: UInt64(slots) * 16 * page, host: HostAddress(host)))
    let target = try IOASTarget(name: "ioas", context: context, ioas: ioas, behaviour: behaviour)
    var engine = try MirrorEngine(mode: .requests, memory: ram, targets: [target],
                                  configuration: .init(space: try IOVARange(first: IOVA(0), last: IOVA((1 << 40) - 1)), shadowCapacity: slots + 16))
    var batch = MirrorBatch(capacity: batchSize)
    var result = MirrorBatchResult(capacity: batchSize)
    let t0 = now()
    var i = 0
    while i < stream.changes.count {
        batch.removeAll()
        for c in stream.changes[i..<min(i + batchSize, stream.changes.count)] { batch.append(c) }
        engine.apply(batch, into: &result)
        i += batchSize
    }
    let dt = now() - t0
    precondition(engine.checkInvariants().isEmpty)
    return (dt, engine.metrics.targets[0].calls)
}

/// Both against each other for each pattern and batch size, alternating `rounds` times on
/// fresh IOAS from `make` (so a noisy stretch hits both); the medians and their ratio.
func churn(_ label: String, context: SharedIOMMUFDContext, host: UInt64, slots: Int, count: Int, rounds: Int = 5,
           make: () throws -> IOASID) throws {
    let behaviour = try KernelBehaviour.probe(context.iommufd)
    for pattern in [ChurnStream.Pattern.dmaAPI, .random] {
        for batchSize in [1, 8, 32, 256] {
            let stream = ChurnStream(pattern, batch: pattern == .dmaAPI ? batchSize : 32, count: count, slots: slots, seed: 42)
            var engineTimes: [Double] = [], baseTimes: [Double] = [], ratios: [Double] = []
            var calls = 0, baseCalls = 0
            for _ in 0..<rounds {
                let a = try make()
                let base = try shadowBaseline(stream.changes, context: context, ioas: a, host: host)
                _ = try context.iommufd.unmapAll(from: a)
                let b = try make()
                let mine = try engineRun(stream, batchSize: batchSize, context: context, behaviour: behaviour, host: host, slots: slots, ioas: b)
                _ = try context.iommufd.unmapAll(from: b)
                engineTimes.append(mine.seconds)
                baseTimes.append(base.seconds)
                ratios.append(mine.seconds / base.seconds)
                (calls, baseCalls) = (mine.ioctls, base.ioctls)
            }
            func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
            let n = Double(stream.changes.count)
            let perChange = median(engineTimes) / n * 1e9, basePer = median(baseTimes) / n * 1e9
            let name = pattern == .dmaAPI ? "\(pattern.rawValue), \(batchSize) maps per unmap" : "\(pattern.rawValue), batches of \(batchSize)"
            print("\(label) churn, \(name): \(stream.changes.count) changes x \(rounds) rounds; engine \(Int(perChange)) ns/change, \(calls) ioctls"
                  + "; one-ioctl-per-change shadow \(Int(basePer)) ns/change, \(baseCalls) ioctls"
                  + String(format: " (median of the rounds' ratios %.2fx)", median(ratios)))
            record(suite: "churn", case: "\(label): \(name)", value: perChange, unit: "ns/change",
                   baseline: "one-ioctl-per-change shadow", baselineValue: basePer)
            record(suite: "churn", case: "\(label): \(name), ioctls", value: Double(calls), unit: "ioctls",
                   baseline: "one-ioctl-per-change shadow", baselineValue: Double(baseCalls))
        }
    }
}
