#if canImport(Glibc)
import Glibc
#endif
import IOMMUFD
import IOMMUFDModel
import Testing

/// The typed core on the model: out-parameters decoded, kernel errnos surfaced as typed errors,
/// and the model's own contract (dispatch, trace, injection, counters).
@Suite struct ModelSemanticsTests {
    @Test func openCloseAndUnknownDescriptors() throws {
        let model = IOMMUFDModel()
        #expect(expectError { try IOMMUFDContext(path: "/dev/nope", kernel: model) }?.errno == .noSuchFileOrDirectory)
        let fd = try IOMMUFDContext(kernel: model)
        #expect(model.openContexts == [fd.descriptor])
        #expect(failure(model.close(4242)) == .badFileDescriptor)
        #expect(model.ioctl(4242, .ioasAlloc, nil) == .failure(.badFileDescriptor))
        let adopted = expectError { try IOMMUFDContext(adopting: 4000, kernel: model) }
        #expect(adopted?.errno == .badFileDescriptor && adopted?.operation == .adopt && adopted?.request == .option)
        model.addNonIOMMUFDPath("/dev/null")
        let null = try #require(try? model.open("/dev/null", flags: 0).get())
        #expect(expectError { try IOMMUFDContext(adopting: null, kernel: model) }?.reason == .notAnIOMMUFD)
        #expect(model.ioctl(null, .ioasMap, nil) == .failure(.inappropriateIOCTLForDevice))
        try fd.close()
        #expect(model.openContexts.isEmpty)
    }

    @Test func idsAreTheLowestFree() throws {
        let fd = try IOMMUFDContext(kernel: newModel())
        let a = try fd.allocateIOAS(), b = try fd.allocateIOAS(), c = try fd.allocateIOAS()
        #expect([a, b, c].map(\.rawValue) == [1, 2, 3])
        try fd.destroy(b)
        #expect(try fd.allocateIOAS() == b)
        let e = expectError { try fd.destroy(IOASID(99)) }
        #expect(e?.errno == .noSuchFileOrDirectory && e?.operation == .destroy && e?.request == .destroy)
        #expect(e.map { "\($0)".contains("IOMMU_DESTROY") && "\($0)".contains("no object with that id") } == true)
    }

    @Test func destroyOfABusyObject() throws {
        let model = newModel()
        let fd = try IOMMUFDContext(kernel: model)
        let ioas = try fd.allocateIOAS()
        model.setInUse(ioas, true, in: fd.descriptor)
        #expect(expectError { try fd.destroy(ioas) }?.errno == .resourceBusy)
        model.setInUse(ioas, false, in: fd.descriptor)
        try fd.destroy(ioas)
    }

    @Test func fixedMapsOverlapAndUnmapWholeAreas() throws {
        let model = newModel()
        let fd = try IOMMUFDContext(kernel: model)
        let ioas = try fd.allocateIOAS()
        #expect(try fd.map(host(fakeHost, 4 * page), into: ioas, at: IOVA(0x10_0000)) == IOVA(0x10_0000))
        let overlap = expectError { try fd.map(host(fakeHost, page), into: ioas, at: IOVA(0x10_0000 + 3 * page)) }
        #expect(overlap?.errno == .fileExists && overlap?.request == .ioasMap && overlap?.operation == .map)
        #expect(overlap.map { "\($0)".contains("IOMMU_IOAS_MAP (map) failed") && "\($0)".contains("overlaps") } == true)
        _ = try fd.map(host(fakeHost, 2 * page), into: ioas, at: IOVA(0x10_0000 + 4 * page))
        // Cuts the second area: ENOENT, and the first (wholly inside) is already gone.
        #expect(expectError { try fd.unmap(iovas(0x10_0000, 5 * page), from: ioas) }?.errno == .noSuchFileOrDirectory)
        #expect(model.areas(of: ioas, in: fd.descriptor)?.map(\.iova) == [iovas(0x10_0000 + 4 * page, 2 * page)])
        #expect(expectError { try fd.unmap(iovas(0x10_0000, page), from: ioas) }?.errno == .noSuchFileOrDirectory)
        #expect(try fd.unmap(iovas(0x10_0000, 6 * page), from: ioas) == 2 * page)
        #expect(try fd.unmapAll(from: ioas) == 0)
    }

