#if canImport(Glibc)
import Glibc
#endif
import IOMMUFD
import Testing

@Suite struct AddressRangeTests {
    @Test func initsAndTheTopOfTheSpace() throws {
        #expect(throws: AddressRangeError.empty) { try IOVARange(base: IOVA(0x1000), length: 0) }
        #expect(throws: AddressRangeError.empty) { try IOVARange(first: IOVA(2), last: IOVA(1)) }
        #expect(throws: AddressRangeError.overflow(base: .max, length: 2)) { try IOVARange(base: IOVA(.max), length: 2) }
        // The last byte of the space is reachable; one more byte overflows.
        let top = try IOVARange(base: IOVA(.max - 0xfff), length: 0x1000)
        #expect(top.last == IOVA(.max) && top.end == nil && top.length == 0x1000)
        #expect(throws: AddressRangeError.self) { try IOVARange(base: IOVA(.max - 0xfff), length: 0x1001) }
        let all = IOVARange.all
        #expect(all.length == nil && all.end == nil && all.first == IOVA(0))
        let r = try IOVARange(base: IOVA(0x1000), length: 0x2000)
        #expect(r.end == IOVA(0x3000) && r.last == IOVA(0x2fff) && r.base == IOVA(0x1000))
        #expect("\(r)" == "[0x1000...0x2fff]")
        #expect(IOVA(.max).advanced(by: 1) == nil && IOVA(1).advanced(by: 2) == IOVA(3))
        #expect(IOVA(5).distance(from: IOVA(2)) == 3)
    }

    @Test func overlapContainmentIntersection() throws {
        let a = try IOVARange(first: IOVA(10), last: IOVA(20))
        let b = try IOVARange(first: IOVA(20), last: IOVA(30))
        let c = try IOVARange(first: IOVA(21), last: IOVA(30))
        #expect(a.overlaps(b) && b.overlaps(a) && !a.overlaps(c))
        #expect(a.intersection(b) == (try IOVARange(first: IOVA(20), last: IOVA(20))))
        #expect(a.intersection(c) == nil)
        #expect(a.contains(IOVA(10)) && a.contains(IOVA(20)) && !a.contains(IOVA(21)))
        #expect(IOVARange.all.contains(a) && !a.contains(b))
        #expect(IOVARange.all.intersection(c) == c)
    }

    @Test func alignment() throws {
        let aligned = try IOVARange(base: IOVA(0x20_0000), length: 0x20_0000)
        #expect(aligned.isAligned(to: .size2M) && aligned.isAligned(to: .size4K))
        let half = try IOVARange(base: IOVA(0x20_0000), length: 0x1000)
        #expect(!half.isAligned(to: .size2M) && half.isAligned(to: .size4K))
        #expect(throws: AddressRangeError.misaligned(base: 0x20_0000, length: 0x1000, alignment: 0x20_0000)) {
            try half.checkAligned(to: .size2M)
        }
        #expect(IOVARange.all.isAligned(to: .size1G))
        let topPage = try IOVARange(base: IOVA(.max - 0xfff), length: 0x1000)
        #expect(topPage.isAligned(to: .size4K) && !topPage.isAligned(to: .size2M))
        #expect(IOVA(0x1234).alignedDown(to: .size4K) == IOVA(0x1000))
        #expect("\(AddressRangeError.misaligned(base: 0x1000, length: 0x10, alignment: 0x1000))".contains("4K-aligned"))
        #expect("\(AddressRangeError.overflow(base: 0xff, length: 0x2))" == "range 0xff + 0x2 passes 2^64")
    }
}

