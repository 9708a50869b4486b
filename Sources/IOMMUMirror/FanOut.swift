public import IOMMUFD

/// `IOMMU_IOAS_COPY` from one IOAS against a second `IOMMU_IOAS_MAP`, timed on the IOAS a
/// mirror will fan out to, so ``IOASTarget/FanOut`` is chosen by measurement.
///
/// The answer depends on the hardware and the area size: on the test VM's mock domain a copy
/// of a 4 KiB area cost about what a map does and a copy of a 2 MiB area several times more
/// (the kernel reads the source's pages back one by one), while a map pins the pages again.
public struct FanOutMeasurement: Hashable, Sendable, CustomStringConvertible {
    public var areaBytes: UInt64
    public var samples: Int
    /// Median time of one `IOMMU_IOAS_MAP` of an area into the destination.
    public var mapNanoseconds: UInt64
    /// Median time of one `IOMMU_IOAS_COPY` of the same area from the source.
    public var copyNanoseconds: UInt64

    public init(areaBytes: UInt64, samples: Int, mapNanoseconds: UInt64, copyNanoseconds: UInt64) {
        self.areaBytes = areaBytes
        self.samples = samples
        self.mapNanoseconds = mapNanoseconds
        self.copyNanoseconds = copyNanoseconds
    }

    /// The cheaper way: `.copy` only when it measured faster than a map.
    public var choice: IOASTarget.FanOut { copyNanoseconds < mapNanoseconds ? .copy : .map }

    public var description: String {
        "\(areaBytes / 1024) KiB areas x \(samples): map \(mapNanoseconds) ns, copy \(copyNanoseconds) ns (median): \(choice == .copy ? "copy" : "map")"
    }

    /// Maps `samples` areas of `areaBytes` of fresh anonymous memory at `iova` into `source`,
    /// then fills each into `destination` by a map and by a copy (in alternating order,
    /// unmapping after each) and takes the medians. Attach the devices first: a domain is what
    /// makes a map pin and a copy fill a second page table. The range from `iova` must be free
    /// in both IOAS; everything is unmapped again.
    /// - Throws: ``IOMMUFDError`` of a call, or of `mmap` as operation `probe`.
    ///
    /// The corresponding ioctls are `IOMMU_IOAS_MAP`, `IOMMU_IOAS_COPY` and `IOMMU_IOAS_UNMAP`.
    public static func measure(_ iommufd: borrowing IOMMUFDContext, from source: IOASID, to destination: IOASID,
                               at iova: IOVA, areaBytes: UInt64 = PageSize.system.bytes,
                               samples: Int = 16) throws(IOMMUFDError) -> FanOutMeasurement {
        precondition(samples > 0 && areaBytes > 0, "at least one sample of a non-empty area")
        let kernel = iommufd.kernel
        let total = Int(areaBytes) * samples
        let memory: UnsafeMutableRawPointer
        switch kernel.mmap(length: total, protection: 3 /* PROT_READ | PROT_WRITE */, flags: 0x22 /* MAP_PRIVATE | MAP_ANONYMOUS */,
                           fd: -1, offset: 0) {
        case .success(let p): memory = p
        case .failure(let e): throw IOMMUFDError(.probe, errno: e)
        }
        defer { _ = kernel.munmap(memory, length: total) }
        let whole = try! IOVARange(base: iova, length: UInt64(total))
        defer {
            _ = try? iommufd.unmap(whole, from: destination)
            _ = try? iommufd.unmap(whole, from: source)
        }
        for k in 0..<samples {
            let host = try! HostRange(base: HostAddress(memory + k * Int(areaBytes)), length: areaBytes)
            _ = try iommufd.map(host, into: source, at: IOVA(iova.rawValue + UInt64(k) * areaBytes))
        }
        let clock = ContinuousClock()
        var maps: [Duration] = [], copies: [Duration] = []
        for k in 0..<samples {
            let at = IOVA(iova.rawValue + UInt64(k) * areaBytes)
            let area = try! IOVARange(base: at, length: areaBytes)
            let host = try! HostRange(base: HostAddress(memory + k * Int(areaBytes)), length: areaBytes)
            for copyFirst in [k % 2 == 1, k % 2 == 0] {
                let start = clock.now
                if copyFirst {
                    _ = try iommufd.copy(area, from: source, to: destination, at: at)
                    copies.append(clock.now - start)
                } else {
                    _ = try iommufd.map(host, into: destination, at: at)
                    maps.append(clock.now - start)
                }
                _ = try iommufd.unmap(area, from: destination)
            }
        }
        func median(_ d: [Duration]) -> UInt64 {
            let m = d.sorted()[d.count / 2].components
            return UInt64(max(m.seconds, 0)) * 1_000_000_000 + UInt64(max(m.attoseconds, 0) / 1_000_000_000)
        }
        return FanOutMeasurement(areaBytes: areaBytes, samples: samples, mapNanoseconds: median(maps), copyNanoseconds: median(copies))
    }
}
