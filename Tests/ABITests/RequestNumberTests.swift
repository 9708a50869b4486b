import CIOMMUFD
import Testing

/// `_IO(type, nr)` worked out independently of <linux/ioctl.h>: no direction bits and a
/// size of 0 leave only the type in bits 8...15 and the number in bits 0...7.
func io(_ type: UInt8, _ nr: UInt32) -> UInt {
    (UInt(type) << 8) | UInt(nr)
}

/// iommufd and VFIO share the ioctl type ';' (0x3b).
let semicolon: UInt8 = 0x3b
let iommufdBase: UInt32 = 0x80
let vfioBase: UInt32 = 100

struct Request: Sendable, CustomTestStringConvertible {
    let name: String
    let value: UInt
    let nr: UInt32
    var testDescription: String { name }
}

let iommufdRequests: [Request] = [
    Request(name: "IOMMU_DESTROY", value: CIO_IOMMU_DESTROY, nr: iommufdBase + 0),
    Request(name: "IOMMU_IOAS_ALLOC", value: CIO_IOMMU_IOAS_ALLOC, nr: iommufdBase + 1),
    Request(name: "IOMMU_IOAS_ALLOW_IOVAS", value: CIO_IOMMU_IOAS_ALLOW_IOVAS, nr: iommufdBase + 2),
    Request(name: "IOMMU_IOAS_COPY", value: CIO_IOMMU_IOAS_COPY, nr: iommufdBase + 3),
    Request(name: "IOMMU_IOAS_IOVA_RANGES", value: CIO_IOMMU_IOAS_IOVA_RANGES, nr: iommufdBase + 4),
    Request(name: "IOMMU_IOAS_MAP", value: CIO_IOMMU_IOAS_MAP, nr: iommufdBase + 5),
    Request(name: "IOMMU_IOAS_UNMAP", value: CIO_IOMMU_IOAS_UNMAP, nr: iommufdBase + 6),
    Request(name: "IOMMU_OPTION", value: CIO_IOMMU_OPTION, nr: iommufdBase + 7),
    Request(name: "IOMMU_VFIO_IOAS", value: CIO_IOMMU_VFIO_IOAS, nr: iommufdBase + 8),
    Request(name: "IOMMU_HWPT_ALLOC", value: CIO_IOMMU_HWPT_ALLOC, nr: iommufdBase + 9),
    Request(name: "IOMMU_GET_HW_INFO", value: CIO_IOMMU_GET_HW_INFO, nr: iommufdBase + 10),
    Request(name: "IOMMU_HWPT_SET_DIRTY_TRACKING", value: CIO_IOMMU_HWPT_SET_DIRTY_TRACKING, nr: iommufdBase + 11),
    Request(name: "IOMMU_HWPT_GET_DIRTY_BITMAP", value: CIO_IOMMU_HWPT_GET_DIRTY_BITMAP, nr: iommufdBase + 12),
    Request(name: "IOMMU_HWPT_INVALIDATE", value: CIO_IOMMU_HWPT_INVALIDATE, nr: iommufdBase + 13),
    Request(name: "IOMMU_FAULT_QUEUE_ALLOC", value: CIO_IOMMU_FAULT_QUEUE_ALLOC, nr: iommufdBase + 14),
    Request(name: "IOMMU_IOAS_MAP_FILE", value: CIO_IOMMU_IOAS_MAP_FILE, nr: iommufdBase + 15),
    Request(name: "IOMMU_VIOMMU_ALLOC", value: CIO_IOMMU_VIOMMU_ALLOC, nr: iommufdBase + 16),
    Request(name: "IOMMU_VDEVICE_ALLOC", value: CIO_IOMMU_VDEVICE_ALLOC, nr: iommufdBase + 17),
    Request(name: "IOMMU_IOAS_CHANGE_PROCESS", value: CIO_IOMMU_IOAS_CHANGE_PROCESS, nr: iommufdBase + 18),
    Request(name: "IOMMU_VEVENTQ_ALLOC", value: CIO_IOMMU_VEVENTQ_ALLOC, nr: iommufdBase + 19),
    Request(name: "IOMMU_HW_QUEUE_ALLOC", value: CIO_IOMMU_HW_QUEUE_ALLOC, nr: iommufdBase + 20),
    Request(name: "IOMMU_IOAS_NOIOMMU_GET_PA", value: CIO_IOMMU_IOAS_NOIOMMU_GET_PA, nr: iommufdBase + 21),
    Request(name: "IOMMU_TEST_CMD", value: CIO_IOMMU_TEST_CMD, nr: iommufdBase + 32),
]