@Suite struct PageSizeTests {
    @Test func sizes() {
        #expect(PageSize(rawValue: 0) == nil && PageSize(rawValue: 3) == nil)
        #expect(PageSize(rawValue: 4096) == .size4K)
        #expect(PageSize.size2M.bytes == 2 << 20 && PageSize.size1G.shift == 30)
        #expect(["\(PageSize.size4K)", "\(PageSize.size2M)", "\(PageSize.size1G)", "\(PageSize(shift: 3))", "\(PageSize(shift: 63))"]
                == ["4K", "2M", "1G", "8", "8E"])
        #expect(PageSize.size4K < .size64K)
        #expect(PageSize.system.bytes == UInt64(sysconf(Int32(_SC_PAGESIZE))))
    }

    @Test func sets() {
        let set = PageSizeSet([.size4K, .size2M, .size1G])
        #expect(set.rawValue == 0x4020_1000)
        #expect(set.sizes == [.size4K, .size2M, .size1G] && set.smallest == .size4K)
        #expect(set.contains(.size2M) && !set.contains(.size64K))
        #expect("\(set)" == "[4K, 2M, 1G]")
        #expect(PageSizeSet(rawValue: 0).smallest == nil && "\(PageSizeSet(rawValue: 0))" == "[]")
    }
}

@Suite struct PCIAddressTests {
    @Test(arguments: ["0000:00:1f.3", "abcd:ff:1f.7", "0001:02:00.0"])
    func roundTrip(_ text: String) throws {
        let a = try #require(PCIAddress(text))
        #expect(a.description == text)
        #expect(PCIAddress(a.description) == a)
    }

    @Test func parsing() throws {
        #expect(PCIAddress("00:02.0") == PCIAddress(bus: 0, device: 2, function: 0))
        #expect(PCIAddress("0000:03:00.1")?.sysfsPath == "/sys/bus/pci/devices/0000:03:00.1")
        for bad in ["", "0000:00:20.0", "0000:00:1f.8", "0000:100:00.0", "10000:00:00.0", "0:0:0:0.0", "00:00", "00:00.", "zz:00.0", "00:00.0.1", "0000:00:00.a"] {
            #expect(PCIAddress(bad) == nil, "\(bad)")
        }
        #expect(PCIAddress(domain: 0x12, bus: 3, device: 4, function: 5).description == "0012:03:04.5")
    }
}

@Suite struct DescriptionTests {
    @Test func flagSets() {
        #expect("\(MapAccess([.readable, .writeable]))" == "[readable, writeable]")
        #expect("\(MapAccess(rawValue: 0x10 | MapAccess.writeable.rawValue))" == "[writeable, 0x10]")
        #expect("\(MapAccess())" == "[]")
        #expect("\(VFIODeviceFlags(rawValue: VFIODeviceFlags.pci.rawValue | 0x8000_0000))" == "[pci, 0x80000000]")
        #expect("\(VFIORegionFlags([.readable, .mappable]))" == "[readable, mappable]")
    }

    @Test func requests() {
        #expect("\(IoctlRequest.ioasMap)" == "IOMMU_IOAS_MAP")
        #expect("\(IoctlRequest.vfioDeviceBindIOMMUFD)" == "VFIO_DEVICE_BIND_IOMMUFD")
        #expect("\(IoctlRequest(rawValue: 0x3bff))" == "ioctl(0x3bff)")
        #expect(Set(IoctlRequest.iommufdRequests.map(\.description)).count == IoctlRequest.iommufdRequests.count)
        #expect(IoctlRequest.iommufdRequests.allSatisfy { $0.description.hasPrefix("IOMMU_") })
        #expect(["\(VFIORegionIndex.bar(2))", "\(VFIORegionIndex.config)", "\(VFIORegionIndex(rawValue: 42))"] == ["BAR2", "config", "region 42"])
        #expect("\(RLimitMode.perProcess)" == "perProcess" && "\(RLimitMode(rawValue: 7))" == "RLimitMode(7)")
        #expect("\(IOASID(3))" == "IOASID(3)")
    }

