#if canImport(Glibc)
import Glibc
#endif
import IOMMUFD
import IOMMUFDModel
import TestSupport
import Testing

/// The model is honest: the same seeded operations on the real kernel and on ``IOMMUFDModel``
/// give the same results and the same errnos, step by step.
@Suite(.serialized, .enabled(if: KernelTier.enabled, "needs /dev/iommu"))
struct ModelAgreementKernelTests {
    /// The VM's kernel has `CONFIG_IOMMUFD_TEST`; so does the model here.
    static func model() -> IOMMUFDModel { IOMMUFDModel(.init(selftest: true)) }

    @Test(arguments: Array(UInt64(1)...UInt64(12)))
    func typedOperationsAgree(seed: UInt64) throws {
        let memory = try DMABuffer(length: 64 * page)
        let file = try DMABuffer(memfdLength: 16 * page)
        let maybeMemfd = file.memfd
        let memfd = try #require(maybeMemfd)
        let real = try IOMMUFDContext()
        let modelled = try IOMMUFDContext(kernel: Self.model())
        let a = AgreementDriver.run(real, seed: seed, memory: memory.range, memfd: memfd, steps: 400)
        let b = AgreementDriver.run(modelled, seed: seed, memory: memory.range, memfd: memfd, steps: 400)
        try compare(a, b)
    }

    @Test(arguments: Array(UInt64(100)...UInt64(105)))
    func rawCommandsAgree(seed: UInt64) throws {
        let real = try IOMMUFDContext()
        let modelled = try IOMMUFDContext(kernel: Self.model())
        let a = AgreementDriver.raw(real, seed: seed, steps: 1000)
        let b = AgreementDriver.raw(modelled, seed: seed, steps: 1000)
        try compare(a, b)
    }

    @Test func fixedProbesAgree() throws {
        let real = try IOMMUFDContext()
        let modelled = try IOMMUFDContext(kernel: Self.model())
        try compare(AgreementDriver.probes(real), AgreementDriver.probes(modelled))
    }

    private func compare(_ kernel: [String], _ model: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(kernel.count == model.count, sourceLocation: sourceLocation)
        for (i, (k, m)) in zip(kernel, model).enumerated() where k != m {
            let context = kernel[max(0, i - 3)..<i].joined(separator: "\n")
            Issue.record("step \(i) differs\n  kernel: \(k)\n  model:  \(m)\nbefore:\n\(context)", sourceLocation: sourceLocation)
            return
        }
    }
}

enum AgreementDriver {
    static let window: UInt64 = 0x100_0000
    static var p: UInt64 { UInt64(page) }

    static func describe<T>(_ fd: borrowing IOMMUFDContext, _ body: (borrowing IOMMUFDContext) throws -> T) -> String {
        do { return "\(try body(fd))" } catch { return "error \(error)" }
    }