    @Test func automaticIOVAsFirstFitAligned() throws {
        let model = newModel()
        let fd = try IOMMUFDContext(kernel: model)
        let ioas = try fd.allocateIOAS()
        // Never IOVA 0: the first fit starts at the first page, aligned to the length's power of two.
        let a = try fd.map(host(fakeHost, page), into: ioas)
        #expect(a == IOVA(page))
        let b = try fd.map(host(fakeHost, 4 * page), into: ioas)
        #expect(b == IOVA(4 * page))
        let c = try fd.map(host(fakeHost, page), into: ioas)
        #expect(c == IOVA(2 * page))
        #expect(model.ioctlTrace.last?["out_iova"] == 2 * page)
        // Allowed ranges narrow where automatic IOVAs go; ENOSPC when nothing fits.
        try fd.allowIOVAs([iovas(0x4000_0000, 2 * page)], in: ioas)
        #expect(try fd.map(host(fakeHost, 2 * page), into: ioas) == IOVA(0x4000_0000))
        let full = expectError { try fd.map(host(fakeHost, page), into: ioas) }
        #expect(full?.errno == .noSpace && "\(full!)".contains("no free IOVA range"))
        // A fixed map outside the allowed ranges is still accepted, as by the kernel.
        #expect(try fd.map(host(fakeHost, page), into: ioas, at: IOVA(0x9000_0000)) == IOVA(0x9000_0000))
    }

    @Test func rangesGrowPastEMSGSIZE() throws {
        let model = newModel()
        let fd = try IOMMUFDContext(kernel: model)
        let ioas = try fd.allocateIOAS()
        let fresh = try fd.iovaRanges(of: ioas)
        #expect(fresh.ranges == [.all] && fresh.alignment == 1)
        for i in 1...11 { try fd.mockAddReserved(iovas(0x1000_0000 * UInt64(i), page), in: ioas) }
        model.resetCounters()
        model.clearTrace()
        let ranges = try fd.iovaRanges(of: ioas)
        #expect(ranges.ranges.count == 12)
        #expect(ranges.ranges.first == (try IOVARange(first: IOVA(0), last: IOVA(0x1000_0000 - 1))))
        #expect(ranges.ranges.last == (try IOVARange(first: IOVA(0xb000_0000 + page), last: IOVA(.max))))
        // Capacity 8 first, EMSGSIZE, then once more with room for 12.
        #expect(model.ioctlCount(.ioasIOVARanges) == 2)
        #expect(model.ioctlTrace.first?.errno == .messageTooLong)
        #expect(model.ioctlTrace.first?["out_num_iovas"] == 12)
        // A fixed map into a reserved region is EINVAL; reserving over a mapping EADDRINUSE.
        #expect(expectError { try fd.map(host(fakeHost, page), into: ioas, at: IOVA(0x1000_0000)) }?.errno == .invalidArgument)
        _ = try fd.map(host(fakeHost, page), into: ioas, at: IOVA(0x2000))
        #expect(expectError { try fd.mockAddReserved(iovas(0x2000, page), in: ioas) }?.errno == Errno(rawValue: EADDRINUSE))
        // Allowed ranges may not include reserved ones.
        #expect(expectError { try fd.allowIOVAs([iovas(0x1000_0000, page)], in: ioas) }?.errno == Errno(rawValue: EADDRINUSE))
    }

    @Test func copySlicesAreasAndKeepsTheirPages() throws {
        let model = newModel()
        let fd = try IOMMUFDContext(kernel: model)
        let src = try fd.allocateIOAS(), dst = try fd.allocateIOAS()
        _ = try fd.map(host(fakeHost, 2 * page), into: src, at: IOVA(0x10_0000))
        _ = try fd.map(host(fakeHost + 2 * page, 2 * page), into: src, at: IOVA(0x10_0000 + 2 * page), access: .readable)
        // Across both areas, read-only: two areas in the destination.
        #expect(try fd.copy(iovas(0x10_0000 + page, 2 * page), from: src, to: dst, at: IOVA(0x50_0000), access: .readable) == IOVA(0x50_0000))
        #expect(model.areas(of: dst, in: fd.descriptor)?.map(\.iova) == [iovas(0x50_0000, page), iovas(0x50_0000 + page, page)])
        #expect(model.areas(of: dst, in: fd.descriptor)?.first?.source == .user(HostAddress(fakeHost + page)))
        // Writeable access over read-only pages: EPERM.
        #expect(expectError { try fd.copy(iovas(0x10_0000 + 2 * page, page), from: src, to: dst, at: IOVA(0x60_0000)) }?.errno == Errno(rawValue: EPERM))
        // A hole in the source: ENOENT.
        let e = expectError { try fd.copy(iovas(0x20_0000, page), from: src, to: dst) }
        #expect(e?.errno == .noSuchFileOrDirectory && e?.operation == .copy && e?.request == .ioasCopy)
    }

