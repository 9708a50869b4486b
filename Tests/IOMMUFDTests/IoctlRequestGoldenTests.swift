import IOMMUFD
import Testing

// Every `IoctlRequest` constant against a number worked out here, not read from CShims.
// The host tier's kernel model dispatches on the same constants, so two swapped constants
// would pass every model test; only the kernel (in the VM) or a golden like this notices.
//
// The rule, from <linux/ioctl.h>: `_IO(type, nr)` has no direction and no size bits, so it is
// `type << 8 | nr`. iommufd and VFIO both use type ';' (0x3B). The numbers are those of the
// 7.3 uAPI: <linux/iommufd.h> (`IOMMUFD_CMD_BASE` 0x80 + n), <linux/vfio.h> (`VFIO_BASE`
// 100 + n), and the mock IOMMU's `IOMMU_TEST_CMD` (`IOMMUFD_CMD_BASE + 32`, from the kernel's
// drivers/iommu/iommufd/iommufd_test.h).

private let semicolon: UInt = 0x3B
private func iommufd(_ n: UInt) -> UInt { semicolon << 8 | (0x80 + n) }
private func vfio(_ n: UInt) -> UInt { semicolon << 8 | (100 + n) }

struct GoldenRequest: Sendable, CustomTestStringConvertible {
    let request: IoctlRequest
    let name: String
    let number: UInt
    var testDescription: String { name }
}

private let iommufdGoldens: [GoldenRequest] = [
    GoldenRequest(request: .destroy, name: "IOMMU_DESTROY", number: iommufd(0)),
    GoldenRequest(request: .ioasAlloc, name: "IOMMU_IOAS_ALLOC", number: iommufd(1)),
    GoldenRequest(request: .ioasAllowIOVAs, name: "IOMMU_IOAS_ALLOW_IOVAS", number: iommufd(2)),
    GoldenRequest(request: .ioasCopy, name: "IOMMU_IOAS_COPY", number: iommufd(3)),
    GoldenRequest(request: .ioasIOVARanges, name: "IOMMU_IOAS_IOVA_RANGES", number: iommufd(4)),
    GoldenRequest(request: .ioasMap, name: "IOMMU_IOAS_MAP", number: iommufd(5)),
    GoldenRequest(request: .ioasUnmap, name: "IOMMU_IOAS_UNMAP", number: iommufd(6)),
    GoldenRequest(request: .option, name: "IOMMU_OPTION", number: iommufd(7)),
    GoldenRequest(request: .vfioIOAS, name: "IOMMU_VFIO_IOAS", number: iommufd(8)),
    GoldenRequest(request: .hwptAlloc, name: "IOMMU_HWPT_ALLOC", number: iommufd(9)),
    GoldenRequest(request: .getHWInfo, name: "IOMMU_GET_HW_INFO", number: iommufd(10)),
    GoldenRequest(request: .hwptSetDirtyTracking, name: "IOMMU_HWPT_SET_DIRTY_TRACKING", number: iommufd(11)),
    GoldenRequest(request: .hwptGetDirtyBitmap, name: "IOMMU_HWPT_GET_DIRTY_BITMAP", number: iommufd(12)),
    GoldenRequest(request: .hwptInvalidate, name: "IOMMU_HWPT_INVALIDATE", number: iommufd(13)),
    GoldenRequest(request: .faultQueueAlloc, name: "IOMMU_FAULT_QUEUE_ALLOC", number: iommufd(14)),
    GoldenRequest(request: .ioasMapFile, name: "IOMMU_IOAS_MAP_FILE", number: iommufd(15)),
    GoldenRequest(request: .viommuAlloc, name: "IOMMU_VIOMMU_ALLOC", number: iommufd(16)),
    GoldenRequest(request: .vdeviceAlloc, name: "IOMMU_VDEVICE_ALLOC", number: iommufd(17)),
    GoldenRequest(request: .ioasChangeProcess, name: "IOMMU_IOAS_CHANGE_PROCESS", number: iommufd(18)),
    GoldenRequest(request: .veventqAlloc, name: "IOMMU_VEVENTQ_ALLOC", number: iommufd(19)),
    GoldenRequest(request: .hwQueueAlloc, name: "IOMMU_HW_QUEUE_ALLOC", number: iommufd(20)),
    GoldenRequest(request: .ioasNoIOMMUGetPA, name: "IOMMU_IOAS_NOIOMMU_GET_PA", number: iommufd(21)),
]