    /// Random typed calls; each step's outcome as text.
    static func run(_ fd: borrowing IOMMUFDContext, seed: UInt64, memory: HostRange, memfd: CInt, steps: Int) -> [String] {
        var rng = SplitMix64(seed: seed)
        var ioas: [IOASID] = []
        var log: [String] = []
        func pick() -> IOASID { ioas.isEmpty || rng.next() % 16 == 0 ? IOASID(UInt32(rng.next() % 8)) : ioas[Int(rng.next() % UInt64(ioas.count))] }
        func iovaRange() -> IOVARange {
            try! IOVARange(base: IOVA(window + (rng.next() % 64) * p), length: (1 + rng.next() % 12) * p)
        }
        func access() -> MapAccess { [[.readable, .writeable], [.readable], [.writeable]][Int(rng.next() % 3)] }
        func at() -> IOVA? { rng.next() % 3 == 0 ? nil : IOVA(window + (rng.next() % 64) * p) }

        for step in 0..<steps {
            let op = rng.next() % 20
            var line = "\(step) "
            switch op {
            case 0, 1:
                line += "alloc " + describe(fd) { (fd: borrowing IOMMUFDContext) throws -> IOASID in
                    let id = try fd.allocateIOAS()
                    ioas.append(id)
                    return id
                }
            case 2:
                let id = pick()
                line += "destroy \(id) " + describe(fd) { (fd: borrowing IOMMUFDContext) throws in
                    try fd.destroy(id)
                    ioas.removeAll { $0 == id }
                }
            case 3, 4, 5, 6:
                let pages = 1 + rng.next() % 8
                let offset = (rng.next() % (64 - pages)) * p
                let host = try! HostRange(base: memory.first.advanced(by: offset)!, length: pages * p)
                let id = pick(), iova = at(), a = access()
                line += "map \(offset) \(pages)p \(id) \(iova.map { "\($0)" } ?? "auto") \(a) "
                    + describe(fd) { fd in try fd.map(host, into: id, at: iova, access: a) }
            case 7:
                let pages = 1 + rng.next() % 8
                let offset = (rng.next() % 12) * p
                let id = pick(), iova = at(), a = access()
                line += "mapFile \(offset) \(pages)p \(id) \(iova.map { "\($0)" } ?? "auto") \(a) "
                    + describe(fd) { fd in try fd.mapFile(memfd, offset: offset, length: pages * p, into: id, at: iova, access: a) }
            case 8, 9, 10:
                let r = iovaRange(), id = pick()
                line += "unmap \(r) \(id) " + describe(fd) { fd in try fd.unmap(r, from: id) }
            case 11:
                let id = pick()
                line += "unmapAll \(id) " + describe(fd) { fd in try fd.unmapAll(from: id) }
            case 12, 13:
                let r = iovaRange(), src = pick(), dst = pick(), iova = at(), a = access()
                line += "copy \(r) \(src)->\(dst) \(iova.map { "\($0)" } ?? "auto") \(a) "
                    + describe(fd) { fd in try fd.copy(r, from: src, to: dst, at: iova, access: a) }
            case 14:
                let id = pick()
                line += "ranges \(id) " + describe(fd) { fd in try fd.iovaRanges(of: id) }
            case 15:
                let id = pick()
                let n = Int(rng.next() % 3)
                let ranges = (0..<n).map { i in
                    try! IOVARange(base: IOVA(window * UInt64(1 + 2 * i) + (rng.next() % 32) * p), length: (1 + rng.next() % 64) * p)
                }
                line += "allow \(ranges) \(id) " + describe(fd) { fd in try fd.allowIOVAs(ranges, in: id) }
            case 16:
                let id = pick()
                let r = try! IOVARange(base: IOVA(window + (rng.next() % 256) * p), length: (1 + rng.next() % 4) * p)
                line += "reserve \(r) \(id) " + describe(fd) { fd in try fd.mockAddReserved(r, in: id) }
            case 17:
                let id = pick()
                switch rng.next() % 3 {
                case 0: line += "hugeGet \(id) " + describe(fd) { fd in try fd.hugePages(in: id) }
                default:
                    let on = rng.next() % 2 == 0
                    line += "hugeSet \(on) \(id) " + describe(fd) { fd in try fd.setHugePages(on, in: id) }
                }
            case 18:
                switch rng.next() % 4 {
                case 0: line += "changeProcess " + describe(fd) { fd in try fd.changeProcess() }
                case 1: line += "rlimit " + describe(fd) { fd in try fd.rlimitMode() }
                case 2:
                    let mode = RLimitMode(rawValue: rng.next() % 3)
                    line += "setRlimit \(mode) " + describe(fd) { fd in try fd.setRLimitMode(mode) }
                default: line += "noiommuPA " + describe(fd) { fd in try fd.noIOMMUPhysicalAddress(of: IOVA(window), maximumLength: p, in: pick()) }
                }
            default:
                switch rng.next() % 3 {
                case 0: line += "vfioGet " + describe(fd) { fd in try fd.vfioCompatibilityIOAS() }
                case 1:
                    let id = pick()
                    line += "vfioSet \(id) " + describe(fd) { fd in try fd.setVFIOCompatibilityIOAS(id) }
                default: line += "vfioClear " + describe(fd) { fd in try fd.setVFIOCompatibilityIOAS(nil) }
                }
            }
            log.append(line)
        }
        return log
    }