    @Test func mapFileNeedsAnOpenDescriptorAndChangeProcessNeedsFiles() throws {
        let fd = try IOMMUFDContext(kernel: newModel())
        let ioas = try fd.allocateIOAS()
        let buffer = try DMABuffer(memfdLength: Int(2 * page))
        let maybeMemfd = buffer.memfd
        let memfd = try #require(maybeMemfd)
        #expect(try fd.mapFile(memfd, offset: 0, length: 2 * page, into: ioas, at: IOVA(0x40_0000)) == IOVA(0x40_0000))
        try fd.changeProcess()
        #expect(expectError { try fd.mapFile(9999, offset: 0, length: page, into: ioas) }?.errno == .badFileDescriptor)
        _ = try fd.map(host(fakeHost, page), into: ioas)
        #expect(expectError { try fd.changeProcess() }?.errno == .invalidArgument)
    }

    @Test func options() throws {
        let fd = try IOMMUFDContext(kernel: newModel())
        #expect(try fd.rlimitMode() == .perUser)
        try fd.setRLimitMode(.perProcess)
        #expect(try fd.rlimitMode() == .perProcess)
        #expect(expectError { try fd.setRLimitMode(RLimitMode(rawValue: 2)) }?.errno == .invalidArgument)
        let ioas = try fd.allocateIOAS()
        #expect(expectError { try fd.setRLimitMode(.perUser) }?.errno == .resourceBusy)
        #expect(try fd.hugePages(in: ioas))
        try fd.setHugePages(false, in: ioas)
        #expect(try !fd.hugePages(in: ioas))
        #expect(try fd.iovaRanges(of: ioas).alignment == page)
        #expect(expectError { try fd.hugePages(in: IOASID(77)) }?.errno == .noSuchFileOrDirectory)
        let unprivileged = try IOMMUFDContext(kernel: newModel(.init(privileged: false)))
        #expect(expectError { try unprivileged.setRLimitMode(.perProcess) }?.errno == Errno(rawValue: EPERM))
    }

    @Test func vfioCompatibilityIOAS() throws {
        let fd = try IOMMUFDContext(kernel: newModel())
        #expect(try fd.vfioCompatibilityIOAS() == nil)
        let ioas = try fd.allocateIOAS()
        try fd.setVFIOCompatibilityIOAS(ioas)
        #expect(try fd.vfioCompatibilityIOAS() == ioas)
        try fd.destroy(ioas)
        #expect(try fd.vfioCompatibilityIOAS() == nil)
        #expect(expectError { try fd.setVFIOCompatibilityIOAS(IOASID(5)) }?.errno == .noSuchFileOrDirectory)
    }

    @Test func featureProbeSeesTheModelledKernel() throws {
        let withTest = try IOMMUFDContext(kernel: newModel())
        let features = withTest.probeFeatures()
        #expect(IoctlRequest.iommufdRequests.allSatisfy { features.supports($0) })
        let hasMock = withTest.hasMockIOMMU
        #expect(hasMock)
        let plain = try IOMMUFDContext(kernel: newModel(.init()))
        let plainHasMock = plain.hasMockIOMMU
        #expect(!plainHasMock)
    }