    @Test func errors() {
        let e = IOMMUFDError(.unmap, request: .ioasUnmap, errno: .noSuchFileOrDirectory)
        #expect("\(e)".hasPrefix("IOMMU_IOAS_UNMAP (unmap) failed: ENOENT (errno 2, ") && "\(e)".contains("cuts through"), "\(e)")
        #expect(!e.isNotSupported)
        #expect(IOMMUFDError(.map, request: .hwptAlloc, errno: .notSupported).isNotSupported)
        #expect(IOMMUFDError(.map, errno: .inappropriateIOCTLForDevice).isNotSupported)
        #expect("\(IOMMUFDError(.adopt, request: .option, reason: .notAnIOMMUFD))".contains("not an iommufd"))
        // A refusal before the call carries the errno the kernel would give (EINVAL by default).
        let refused = IOMMUFDError(.map, reason: .invalidArgument("x"))
        #expect(refused.errno == .invalidArgument && refused.isRefusedBeforeCall && refused.code == .invalidArgument)
        #expect(IOMMUFDError(.map, reason: .invalidArgument("x", errno: .notSupported)).isNotSupported)
        #expect(IOMMUFDError(.map, reason: .invalidRange(.overflow(base: 1, length: .max))).errno == .overflow)
        #expect(IOMMUFDError(.map, reason: .unexpectedResult("y")).errno == nil)
    }
}

@Suite struct DMABufferTests {
    @Test func anonymousMemory() throws {
        let b = try DMABuffer(length: Int(2 * page))
        let (memfd, pageSize, length, address, range) = (b.memfd, b.pageSize, b.length, b.address, b.range)
        #expect(memfd == nil && pageSize == .system && length == Int(2 * page))
        #expect(address.isAligned(to: .system))
        #expect(range.length == 2 * page && range.first == address)
        b.withUnsafeMutableBytes { $0[Int(page) + 1] = 0x5a }
        let readBack = b.withUnsafeMutableBytes { $0[Int(page) + 1] }
        #expect(readBack == 0x5a)
        #expect(address.unsafePointer!.load(fromByteOffset: Int(page) + 1, as: UInt8.self) == 0x5a)
    }

    @Test func lengthsAreChecked() {
        for bad in [0, -4096, 1, Int(page) + 1] {
            let e = expectError { try DMABuffer(length: bad) }
            #expect(e?.operation == .allocateBuffer && e?.errno == .invalidArgument && e?.isRefusedBeforeCall == true, "\(bad)")
            #expect(expectError { try DMABuffer(memfdLength: bad) }?.operation == .allocateBuffer)
        }
        // A huge page buffer must be a multiple of the huge page.
        #expect(expectError({ try DMABuffer(length: Int(page), hugePages: .size2M) })?.code == .invalidArgument)
    }

    @Test func memfdWritesAreVisibleThroughTheFile() throws {
        let b = try DMABuffer(memfdLength: Int(page), name: "swift-iommufd-test")
        let maybeFD = b.memfd
        let fd = try #require(maybeFD)
        #expect(fcntl(fd, F_GETFD) & FD_CLOEXEC != 0)
        b.withUnsafeMutableBytes { $0[10] = 0xa5 }
        var byte: UInt8 = 0
        #expect(pread(fd, &byte, 1, 10) == 1)
        #expect(byte == 0xa5)
        var st = stat()
        #expect(fstat(fd, &st) == 0 && st.st_size == Int(page))
    }

    /// Huge pages are used when reserved; otherwise the failure is a typed kernel error.
    @Test func hugePagesWorkOrFailTyped() {
        do {
            let b = try DMABuffer(length: 2 << 20, hugePages: .size2M)
            let (size, address) = (b.pageSize, b.address)
            #expect(size == .size2M && address.isAligned(to: .size2M))
        } catch {
            #expect(error.operation == .allocateBuffer && error.errno != nil, "\(error)")
        }
        do {
            let b = try DMABuffer(memfdLength: 2 << 20, hugePages: .size2M)
            let (memfd, size) = (b.memfd, b.pageSize)
            #expect(memfd != nil && size == .size2M)
        } catch {
            #expect(error.operation == .allocateBuffer && error.errno != nil, "\(error)")
        }
    }
}