private let otherGoldens: [GoldenRequest] = [
    GoldenRequest(request: .testCommand, name: "IOMMU_TEST_CMD", number: iommufd(32)),
    GoldenRequest(request: .vfioGetAPIVersion, name: "VFIO_GET_API_VERSION", number: vfio(0)),
    GoldenRequest(request: .vfioCheckExtension, name: "VFIO_CHECK_EXTENSION", number: vfio(1)),
    GoldenRequest(request: .vfioDeviceGetInfo, name: "VFIO_DEVICE_GET_INFO", number: vfio(7)),
    GoldenRequest(request: .vfioDeviceGetRegionInfo, name: "VFIO_DEVICE_GET_REGION_INFO", number: vfio(8)),
    GoldenRequest(request: .vfioDeviceGetIRQInfo, name: "VFIO_DEVICE_GET_IRQ_INFO", number: vfio(9)),
    GoldenRequest(request: .vfioDeviceSetIRQs, name: "VFIO_DEVICE_SET_IRQS", number: vfio(10)),
    GoldenRequest(request: .vfioDeviceReset, name: "VFIO_DEVICE_RESET", number: vfio(11)),
    GoldenRequest(request: .vfioDeviceGetPCIHotResetInfo, name: "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO", number: vfio(12)),
    GoldenRequest(request: .vfioDevicePCIHotReset, name: "VFIO_DEVICE_PCI_HOT_RESET", number: vfio(13)),
    GoldenRequest(request: .vfioDeviceFeature, name: "VFIO_DEVICE_FEATURE", number: vfio(17)),
    GoldenRequest(request: .vfioDeviceBindIOMMUFD, name: "VFIO_DEVICE_BIND_IOMMUFD", number: vfio(18)),
    GoldenRequest(request: .vfioDeviceAttachIOMMUFDPT, name: "VFIO_DEVICE_ATTACH_IOMMUFD_PT", number: vfio(19)),
    GoldenRequest(request: .vfioDeviceDetachIOMMUFDPT, name: "VFIO_DEVICE_DETACH_IOMMUFD_PT", number: vfio(20)),
]

@Suite("IoctlRequest goldens")
struct IoctlRequestGoldenTests {
    @Test(arguments: iommufdGoldens + otherGoldens)
    func numberAndName(_ golden: GoldenRequest) {
        #expect(golden.request.rawValue == golden.number,
                "\(golden.name): 0x\(String(golden.request.rawValue, radix: 16)), kernel says 0x\(String(golden.number, radix: 16))")
        #expect(golden.request.description == golden.name)
    }

    // The list the library offers as "every iommufd request" is exactly the uAPI's, in order,
    // so nothing that iterates it (feature probing, the model) skips or repeats a command.
    @Test func iommufdRequestsListIsTheUAPI() {
        #expect(IoctlRequest.iommufdRequests.map(\.rawValue) == iommufdGoldens.map(\.number))
    }

    // The helpers above, spelled out once by hand: IOMMU_IOAS_MAP is ';' (0x3B) and nr 0x85,
    // VFIO_DEVICE_GET_INFO is ';' and nr 107 (0x6B).
    @Test func ruleSpelledOut() {
        #expect(iommufd(5) == 0x3B85)
        #expect(vfio(7) == 0x3B6B)
    }

    @Test func unknownNumberIsDescribedInHex() {
        #expect(IoctlRequest(rawValue: iommufd(0x7f)).description == "ioctl(0x3bff)")
    }
}