    @Test func sizeRulesOfTheDispatcher() throws {
        let model = newModel()
        let fd = try IOMMUFDContext(kernel: model)
        var cmd = [UInt32](repeating: 0, count: 16)
        func call(_ r: IoctlRequest) -> Result<CInt, Errno> { cmd.withUnsafeMutableBytes { model.ioctl(fd.descriptor, r, $0.baseAddress) } }
        cmd[0] = 8   // IOAS_ALLOC needs 12 bytes
        #expect(call(.ioasAlloc) == .failure(.invalidArgument))
        cmd[0] = 16; cmd[3] = 1  // a nonzero byte past the 12 the kernel knows
        #expect(call(.ioasAlloc) == .failure(Errno(rawValue: E2BIG)))
        cmd[3] = 0
        #expect(call(.ioasAlloc) == .success(0))
        #expect(cmd[2] == 1)
        cmd = [UInt32](repeating: 0, count: 16); cmd[0] = 12; cmd[1] = 1  // flags
        #expect(call(.ioasAlloc) == .failure(.notSupported))
        #expect(model.ioctl(fd.descriptor, .ioasAlloc, nil) == .failure(.badAddress))
        cmd[0] = 16
        #expect(call(IoctlRequest(rawValue: 0x3b96)) == .failure(.inappropriateIOCTLForDevice))
        #expect(call(.hwptAlloc) == .failure(.invalidArgument))
        #expect(model.ioctl(fd.descriptor, .vfioGetAPIVersion, nil) == .success(0))
    }

    @Test func injectedFailuresSurfaceTypedAndCount() throws {
        let model = newModel()
        let fd = try IOMMUFDContext(kernel: model)
        let ioas = try fd.allocateIOAS()
        model.injectFailure(.noMemory, for: .ioasMap, count: 2)
        model.resetCounters()
        model.clearTrace()
        for _ in 0..<2 {
            let e = expectError { try fd.map(host(fakeHost, page), into: ioas) }
            #expect(e?.errno == .noMemory && e?.request == .ioasMap && e?.operation == .map)
            #expect(e.map { "\($0)".contains("IOMMU_IOAS_MAP") } == true)
        }
        #expect(model.pendingInjections.isEmpty)
        _ = try fd.map(host(fakeHost, page), into: ioas)
        #expect(model.ioctlCount(.ioasMap) == 3 && model.totalIoctlCount == 3)
        #expect(model.ioctlTrace.map(\.injected) == [true, true, false])
        #expect(model.areas(of: ioas, in: fd.descriptor)?.count == 1)
    }

    @Test func concurrentMapsFromManyThreads() async throws {
        let model = IOMMUFDModel(.init(tracing: false))
        let shared = SharedIOMMUFDContext(try IOMMUFDContext(kernel: model))
        let ioas = try shared.iommufd.allocateIOAS()
        await withTaskGroup(of: Void.self) { group in
            for t in 0..<8 {
                group.addTask {
                    for i in 0..<50 { _ = try? shared.iommufd.map(host(fakeHost + UInt64(t * 50 + i) * page, page), into: ioas) }
                }
            }
        }
        let areas = try #require(model.areas(of: ioas, in: shared.iommufd.descriptor))
        #expect(areas.count == 400)
        for (a, b) in zip(areas, areas.dropFirst()) { #expect(a.iova.last < b.iova.first) }
    }

    @Test func concurrentContextsKeepTheirOwnStateAndTheModelsCounts() async throws {
        let model = IOMMUFDModel(.init(tracing: false))
        let contexts = try (0..<4).map { _ in SharedIOMMUFDContext(try IOMMUFDContext(kernel: model)) }
        await withTaskGroup(of: Void.self) { group in
            for shared in contexts {
                group.addTask {
                    guard let ioas = try? shared.iommufd.allocateIOAS() else { return }
                    for i in 0..<100 { _ = try? shared.iommufd.map(host(fakeHost + UInt64(i) * page, page), into: ioas) }
                }
            }
        }
        for shared in contexts {
            #expect(model.areas(of: IOASID(1), in: shared.iommufd.descriptor)?.count == 100)
        }
        #expect(model.ioctlCount(.ioasMap) == 400 && model.ioctlCount(.ioasAlloc) == 4)
        // Counts stay with the model when a descriptor closes; a reset clears them all. The
        // owners must outlive the close: in release their lifetimes end at their last use, and
        // their deinit would close the descriptor first.
        withExtendedLifetime(contexts) {
            #expect(failure(model.close(contexts[0].iommufd.descriptor)) == nil)
        }
        #expect(model.ioctlCount(.ioasMap) == 400 && model.totalIoctlCount == 404)
        model.resetCounters()
        #expect(model.totalIoctlCount == 0)
    }
}
