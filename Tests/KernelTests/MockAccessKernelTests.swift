#if canImport(Glibc)
import Glibc
#endif
import IOMMUFD
import Testing

/// Mock accesses (an in-kernel user of an IOAS that is not a device), page pin counts, the
/// temporary-memory limit and the mock's dma-bufs, checked against the kernel's own answers.
@Suite(.serialized, .enabled(if: KernelTier.enabled, "needs /dev/iommu"))
struct MockAccessKernelTests {
    /// The mock domain's aperture starts at 16 MiB.
    let base: UInt64 = 1 << 24

    /// The error `body` throws, if it is an ``IOMMUFDError``.
    func thrown(_ body: () throws -> Void) -> IOMMUFDError? {
        do { try body() } catch let error as IOMMUFDError { return error } catch {}
        Issue.record("expected an IOMMUFDError")
        return nil
    }

    /// Byte `i` of a buffer made by `patterned(_:seed:)`.
    func pattern(_ i: Int, seed: UInt8) -> UInt8 { UInt8(truncatingIfNeeded: i * 7) &+ seed }

    @Test func readAndWriteGuestMemoryThroughAnIOAS() throws {
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        let access = try fd.createMockAccess(to: ioas)
        let buffer = try patterned(4 * page, seed: 3)
        _ = try fd.map(buffer, into: ioas, at: IOVA(base))
        // 64 bytes across the boundary of pages 0 and 1, by the fast and the slow path.
        let expected = (page - 32..<page + 32).map { pattern($0, seed: 3) }
        let at = IOVA(base + UInt64(page) - 32)
        #expect(try fd.read(64, at: at, through: access) == expected)
        #expect(try fd.read(64, at: at, through: access, options: .slowPath) == expected)
        // Into a caller's buffer, the whole mapping at once.
        var whole = [UInt8](repeating: 0, count: 4 * page)
        try whole.withUnsafeMutableBytes { try fd.read(at: IOVA(base), into: $0, through: access) }
        #expect(whole == (0..<4 * page).map { pattern($0, seed: 3) })

        // A write through the IOAS lands in the process's memory, as a device's DMA would.
        try fd.write([0xde, 0xad, 0xbe, 0xef], at: IOVA(base + UInt64(2 * page) + 8), through: access)
        try fd.write([0x11, 0x22], at: IOVA(base + UInt64(3 * page) - 1), through: access, options: .slowPath)
        buffer.withUnsafeMutableBytes { b in
            #expect(Array(b[2 * page + 8..<2 * page + 12]) == [0xde, 0xad, 0xbe, 0xef])
            #expect(Array(b[3 * page - 1...3 * page]) == [0x11, 0x22])
        }
        #expect(try fd.read(4, at: IOVA(base + UInt64(2 * page) + 8), through: access) == [0xde, 0xad, 0xbe, 0xef])
        // One value at a time, little-endian: what a walker reading table entries needs.
        #expect(try fd.read(UInt32.self, at: IOVA(base + UInt64(2 * page) + 8), through: access) == 0xefbe_adde)
        try fd.write(UInt64(0x0807_0605_0403_0201), at: IOVA(base + 16), through: access)
        buffer.withUnsafeMutableBytes { #expect(Array($0[16..<24]) == [1, 2, 3, 4, 5, 6, 7, 8]) }
        #expect(try fd.read(UInt64.self, at: IOVA(base + 16), through: access) == 0x0807_0605_0403_0201)
        expectKernelError(.noSuchFileOrDirectory, .mockAccessRead) { try fd.read(UInt64.self, at: IOVA(base + UInt64(4 * page) - 4), through: access) }

        // Where nothing is mapped the kernel answers ENOENT, also for a range running past the end.
        expectKernelError(.noSuchFileOrDirectory, .mockAccessRead) { try fd.read(16, at: IOVA(base + UInt64(4 * page)), through: access) }
        expectKernelError(.noSuchFileOrDirectory, .mockAccessRead) { try fd.read(2 * page, at: IOVA(base + UInt64(3 * page)), through: access) }
        expectKernelError(.noSuchFileOrDirectory, .mockAccessWrite) { try fd.write([1], at: IOVA(base - 1), through: access) }
        #expect(try fd.isMapped(IOVA(base), through: access))
        #expect(try fd.isMapped(IOVA(base + UInt64(4 * page) - 1), through: access))
        #expect(try !fd.isMapped(IOVA(base + UInt64(4 * page)), through: access))
        #expect(try !fd.isMapped(IOVA(base - 1), through: access))
        // A range past 2^64: EOVERFLOW.
        expectKernelError(.overflow, .mockAccessRead) { try fd.read(16, at: IOVA(UInt64.max - 7), through: access) }

        // Read-only and write-only mappings: the direction the mapping lacks is EPERM.
        let readOnly = try patterned(page, seed: 50)
        let writeOnly = try patterned(page, seed: 60)
        _ = try fd.map(readOnly, into: ioas, at: IOVA(base + 0x10_0000), access: .readable)
        _ = try fd.map(writeOnly, into: ioas, at: IOVA(base + 0x20_0000), access: .writeable)
        #expect(try fd.read(2, at: IOVA(base + 0x10_0000), through: access) == [pattern(0, seed: 50), pattern(1, seed: 50)])
        expectKernelError(.notPermitted, .mockAccessWrite) { try fd.write([0], at: IOVA(base + 0x10_0000), through: access) }
        expectKernelError(.notPermitted, .mockAccessRead) { try fd.read(1, at: IOVA(base + 0x20_0000), through: access) }
        try fd.write([0x5a], at: IOVA(base + 0x20_0000), through: access)
        writeOnly.withUnsafeMutableBytes { #expect($0[0] == 0x5a) }
        #expect(try fd.isMapped(IOVA(base + 0x20_0000), through: access))

        // No bytes: refused before the call (the kernel answers EINVAL).
        let empty = thrown { _ = try fd.read(0, at: IOVA(base), through: access) }
        #expect(empty?.errno == .invalidArgument && empty?.isRefusedBeforeCall == true && empty?.operation == .mockAccessRead)

        #expect(try fd.unmapAll(from: ioas) == UInt64(6 * page))
        #expect(try !fd.isMapped(IOVA(base), through: access))
        try access.close()
    }

    @Test func accessCreationAndReplace() throws {
        let fd = try IOMMUFDContext()
        let a = try fd.allocateIOAS()
        let b = try fd.allocateIOAS()
        expectKernelError(.noSuchFileOrDirectory, .mockCreateAccess) { try fd.createMockAccess(to: IOASID(0xdead)) }
        // A flag the kernel does not know reaches it: EOPNOTSUPP.
        expectKernelError(.notSupported, .mockCreateAccess) { try fd.createMockAccess(to: a, flags: MockAccessFlags(rawValue: 1 << 5)) }
        let access = try fd.createMockAccess(to: a)
        #expect(access.descriptor > 2)
        let inA = try patterned(page, seed: 1)
        let inB = try patterned(page, seed: 2)
        _ = try fd.map(inA, into: a, at: IOVA(base))
        _ = try fd.map(inB, into: b, at: IOVA(base))
        #expect(try fd.read(3, at: IOVA(base), through: access) == (0..<3).map { pattern($0, seed: 1) })
        try fd.replaceMockAccessIOAS(access, with: b)
        #expect(try fd.read(3, at: IOVA(base), through: access) == (0..<3).map { pattern($0, seed: 2) })
        expectKernelError(.noSuchFileOrDirectory, .mockAccessReplaceIOAS) { try fd.replaceMockAccessIOAS(access, with: IOASID(0xdead)) }
        // The access holds b: it cannot be destroyed until the access is closed.
        expectKernelError(.resourceBusy, .destroy) { try fd.destroy(b) }
        try access.close()
        try fd.destroy(b)
    }

    @Test func pinnedPagesAreCountedAndUnpinned() throws {
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        let buffer = try patterned(4 * page, seed: 11)
        let firstHalf = try HostRange(base: buffer.address, length: UInt64(2 * page))
        let secondHalf = try HostRange(base: buffer.address.advanced(by: UInt64(2 * page))!, length: UInt64(2 * page))
        try fd.mockCheckPins(buffer.range, equal: 0)
        _ = try fd.map(buffer, into: ioas, at: IOVA(base))
        // Mapped, but nothing needs the pages yet: not pinned.
        try fd.mockCheckPins(buffer.range, equal: 0)
        expectKernelError(.ioError, .mockCheckRefs) { try fd.mockCheckPins(buffer.range, equal: 1) }

        // An access that only reads and writes cannot pin.
        let plain = try fd.createMockAccess(to: ioas)
        expectKernelError(.notSupported, .mockAccessPinPages) { try fd.pinPages(range(base, page), through: plain) }
        try plain.close()

        let access = try fd.createMockAccess(to: ioas, flags: .needsPinPages)
        let pages = try fd.pinPages(range(base, 2 * page), through: access, writable: true, expecting: buffer.address)
        try fd.mockCheckPins(firstHalf, equal: 1)
        try fd.mockCheckPins(secondHalf, equal: 0)
        // Pinning again pins the same pages once more.
        // Pinning again shares the pages' one pin.
        let again = try fd.pinPages(range(base, 2 * page), through: access)
        try fd.mockCheckPins(firstHalf, equal: 1)
        try fd.unpinPages(again, through: access)
        try fd.mockCheckPins(firstHalf, equal: 1)
        // The kernel checks the pinned pages are the process's pages at `expecting`.
        let other = try DMABuffer(length: 2 * page)
        expectKernelError(Errno(rawValue: EBADE), .mockAccessPinPages) {
            try fd.pinPages(range(base, 2 * page), through: access, expecting: other.address)
        }
        // Pages nothing maps: ENOENT.
        expectKernelError(.noSuchFileOrDirectory, .mockAccessPinPages) { try fd.pinPages(range(base + UInt64(4 * page), page), through: access) }

        // A mock domain pins every page of the mapping; pages the access pinned keep one pin.
        let mock = try fd.addMockDevice(to: PageTableID(ioas))
        try fd.mockCheckPins(firstHalf, equal: 1)
        try fd.mockCheckPins(secondHalf, equal: 1)
        try fd.mockCheckMap(mock.hwpt, range(base, 4 * page), maps: buffer.address)
        try fd.destroy(mock.id)
        try fd.mockCheckPins(firstHalf, equal: 1)
        try fd.mockCheckPins(secondHalf, equal: 0)

        try fd.unpinPages(pages, through: access)
        try fd.mockCheckPins(buffer.range, equal: 0)
        expectKernelError(.noSuchFileOrDirectory, .mockAccessUnpinPages) { try fd.unpinPages(pages, through: access) }

        // Unmapping pinned IOVAs asks the access to unpin them first: the pin is gone after.
        let pinned = try fd.pinPages(range(base + UInt64(2 * page), page), through: access)
        try fd.mockCheckPins(try HostRange(base: secondHalf.first, length: UInt64(page)), equal: 1)
        #expect(try fd.unmapAll(from: ioas) == UInt64(4 * page))
        try fd.mockCheckPins(buffer.range, equal: 0)
        expectKernelError(.noSuchFileOrDirectory, .mockAccessUnpinPages) { try fd.unpinPages(pinned, through: access) }

        // Closing the access unpins what it held.
        _ = try fd.map(buffer, into: ioas, at: IOVA(base))
        _ = try fd.pinPages(range(base, 4 * page), through: access)
        try fd.mockCheckPins(buffer.range, equal: 1)
        try access.close()
        try fd.mockCheckPins(buffer.range, equal: 0)

        // Misaligned ranges are refused before the call, as the kernel would (EINVAL).
        let misaligned = try HostRange(base: buffer.address.advanced(by: 8)!, length: UInt64(page))
        let refused = thrown { try fd.mockCheckPins(misaligned, equal: 0) }
        #expect(refused?.errno == .invalidArgument && refused?.isRefusedBeforeCall == true && refused?.operation == .mockCheckRefs)
    }

    @Test func temporaryMemoryLimit() throws {
        let fd = try IOMMUFDContext()
        expectKernelError(.invalidArgument, .mockSetTemporaryMemoryLimit) { try fd.mockSetTemporaryMemoryLimit(11) }
        try fd.mockSetTemporaryMemoryLimit(16)
        defer { try? fd.mockSetTemporaryMemoryLimit(IOMMUFDContext.mockDefaultTemporaryMemoryLimit) }
        // With one-element batches, pinning, mapping and access still give the same answers.
        let ioas = try fd.allocateIOAS()
        let mock = try fd.addMockDevice(to: PageTableID(ioas))
        let buffer = try patterned(16 * page, seed: 21)
        _ = try fd.map(buffer, into: ioas, at: IOVA(base))
        try fd.mockCheckMap(mock.hwpt, range(base, 16 * page), maps: buffer.address)
        try fd.mockCheckPins(buffer.range, equal: 1)
        let access = try fd.createMockAccess(to: ioas, flags: .needsPinPages)
        let pages = try fd.pinPages(range(base, 16 * page), through: access, expecting: buffer.address)
        #expect(try fd.read(16 * page, at: IOVA(base), through: access) == (0..<16 * page).map { pattern($0, seed: 21) })
        try fd.unpinPages(pages, through: access)
        try fd.mockSetTemporaryMemoryLimit(IOMMUFDContext.mockDefaultTemporaryMemoryLimit)
    }

    @Test func dmaBufMapsRevokesAndRestores() throws {
        let fd = try IOMMUFDContext()
        let ioas = try fd.allocateIOAS()
        expectKernelError(.invalidArgument, .mockDMABufGet) { try fd.mockDMABuf(length: 0) }
        expectKernelError(.invalidArgument, .mockDMABufGet) { try fd.mockDMABuf(length: UInt32(513 * page)) }
        let buffer = try fd.mockDMABuf(length: UInt32(4 * page - 100))
        print("dma-buf get: the ioctl returned \(buffer.ioctlResult); the new descriptor is \(buffer.descriptor)")
        // The 7.3.4 mock answers 0 although it installed a descriptor (a fixed one answers the descriptor).
        #expect(buffer.ioctlResult == 0)
        #expect(buffer.descriptor > 2)
        #expect(buffer.length == UInt64(4 * page))
        var link = [CChar](repeating: 0, count: 64)
        let n = readlink("/proc/self/fd/\(buffer.descriptor)", &link, 63)
        #expect(n > 0 && String(decoding: link.prefix(max(n, 0)).map { UInt8(bitPattern: $0) }, as: UTF8.self).hasPrefix("/dmabuf:"))

        let iova = try fd.mapFile(buffer.descriptor, offset: 0, length: buffer.length, into: ioas)
        expectKernelError(.invalidArgument, .mapFile) {
            try fd.mapFile(buffer.descriptor, offset: buffer.length, length: buffer.length, into: ioas)
        }
        expectKernelError(.invalidArgument, .mapFile) {
            try fd.mapFile(buffer.descriptor, offset: 0, length: buffer.length + UInt64(page), into: ioas)
        }
        // An access cannot read a dma-buf's memory: EINVAL; it is mapped all the same.
        let access = try fd.createMockAccess(to: ioas)
        expectKernelError(.invalidArgument, .mockAccessRead) { try fd.read(8, at: iova, through: access) }
        #expect(try fd.isMapped(iova, through: access))

        // Revoked: new maps answer ENODEV until it is restored.
        try fd.mockRevokeDMABuf(buffer)
        expectKernelError(.operationNotSupportedByDevice, .mapFile) { try fd.mapFile(buffer.descriptor, offset: 0, length: buffer.length, into: ioas) }
        try fd.mockRevokeDMABuf(buffer, revoked: false)
        _ = try fd.mapFile(buffer.descriptor, offset: 0, length: buffer.length, into: ioas)
        #expect(try fd.unmapAll(from: ioas) == 2 * buffer.length)

        // Two at once are told apart; closing one frees its descriptor.
        let second = try fd.mockDMABuf(length: UInt32(page))
        #expect(second.descriptor != buffer.descriptor)
        let closed = second.descriptor
        try second.close()
        // Other suites run at the same time and may get the freed number for a file of theirs:
        // what must be gone is a dma-buf at that number.
        let after = readlink("/proc/self/fd/\(closed)", &link, 63)
        #expect(after < 0 || !String(decoding: link.prefix(max(after, 0)).map { UInt8(bitPattern: $0) }, as: UTF8.self).hasPrefix("/dmabuf:"))
    }
}
