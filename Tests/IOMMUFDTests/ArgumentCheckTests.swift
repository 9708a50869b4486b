import IOMMUFD
import IOMMUFDModel
import Testing

/// The pre-call rule: a check made before the syscall never refuses what the kernel accepts, and
/// when it refuses it carries the errno the kernel would have returned. Only arguments no ioctl
/// field can carry (a range of all 2^64 bytes) are refused here; everything else reaches the
/// kernel (here the model, which follows the kernel's order of checks; the kernel tier compares
/// the same calls with raw ioctls on the real kernel).
@Suite struct ArgumentCheckTests {
    /// Runs `body` on a fresh IOAS and requires a refusal before the call with `errno`.
    func refused(
        _ request: IoctlRequest, _ operation: IOMMUFDError.Operation, _ errno: Errno,
        sourceLocation: SourceLocation = #_sourceLocation, _ body: (borrowing IOMMUFDContext, IOASID) throws -> Void
    ) throws {
        let model = newModel()
        let fd = try IOMMUFDContext(kernel: model)
        let ioas = try fd.allocateIOAS()
        model.resetCounters()
        model.clearTrace()
        let error = expectError(sourceLocation: sourceLocation) { try body(fd, ioas) }
        #expect(error?.request == request, sourceLocation: sourceLocation)
        #expect(error?.operation == operation, sourceLocation: sourceLocation)
        #expect(error?.errno == errno, sourceLocation: sourceLocation)
        #expect(error?.isRefusedBeforeCall == true, sourceLocation: sourceLocation)
        #expect(error.map { "\($0)".contains("refused before the call: \(IOMMUFDError.name(of: errno))") } == true,
                "\(error.map { "\($0)" } ?? "")", sourceLocation: sourceLocation)
        #expect(model.totalIoctlCount == 0, "\(model.ioctlTrace)", sourceLocation: sourceLocation)
    }

    /// Runs `body` on a fresh IOAS and requires exactly one ioctl and the kernel's answer
    /// (`nil`: success).
    func reachesTheKernel(
        _ errno: Errno?, sourceLocation: SourceLocation = #_sourceLocation,
        _ body: (borrowing IOMMUFDContext, IOASID) throws -> Void
    ) throws {
        let model = newModel()
        let fd = try IOMMUFDContext(kernel: model)
        let ioas = try fd.allocateIOAS()
        model.resetCounters()
        var answer: IOMMUFDError?
        do { try body(fd, ioas) } catch let e as IOMMUFDError { answer = e }
        #expect(answer?.errno == errno, "\(answer.map { "\($0)" } ?? "success")", sourceLocation: sourceLocation)
        #expect(answer.map { $0.code == .kernel } ?? true, sourceLocation: sourceLocation)
        #expect(model.totalIoctlCount == 1, "\(model.ioctlTrace)", sourceLocation: sourceLocation)
    }

    @Test func onlyUncarriableRangesAreRefusedBeforeTheCall() throws {
        try refused(.ioasMap, .map, .overflow) { fd, ioas in _ = try fd.map(.all, into: ioas) }
        try refused(.ioasCopy, .copy, .overflow) { fd, ioas in _ = try fd.copy(.all, from: ioas, to: ioas) }
    }

    /// What the old checks refused on the system page size, the kernel accepts: a new IOAS has
    /// alignment 1.
    @Test func subPageMapsCopiesAndUnmapsReachTheKernel() throws {
        try reachesTheKernel(nil) { fd, ioas in _ = try fd.map(host(fakeHost + 8, 2048), into: ioas, at: IOVA(0x10_0008)) }
        let model = newModel()
        let fd = try IOMMUFDContext(kernel: model)
        let ioas = try fd.allocateIOAS()
        _ = try fd.map(host(fakeHost + 8, 2048), into: ioas, at: IOVA(0x10_0008))
        #expect(try fd.copy(iovas(0x10_0008, 1024), from: ioas, to: ioas, at: IOVA(0x20_0008)) == IOVA(0x20_0008))
        #expect(try fd.unmap(iovas(0x20_0008, 1024), from: ioas) == 1024)
        try reachesTheKernel(.noSuchFileOrDirectory) { fd, ioas in _ = try fd.unmap(iovas(0x1000_0000 + 1, 3), from: ioas) }
    }

    /// The kernel's errno for each bad argument, never a library-made one.
    @Test func badArgumentsGetTheKernelsErrno() throws {
        // Unknown access bits: EOPNOTSUPP, which is "not supported", so newer flags can be probed.
        try reachesTheKernel(.notSupported) { fd, ioas in
            _ = try fd.map(host(fakeHost, page), into: ioas, access: MapAccess(rawValue: 1 << 8))
        }
        let unknownFlag = expectError {
            let fd = try IOMMUFDContext(kernel: newModel())
            _ = try fd.map(host(fakeHost, page), into: try fd.allocateIOAS(), access: MapAccess(rawValue: 1 << 8))
        }
        #expect(unknownFlag?.isNotSupported == true)
        try reachesTheKernel(.invalidArgument) { fd, ioas in _ = try fd.map(host(fakeHost, page), into: ioas, access: []) }
        try reachesTheKernel(.overflow) { fd, ioas in
            _ = try fd.map(host(fakeHost, 2 * page), into: ioas, at: IOVA(UInt64.max - page + 1))
        }
        try reachesTheKernel(.invalidArgument) { fd, ioas in _ = try fd.mapFile(3, offset: 0, length: 0, into: ioas) }
        try reachesTheKernel(.badFileDescriptor) { fd, ioas in _ = try fd.mapFile(-1, offset: 0, length: page, into: ioas) }
        try reachesTheKernel(.invalidArgument) { fd, ioas in
            _ = try fd.copy(iovas(0x1000_0000, page), from: ioas, to: ioas, access: [])
        }
        // Overlapping or one-byte allowed ranges: the kernel's EINVAL, and for an unknown IOAS
        // its ENOENT first (its order of checks).
        try reachesTheKernel(.invalidArgument) { fd, ioas in
            try fd.allowIOVAs([iovas(0x10_0000, 4 * page), iovas(0x10_0000 + 3 * page, page)], in: ioas)
        }
        try reachesTheKernel(.invalidArgument) { fd, ioas in try fd.allowIOVAs([iovas(0x10_0000, 1)], in: ioas) }
        try reachesTheKernel(.noSuchFileOrDirectory) { fd, _ in try fd.allowIOVAs([iovas(0x10_0000, 1)], in: IOASID(999)) }
    }

    @Test func wholeSpaceUnmapIsUnmapAll() throws {
        let model = newModel()
        let fd = try IOMMUFDContext(kernel: model)
        let ioas = try fd.allocateIOAS()
        _ = try fd.map(host(fakeHost, 2 * page), into: ioas, at: IOVA(0x10_0000))
        model.clearTrace()
        #expect(try fd.unmap(.all, from: ioas) == 2 * page)
        let call = try #require(model.ioctlTrace.last)
        #expect(call.call == .ioctl(.ioasUnmap))
        #expect(call["iova"] == 0 && call["length"] == .max && call["out_length"] == 2 * page)
    }

    /// Errors print the errno's symbolic name and the kernel's meaning.
    @Test func descriptionsNameTheErrno() throws {
        let fd = try IOMMUFDContext(kernel: newModel())
        let ioas = try fd.allocateIOAS()
        _ = try fd.map(host(fakeHost, page), into: ioas, at: IOVA(0x10_0000))
        let e = try #require(expectError { try fd.map(host(fakeHost, page), into: ioas, at: IOVA(0x10_0000)) })
        #expect("\(e)".hasPrefix("IOMMU_IOAS_MAP (map) failed: EEXIST ("), "\(e)")
        #expect("\(e)".contains("overlaps an existing mapping"))
        #expect(IOMMUFDError.name(of: .noSuchFileOrDirectory) == "ENOENT")
        #expect(IOMMUFDError.name(of: .notSupported) == "EOPNOTSUPP")
        #expect(IOMMUFDError.name(of: Errno(rawValue: 4000)) == "errno 4000")
        let missing = try #require(expectError { try IOMMUFDContext(path: "/nonexistent/iommu") })
        #expect("\(missing)".contains("CONFIG_IOMMUFD") && "\(missing)".contains("ENOENT"), "\(missing)")
    }

    /// Operations are named after the public call, also for the option calls.
    @Test func optionOperationsAreNamedPerCall() throws {
        let fd = try IOMMUFDContext(kernel: newModel())
        #expect(expectError { try fd.hugePages(in: IOASID(77)) }?.operation == .hugePages)
        #expect(expectError { try fd.setHugePages(true, in: IOASID(77)) }?.operation == .setHugePages)
        #expect(expectError { try fd.setRLimitMode(RLimitMode(rawValue: 7)) }?.operation == .setRLimitMode)
    }
}
