import CIOMMUFD
import IOMMUFD
import QEMUDevices
import Testing

/// The pre-call rule against the real kernel: for the same arguments, the typed call and a raw
/// ioctl built by hand give the same answer (success, or the same errno), with no domain, with
/// the kernel's mock IOMMU attached (IOVA alignment 2048) and with the edu device behind VT-d
/// (alignment 4096). A check made before the syscall that refused what the kernel accepts, or
/// with another errno, shows up as a disagreement.
@Suite(.enabled(if: KernelTier.enabled, "needs /dev/iommu"))
struct PreCallRuleKernelTests {
    /// The mock aperture starts at 16 MiB; VT-d and an IOAS without a domain take it too.
    static let base: UInt64 = 1 << 24

    /// One set of arguments, issued both ways on a fresh IOAS with `page` bytes mapped at `base`.
    struct Case: Sendable {
        var name: String
        var typed: @Sendable (borrowing IOMMUFDContext, IOASID, UInt64) throws -> Void
        var raw: @Sendable (CInt, IOASID, UInt64) -> Errno?
    }

    static func map(_ fd: CInt, _ ioas: IOASID, va: UInt64, length: UInt64, iova: UInt64, flags: UInt32) -> Errno? {
        var cmd = cio_iommu_ioas_map()
        cmd.size = UInt32(MemoryLayout<cio_iommu_ioas_map>.size)
        cmd.flags = flags | CIO_IOMMU_IOAS_MAP_FIXED_IOVA
        cmd.ioas_id = ioas.rawValue
        cmd.user_va = va
        cmd.length = length
        cmd.iova = iova
        return failure(withUnsafeMutableBytes(of: &cmd) { LinuxKernel().ioctl(fd, .ioasMap, $0.baseAddress) })
    }

    static func unmap(_ fd: CInt, _ ioas: IOASID, iova: UInt64, length: UInt64) -> Errno? {
        var cmd = cio_iommu_ioas_unmap()
        cmd.size = UInt32(MemoryLayout<cio_iommu_ioas_unmap>.size)
        cmd.ioas_id = ioas.rawValue
        cmd.iova = iova
        cmd.length = length
        return failure(withUnsafeMutableBytes(of: &cmd) { LinuxKernel().ioctl(fd, .ioasUnmap, $0.baseAddress) })
    }

    static func copy(_ fd: CInt, _ ioas: IOASID, from: UInt64, length: UInt64, to: UInt64, flags: UInt32) -> Errno? {
        var cmd = cio_iommu_ioas_copy()
        cmd.size = UInt32(MemoryLayout<cio_iommu_ioas_copy>.size)
        cmd.flags = flags | CIO_IOMMU_IOAS_MAP_FIXED_IOVA
        cmd.dst_ioas_id = ioas.rawValue
        cmd.src_ioas_id = ioas.rawValue
        cmd.src_iova = from
        cmd.length = length
        cmd.dst_iova = to
        return failure(withUnsafeMutableBytes(of: &cmd) { LinuxKernel().ioctl(fd, .ioasCopy, $0.baseAddress) })
    }

    static func failure<T>(_ r: Result<T, Errno>) -> Errno? { if case .failure(let e) = r { e } else { nil } }

    static let rw = CIO_IOMMU_IOAS_MAP_READABLE | CIO_IOMMU_IOAS_MAP_WRITEABLE
    static let second = base + (1 << 22)