    /// Random raw commands: a size header, then 32-bit words from a small set of interesting
    /// values; each step's result and the bytes the call left in the argument.
    static func raw(_ fd: borrowing IOMMUFDContext, seed: UInt64, steps: Int) -> [String] {
        var rng = SplitMix64(seed: seed)
        let requests: [IoctlRequest] = [.destroy, .ioasAlloc, .ioasAlloc, .ioasAllowIOVAs, .ioasCopy, .ioasIOVARanges, .ioasMap,
                                        .ioasMap, .ioasUnmap, .ioasUnmap, .option, .vfioIOAS, .ioasChangeProcess, .ioasMapFile]
        let words: [UInt32] = [0, 0, 0, 1, 1, 2, 3, 4, 6, 7, 0x1000, 0x10_0000, 0xffff_ffff]
        let sizes: [UInt32] = [0, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 72]
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 80, alignment: 16)
        defer { buffer.deallocate() }
        var log: [String] = []
        for step in 0..<steps {
            let request = requests[Int(rng.next() % UInt64(requests.count))]
            let size = sizes[Int(rng.next() % UInt64(sizes.count))]
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            let filled = 1 + Int(rng.next() % 18)
            for i in 1..<filled { buffer.storeBytes(of: words[Int(rng.next() % UInt64(words.count))], toByteOffset: 4 * i, as: UInt32.self) }
            buffer.storeBytes(of: size, toByteOffset: 0, as: UInt32.self)
            let before = Array(buffer)
            let result = fd.kernel.ioctl(fd.descriptor, request, buffer.baseAddress)
            let after = Array(buffer)
            let changed = zip(before, after).enumerated().filter { $0.element.0 != $0.element.1 }.map { "\($0.offset):\($0.element.1)" }
            log.append("\(step) \(request) size \(size) in \(before.prefix(72).map { String($0, radix: 16) }.joined(separator: ",")) -> \(result) out \(changed)")
        }
        return log
    }

    /// Fixed probes: null arguments, table holes, numbers past the table, VFIO compat calls.
    static func probes(_ fd: borrowing IOMMUFDContext) -> [String] {
        var log: [String] = []
        var header = [UInt32](repeating: 0, count: 32)
        for request in IoctlRequest.iommufdRequests {
            log.append("\(request) nil -> \(fd.kernel.ioctl(fd.descriptor, request, nil))")
            header[0] = 0
            log.append("\(request) size 0 -> \(header.withUnsafeMutableBytes { fd.kernel.ioctl(fd.descriptor, request, $0.baseAddress) })")
        }
        for nr: UInt in [0x96, 0x9f, 0xa1, 0xc0, 0x7f] {
            let request = IoctlRequest(rawValue: (0x3b << 8) | nr)
            header[0] = 16
            log.append("\(request) -> \(header.withUnsafeMutableBytes { fd.kernel.ioctl(fd.descriptor, request, $0.baseAddress) })")
        }
        // A known number with direction bits set is a different request.
        let sized = IoctlRequest(rawValue: IoctlRequest.ioasMap.rawValue | (3 << 30) | (40 << 16))
        header[0] = 40
        log.append("map with size bits -> \(header.withUnsafeMutableBytes { fd.kernel.ioctl(fd.descriptor, sized, $0.baseAddress) })")
        log.append("VFIO_GET_API_VERSION -> \(fd.kernel.ioctl(fd.descriptor, .vfioGetAPIVersion, nil))")
        for ext: UInt in [1, 3, 9, 2, 7] {
            log.append("VFIO_CHECK_EXTENSION \(ext) -> \(fd.kernel.ioctl(fd.descriptor, .vfioCheckExtension, UnsafeMutableRawPointer(bitPattern: ext)))")
        }
        return log
    }
}