let vfioRequests: [Request] = [
    Request(name: "VFIO_GET_API_VERSION", value: CIO_VFIO_GET_API_VERSION, nr: vfioBase + 0),
    Request(name: "VFIO_CHECK_EXTENSION", value: CIO_VFIO_CHECK_EXTENSION, nr: vfioBase + 1),
    Request(name: "VFIO_DEVICE_GET_INFO", value: CIO_VFIO_DEVICE_GET_INFO, nr: vfioBase + 7),
    Request(name: "VFIO_DEVICE_GET_REGION_INFO", value: CIO_VFIO_DEVICE_GET_REGION_INFO, nr: vfioBase + 8),
    Request(name: "VFIO_DEVICE_GET_IRQ_INFO", value: CIO_VFIO_DEVICE_GET_IRQ_INFO, nr: vfioBase + 9),
    Request(name: "VFIO_DEVICE_SET_IRQS", value: CIO_VFIO_DEVICE_SET_IRQS, nr: vfioBase + 10),
    Request(name: "VFIO_DEVICE_RESET", value: CIO_VFIO_DEVICE_RESET, nr: vfioBase + 11),
    Request(name: "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO", value: CIO_VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, nr: vfioBase + 12),
    Request(name: "VFIO_DEVICE_PCI_HOT_RESET", value: CIO_VFIO_DEVICE_PCI_HOT_RESET, nr: vfioBase + 13),
    Request(name: "VFIO_DEVICE_FEATURE", value: CIO_VFIO_DEVICE_FEATURE, nr: vfioBase + 17),
    Request(name: "VFIO_DEVICE_BIND_IOMMUFD", value: CIO_VFIO_DEVICE_BIND_IOMMUFD, nr: vfioBase + 18),
    Request(name: "VFIO_DEVICE_ATTACH_IOMMUFD_PT", value: CIO_VFIO_DEVICE_ATTACH_IOMMUFD_PT, nr: vfioBase + 19),
    Request(name: "VFIO_DEVICE_DETACH_IOMMUFD_PT", value: CIO_VFIO_DEVICE_DETACH_IOMMUFD_PT, nr: vfioBase + 20),
]

@Suite("Request numbers")
struct RequestNumberTests {
    @Test(arguments: iommufdRequests + vfioRequests)
    func requestIsIOWithSemicolonType(_ request: Request) {
        #expect(request.value == io(semicolon, request.nr))
    }

    @Test func typesAndBases() {
        #expect(CIO_IOMMUFD_TYPE == semicolon)
        #expect(CIO_VFIO_TYPE == semicolon)
        #expect(CIO_IOMMUFD_CMD_BASE == 0x80)
        #expect(CIO_VFIO_BASE == 100)
    }

    // Values known from elsewhere (rust-vmm's and the project's notes), in decimal.
    @Test func knownValues() {
        #expect(CIO_IOMMU_IOAS_ALLOC == 15233)
        #expect(CIO_IOMMU_IOAS_MAP == 15237)
        #expect(CIO_IOMMU_IOAS_UNMAP == 15238)
        #expect(CIO_VFIO_DEVICE_GET_INFO == 15211)
        #expect(io(semicolon, 0x85) == 15237)
    }

    // The command numbers are the nr byte of the requests.
    @Test func commandNumbersMatchRequests() {
        let pairs: [(UInt32, UInt)] = [
            (CIO_IOMMUFD_CMD_DESTROY, CIO_IOMMU_DESTROY),
            (CIO_IOMMUFD_CMD_IOAS_ALLOC, CIO_IOMMU_IOAS_ALLOC),
            (CIO_IOMMUFD_CMD_IOAS_ALLOW_IOVAS, CIO_IOMMU_IOAS_ALLOW_IOVAS),
            (CIO_IOMMUFD_CMD_IOAS_COPY, CIO_IOMMU_IOAS_COPY),
            (CIO_IOMMUFD_CMD_IOAS_IOVA_RANGES, CIO_IOMMU_IOAS_IOVA_RANGES),
            (CIO_IOMMUFD_CMD_IOAS_MAP, CIO_IOMMU_IOAS_MAP),
            (CIO_IOMMUFD_CMD_IOAS_UNMAP, CIO_IOMMU_IOAS_UNMAP),
            (CIO_IOMMUFD_CMD_OPTION, CIO_IOMMU_OPTION),
            (CIO_IOMMUFD_CMD_VFIO_IOAS, CIO_IOMMU_VFIO_IOAS),
            (CIO_IOMMUFD_CMD_HWPT_ALLOC, CIO_IOMMU_HWPT_ALLOC),
            (CIO_IOMMUFD_CMD_GET_HW_INFO, CIO_IOMMU_GET_HW_INFO),
            (CIO_IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING, CIO_IOMMU_HWPT_SET_DIRTY_TRACKING),
            (CIO_IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP, CIO_IOMMU_HWPT_GET_DIRTY_BITMAP),
            (CIO_IOMMUFD_CMD_HWPT_INVALIDATE, CIO_IOMMU_HWPT_INVALIDATE),
            (CIO_IOMMUFD_CMD_FAULT_QUEUE_ALLOC, CIO_IOMMU_FAULT_QUEUE_ALLOC),
            (CIO_IOMMUFD_CMD_IOAS_MAP_FILE, CIO_IOMMU_IOAS_MAP_FILE),
            (CIO_IOMMUFD_CMD_VIOMMU_ALLOC, CIO_IOMMU_VIOMMU_ALLOC),
            (CIO_IOMMUFD_CMD_VDEVICE_ALLOC, CIO_IOMMU_VDEVICE_ALLOC),
            (CIO_IOMMUFD_CMD_IOAS_CHANGE_PROCESS, CIO_IOMMU_IOAS_CHANGE_PROCESS),
            (CIO_IOMMUFD_CMD_VEVENTQ_ALLOC, CIO_IOMMU_VEVENTQ_ALLOC),
            (CIO_IOMMUFD_CMD_HW_QUEUE_ALLOC, CIO_IOMMU_HW_QUEUE_ALLOC),
            (CIO_IOMMUFD_CMD_IOAS_NOIOMMU_GET_PA, CIO_IOMMU_IOAS_NOIOMMU_GET_PA),
        ]
        for (index, (command, request)) in pairs.enumerated() {
            #expect(command == iommufdBase + UInt32(index))
            #expect(request == io(semicolon, command))
        }
    }
}