    static let cases: [Case] = {
        let p = UInt64(page)
        @Sendable func host(_ va: UInt64, _ n: UInt64) -> HostRange { try! HostRange(base: HostAddress(va), length: n) }
        return [
            Case(name: "map a page at an IOVA 8 bytes off",
                 typed: { fd, ioas, va in _ = try fd.map(host(va, p), into: ioas, at: IOVA(second + 8)) },
                 raw: { fd, ioas, va in map(fd, ioas, va: va, length: p, iova: second + 8, flags: rw) }),
            Case(name: "map 2 KiB at a page boundary",
                 typed: { fd, ioas, va in _ = try fd.map(host(va, 2048), into: ioas, at: IOVA(second)) },
                 raw: { fd, ioas, va in map(fd, ioas, va: va, length: 2048, iova: second, flags: rw) }),
            Case(name: "map 2 KiB from the middle of a page, same offset in IOVA",
                 typed: { fd, ioas, va in _ = try fd.map(host(va + 2048, 2048), into: ioas, at: IOVA(second + 2048)) },
                 raw: { fd, ioas, va in map(fd, ioas, va: va + 2048, length: 2048, iova: second + 2048, flags: rw) }),
            Case(name: "map with an access bit the kernel does not know",
                 typed: { fd, ioas, va in _ = try fd.map(host(va, p), into: ioas, at: IOVA(second), access: MapAccess(rawValue: rw | 1 << 8)) },
                 raw: { fd, ioas, va in map(fd, ioas, va: va, length: p, iova: second, flags: rw | 1 << 8) }),
            Case(name: "map with no access",
                 typed: { fd, ioas, va in _ = try fd.map(host(va, p), into: ioas, at: IOVA(second), access: []) },
                 raw: { fd, ioas, va in map(fd, ioas, va: va, length: p, iova: second, flags: 0) }),
            Case(name: "map over the existing area",
                 typed: { fd, ioas, va in _ = try fd.map(host(va, p), into: ioas, at: IOVA(base)) },
                 raw: { fd, ioas, va in map(fd, ioas, va: va, length: p, iova: base, flags: rw) }),
            Case(name: "map at the top of the space",
                 typed: { fd, ioas, va in _ = try fd.map(host(va, 2 * p), into: ioas, at: IOVA(UInt64.max - p + 1)) },
                 raw: { fd, ioas, va in map(fd, ioas, va: va, length: 2 * p, iova: UInt64.max - p + 1, flags: rw) }),
            Case(name: "unmap 3 bytes at an odd IOVA that maps nothing",
                 typed: { fd, ioas, _ in _ = try fd.unmap(try IOVARange(base: IOVA(second + 1), length: 3), from: ioas) },
                 raw: { fd, ioas, _ in unmap(fd, ioas, iova: second + 1, length: 3) }),
            Case(name: "unmap a range cutting into the area",
                 typed: { fd, ioas, _ in _ = try fd.unmap(try IOVARange(base: IOVA(base), length: p / 2), from: ioas) },
                 raw: { fd, ioas, _ in unmap(fd, ioas, iova: base, length: p / 2) }),
            Case(name: "copy half of the area, 8 bytes in",
                 typed: { fd, ioas, _ in _ = try fd.copy(try IOVARange(base: IOVA(base + 8), length: p / 2), from: ioas, to: ioas, at: IOVA(second + 8)) },
                 raw: { fd, ioas, _ in copy(fd, ioas, from: base + 8, length: p / 2, to: second + 8, flags: rw) }),
            Case(name: "copy with no access",
                 typed: { fd, ioas, _ in _ = try fd.copy(try IOVARange(base: IOVA(base), length: p), from: ioas, to: ioas, at: IOVA(second), access: []) },
                 raw: { fd, ioas, _ in copy(fd, ioas, from: base, length: p, to: second, flags: 0) }),
        ]
    }()

    /// Runs every case both ways on `ioas` (emptied and re-seeded around each) and requires
    /// equal answers.
    static func agree(_ fd: borrowing IOMMUFDContext, _ ioas: IOASID, _ buffer: borrowing DMABuffer, context: String) throws {
        let va = buffer.address.rawValue
        var disagreements: [String] = []
        for c in cases {
            func seed() throws {
                _ = try? fd.unmapAll(from: ioas)
                _ = try fd.map(buffer, into: ioas, at: IOVA(base))
            }
            try seed()
            var typed: Errno?
            do { try c.typed(fd, ioas, va) } catch let e as IOMMUFDError {
                typed = e.errno
                #expect(!e.isRefusedBeforeCall, "\(context): \(c.name): refused before the call: \(e)")
            }
            try seed()
            let raw = c.raw(fd.descriptor, ioas, va)
            let show = { (e: Errno?) in e.map { IOMMUFDError.name(of: $0) } ?? "success" }
            print("\(context): \(c.name): \(show(raw))")
            if typed != raw { disagreements.append("\(c.name): typed \(show(typed)), raw \(show(raw))") }
        }
        _ = try? fd.unmapAll(from: ioas)
        #expect(disagreements.isEmpty, "\(context): \(disagreements)")
    }

    @Test func typedCallsAnswerAsRawIoctlsWithNoDomain() throws {
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        let buffer = try DMABuffer(length: 2 * page)
        #expect(try fd.iovaRanges(of: ioas).alignment == 1)
        try Self.agree(fd, ioas, buffer, context: "no domain")
    }

    @Test func typedCallsAnswerAsRawIoctlsWithTheMockDomain() throws {
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        let mock = try fd.addMockDevice(to: PageTableID(ioas))
        let buffer = try DMABuffer(length: 2 * page)
        #expect(try fd.iovaRanges(of: ioas).alignment == 2048)
        try Self.agree(fd, ioas, buffer, context: "mock domain")
        try fd.destroy(IOASID(mock.selftestID))
    }
}

extension EduKernelTests {
    @Suite struct EduPreCallRuleKernelTests {
        @Test func typedCallsAnswerAsRawIoctlsWithTheEduDevice() throws {
            let address = try #require(EduDevice.all().first, "no edu device bound to vfio-pci")
            let fd = try IOMMUFDContext()
            let edu = try EduDevice(address, boundTo: fd)
            let ioas = try fd.allocateIOAS()
            _ = try edu.vfio.attach(to: ioas)
            let buffer = try DMABuffer(length: 2 * page)
            #expect(try fd.iovaRanges(of: ioas).alignment == 4096)
            try PreCallRuleKernelTests.agree(fd, ioas, buffer, context: "edu on VT-d")
            try edu.vfio.detach()
        }
    }
}
