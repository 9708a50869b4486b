import IOMMUFD
import IOMMUFDModel
import IOMMUMirror
import Testing

@Suite struct FanOutTests {
    @Test("the fan-out measurement times both calls on the model and leaves both IOAS empty")
    func measuresOnTheModel() throws {
        let model = IOMMUFDModel(.init(pageSize: 4096, tracing: false))
        let iommufd = try IOMMUFDContext(kernel: model)
        let a = try iommufd.allocateIOAS(), b = try iommufd.allocateIOAS()
        model.resetCounters()
        let m = try FanOutMeasurement.measure(iommufd, from: a, to: b, at: IOVA(0x100_0000), areaBytes: 0x4000, samples: 5)
        #expect(m.samples == 5 && m.areaBytes == 0x4000)
        #expect(m.choice == (m.copyNanoseconds < m.mapNanoseconds ? .copy : .map))
        // 5 maps into the source, then per sample one map and one copy into the destination.
        #expect(model.ioctlCount(.ioasMap) == 10 && model.ioctlCount(.ioasCopy) == 5)
        #expect(try iommufd.unmapAll(from: a) == 0 && iommufd.unmapAll(from: b) == 0)
    }

    @Test("a measurement that cannot map reports the kernel's error")
    func failsTyped() throws {
        let model = IOMMUFDModel(.init(pageSize: 4096, tracing: false))
        let iommufd = try IOMMUFDContext(kernel: model)
        let a = try iommufd.allocateIOAS()
        #expect { try FanOutMeasurement.measure(iommufd, from: a, to: IOASID(rawValue: 999), at: IOVA(0x100_0000), samples: 2) } throws: { e in
            (e as? IOMMUFDError)?.errno == .noSuchFileOrDirectory
        }
        #expect(try iommufd.unmapAll(from: a) == 0)
    }
}
