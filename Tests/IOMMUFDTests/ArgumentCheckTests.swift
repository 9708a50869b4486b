import IOMMUFD
import IOMMUFDModel
import Testing

/// Bad arguments are refused before any syscall: a typed error, and no ioctl in the trace.
@Suite struct ArgumentCheckTests {
    /// Runs `body` on a fresh IOAS and requires a pre-call refusal with `request` and `reason`.
    func refused(
        _ request: IoctlRequest, _ operation: IOMMUFDError.Operation, sourceLocation: SourceLocation = #_sourceLocation,
        _ body: (borrowing IOMMUFDContext, IOASID) throws -> Void, reason check: (IOMMUFDError.Reason) -> Bool
    ) throws {
        let model = newModel()
        let fd = try IOMMUFDContext(kernel: model)
        let ioas = try fd.allocateIOAS()
        model.resetCounters()
        model.clearTrace()
        let error = expectError(sourceLocation: sourceLocation) { try body(fd, ioas) }
        #expect(error?.request == request, sourceLocation: sourceLocation)
        #expect(error?.operation == operation, sourceLocation: sourceLocation)
        #expect(error?.errno == nil, sourceLocation: sourceLocation)
        if let error { #expect(check(error.reason), "\(error.reason)", sourceLocation: sourceLocation) }
        #expect(error.map { "\($0)".contains("refused before the call") } == true, sourceLocation: sourceLocation)
        #expect(model.totalIoctlCount == 0, "\(model.ioctlTrace)", sourceLocation: sourceLocation)
        #expect(model.ioctlTrace.isEmpty, sourceLocation: sourceLocation)
    }

    func misaligned(_ r: IOMMUFDError.Reason) -> Bool { if case .invalidRange(.misaligned) = r { true } else { false } }
    func overflow(_ r: IOMMUFDError.Reason) -> Bool { if case .invalidRange(.overflow) = r { true } else { false } }
    func empty(_ r: IOMMUFDError.Reason) -> Bool { if case .invalidRange(.empty) = r { true } else { false } }
    func wholeSpace(_ r: IOMMUFDError.Reason) -> Bool { r == .invalidRange(.wholeSpace) }
    func argument(_ r: IOMMUFDError.Reason) -> Bool { if case .invalidArgument = r { true } else { false } }

    @Test func mapChecksBeforeTheCall() throws {
        try refused(.ioasMap, .map, { fd, ioas in _ = try fd.map(host(fakeHost + 1, page), into: ioas) }, reason: misaligned)
        try refused(.ioasMap, .map, { fd, ioas in _ = try fd.map(host(fakeHost, page + 8), into: ioas) }, reason: misaligned)
        try refused(.ioasMap, .map, { fd, ioas in _ = try fd.map(host(fakeHost, page), into: ioas, at: IOVA(0x1234)) }, reason: misaligned)
        try refused(.ioasMap, .map, { fd, ioas in _ = try fd.map(host(fakeHost, page), into: ioas, access: []) }, reason: argument)
        try refused(.ioasMap, .map, { fd, ioas in _ = try fd.map(host(fakeHost, page), into: ioas, access: MapAccess(rawValue: 1)) }, reason: argument)
        // An IOVA whose range would pass 2^64.
        try refused(.ioasMap, .map, { fd, ioas in _ = try fd.map(host(fakeHost, 2 * page), into: ioas, at: IOVA(UInt64.max - page + 1)) }, reason: overflow)
        // The whole host space has no length.
        try refused(.ioasMap, .map, { fd, ioas in _ = try fd.map(.all, into: ioas) }, reason: wholeSpace)
    }

    @Test func mapFileChecksBeforeTheCall() throws {
        try refused(.ioasMapFile, .mapFile, { fd, ioas in _ = try fd.mapFile(3, offset: 0, length: 0, into: ioas) }, reason: empty)
        try refused(.ioasMapFile, .mapFile, { fd, ioas in _ = try fd.mapFile(3, offset: 1, length: page, into: ioas) }, reason: misaligned)
        try refused(.ioasMapFile, .mapFile, { fd, ioas in _ = try fd.mapFile(3, offset: UInt64.max - page + 1, length: 2 * page, into: ioas) }, reason: overflow)
        try refused(.ioasMapFile, .mapFile, { fd, ioas in _ = try fd.mapFile(-1, offset: 0, length: page, into: ioas) }, reason: argument)
        try refused(.ioasMapFile, .mapFile, { fd, ioas in _ = try fd.mapFile(3, offset: 0, length: page, into: ioas, access: []) }, reason: argument)
    }

    @Test func unmapAndCopyCheckBeforeTheCall() throws {
        try refused(.ioasUnmap, .unmap, { fd, ioas in _ = try fd.unmap(iovas(0x1000_0000 + 1, page), from: ioas) }, reason: misaligned)
        try refused(.ioasUnmap, .unmap, { fd, ioas in _ = try fd.unmap(iovas(0x1000_0000, page - 1), from: ioas) }, reason: misaligned)
        try refused(.ioasCopy, .copy, { fd, ioas in _ = try fd.copy(.all, from: ioas, to: ioas) }, reason: wholeSpace)
        try refused(.ioasCopy, .copy, { fd, ioas in _ = try fd.copy(iovas(0x1000, 3), from: ioas, to: ioas) }, reason: misaligned)
        try refused(.ioasCopy, .copy, { fd, ioas in _ = try fd.copy(iovas(0x1000_0000, page), from: ioas, to: ioas, at: IOVA(8)) }, reason: misaligned)
        try refused(.ioasCopy, .copy, { fd, ioas in _ = try fd.copy(iovas(0x1000_0000, page), from: ioas, to: ioas, access: []) }, reason: argument)
    }

    @Test func otherChecksBeforeTheCall() throws {
        try refused(.ioasAllowIOVAs, .allowIOVAs, { fd, ioas in
            try fd.allowIOVAs([iovas(0x10_0000, 4 * page), iovas(0x10_0000 + 3 * page, page)], in: ioas)
        }, reason: argument)
        // The kernel wants start < last: a one-byte range is refused here.
        try refused(.ioasAllowIOVAs, .allowIOVAs, { fd, ioas in
            try fd.allowIOVAs([iovas(0x10_0000, 1)], in: ioas)
        }, reason: argument)
        try refused(.ioasNoIOMMUGetPA, .physicalAddress, { fd, ioas in
            _ = try fd.noIOMMUPhysicalAddress(of: IOVA(0), maximumLength: 0, in: ioas)
        }, reason: empty)
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
}
