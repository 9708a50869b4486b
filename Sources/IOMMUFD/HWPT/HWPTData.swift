import CIOMMUFD

/// Flags of `IOMMU_HWPT_ALLOC` (`enum iommufd_hwpt_alloc_flags`).
///
/// `IOMMU_HWPT_FAULT_ID_VALID` is not here: it is set when a fault queue is passed.
public struct HWPTAllocationFlags: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// The HWPT can be the parent (stage 2) of nested HWPTs and vIOMMUs. `IOMMU_HWPT_ALLOC_NEST_PARENT`.
    public static let nestParent = Self(rawValue: CIO_IOMMU_HWPT_ALLOC_NEST_PARENT)
    /// The HWPT can track dirty pages. `IOMMU_HWPT_ALLOC_DIRTY_TRACKING`.
    public static let dirtyTracking = Self(rawValue: CIO_IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    /// The HWPT can be attached to a PASID of the device. `IOMMU_HWPT_ALLOC_PASID`.
    public static let pasid = Self(rawValue: CIO_IOMMU_HWPT_ALLOC_PASID)

    static let faultIDValid = CIO_IOMMU_HWPT_FAULT_ID_VALID

    public var description: String {
        flagDescription(rawValue, [(Self.nestParent.rawValue, "nestParent"), (Self.dirtyTracking.rawValue, "dirtyTracking"),
                                   (Self.pasid.rawValue, "pasid"), (Self.faultIDValid, "faultIDValid")])
    }
}

/// The format of the driver data passed to `IOMMU_HWPT_ALLOC` (`enum iommu_hwpt_data_type`).
public struct HWPTDataType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// No data: a paging HWPT the kernel manages. `IOMMU_HWPT_DATA_NONE`.
    public static let none = Self(rawValue: CIO_IOMMU_HWPT_DATA_NONE)
    /// An Intel VT-d stage-1 table. `IOMMU_HWPT_DATA_VTD_S1`.
    public static let intelVTdStage1 = Self(rawValue: CIO_IOMMU_HWPT_DATA_VTD_S1)
    /// An Arm SMMUv3 stream table entry. `IOMMU_HWPT_DATA_ARM_SMMUV3`.
    public static let armSMMUv3 = Self(rawValue: CIO_IOMMU_HWPT_DATA_ARM_SMMUV3)
    /// An AMD guest device table entry. `IOMMU_HWPT_DATA_AMD_GUEST`.
    public static let amdGuest = Self(rawValue: CIO_IOMMU_HWPT_DATA_AMD_GUEST)
    /// The mock IOMMU's format. `IOMMU_HWPT_DATA_SELFTEST`.
    public static let selftest = Self(rawValue: CIO_IOMMU_HWPT_DATA_SELFTEST)

    public var description: String {
        switch self {
        case .none: "none"
        case .intelVTdStage1: "intelVTdStage1"
        case .armSMMUv3: "armSMMUv3"
        case .amdGuest: "amdGuest"
        case .selftest: "selftest"
        default: "HWPTDataType(0x\(String(rawValue, radix: 16)))"
        }
    }
}

/// Flags of a VT-d stage-1 table (`IOMMU_VTD_S1_*`).
public struct VTdStage1Flags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    /// Supervisor requests. `IOMMU_VTD_S1_SRE`.
    public static let supervisorRequests = Self(rawValue: CIO_IOMMU_VTD_S1_SRE)
    /// Extended access flag. `IOMMU_VTD_S1_EAFE`.
    public static let extendedAccessFlag = Self(rawValue: CIO_IOMMU_VTD_S1_EAFE)
    /// Write protect. `IOMMU_VTD_S1_WPE`.
    public static let writeProtect = Self(rawValue: CIO_IOMMU_VTD_S1_WPE)
}

/// A guest's VT-d stage-1 page table (`struct iommu_hwpt_vtd_s1`).
public struct VTdStage1Table: Hashable, Sendable {
    public var flags: VTdStage1Flags
    /// The guest-physical address of the table's root.
    public var pageTableAddress: GuestPhysicalAddress
    /// Input address width: 48 (4-level) or 57 (5-level).
    public var addressWidth: UInt32
    public init(flags: VTdStage1Flags = [], pageTableAddress: GuestPhysicalAddress, addressWidth: UInt32) {
        self.flags = flags
        self.pageTableAddress = pageTableAddress
        self.addressWidth = addressWidth
    }
}

/// A guest's SMMUv3 stream table entry, two little-endian words (`struct iommu_hwpt_arm_smmuv3`).
public struct SMMUv3StreamTableEntry: Hashable, Sendable {
    public var word0: UInt64
    public var word1: UInt64
    public init(word0: UInt64, word1: UInt64) {
        self.word0 = word0
        self.word1 = word1
    }
}

/// A guest's AMD device table entry, four words (`struct iommu_hwpt_amd_guest`).
public struct AMDGuestDeviceTableEntry: Hashable, Sendable {
    public var words: (UInt64, UInt64, UInt64, UInt64)
    public init(_ w0: UInt64, _ w1: UInt64, _ w2: UInt64, _ w3: UInt64) { words = (w0, w1, w2, w3) }
    public static func == (a: Self, b: Self) -> Bool { a.words == b.words }
    public func hash(into h: inout Hasher) {
        h.combine(words.0); h.combine(words.1); h.combine(words.2); h.combine(words.3)
    }
}

/// The mock IOMMU's HWPT data (`struct iommu_hwpt_selftest`).
public struct SelftestHWPTData: Hashable, Sendable {
    /// The kernel's default IOTLB value (`IOMMU_TEST_IOTLB_DEFAULT`).
    public static let defaultIOTLB = CIO_IOMMU_TEST_IOTLB_DEFAULT
    /// The value every IOTLB entry of a nested mock HWPT starts with.
    public var iotlb: UInt32
    /// Page-table format of a paging mock HWPT: 0 default, 1 huge (`MOCK_IOMMUPT_*`).
    public var pageTableType: UInt32
    public init(iotlb: UInt32 = Self.defaultIOTLB, pageTableType: UInt32 = 0) {
        self.iotlb = iotlb
        self.pageTableType = pageTableType
    }
}

/// Driver data for `IOMMU_HWPT_ALLOC`, one case per format.
public enum HWPTData: Hashable, Sendable {
    case intelVTdStage1(VTdStage1Table)
    case armSMMUv3(SMMUv3StreamTableEntry)
    case amdGuest(AMDGuestDeviceTableEntry)
    case selftest(SelftestHWPTData)
    /// Bytes passed as they are, for formats this package does not name.
    case raw(type: HWPTDataType, bytes: [UInt8])

    public var type: HWPTDataType {
        switch self {
        case .intelVTdStage1: .intelVTdStage1
        case .armSMMUv3: .armSMMUv3
        case .amdGuest: .amdGuest
        case .selftest: .selftest
        case .raw(let type, _): type
        }
    }

    /// Calls `body` with the data encoded as the kernel's struct, on the stack (or the raw bytes).
    func withEncoded<R>(
        _ operation: IOMMUFDError.Operation, _ body: (UnsafeRawBufferPointer) throws(IOMMUFDError) -> R
    ) throws(IOMMUFDError) -> R {
        switch self {
        case .intelVTdStage1(let t):
            var s = cio_iommu_hwpt_vtd_s1()
            s.flags = t.flags.rawValue
            s.pgtbl_addr = t.pageTableAddress.rawValue
            s.addr_width = t.addressWidth
            return try encoded(s, body)
        case .armSMMUv3(let e):
            var s = cio_iommu_hwpt_arm_smmuv3()
            s.ste = (e.word0.littleEndian, e.word1.littleEndian)
            return try encoded(s, body)
        case .amdGuest(let e):
            var s = cio_iommu_hwpt_amd_guest()
            s.dte = (e.words.0.littleEndian, e.words.1.littleEndian, e.words.2.littleEndian, e.words.3.littleEndian)
            return try encoded(s, body)
        case .selftest(let d):
            var s = cio_iommu_hwpt_selftest()
            s.iotlb = d.iotlb
            s.pagetable_type = d.pageTableType
            return try encoded(s, body)
        case .raw(_, let bytes):
            // The kernel's first check (before any id is looked up): a data type needs data.
            guard !bytes.isEmpty else {
                throw IOMMUFDError(operation, request: .hwptAlloc, reason: .invalidArgument("a data type without data"))
            }
            return try bytes.withUnsafeBytes { b in Result { () throws(IOMMUFDError) -> R in try body(b) } }.get()
        }
    }
}

@inline(__always)
func encoded<T, R>(_ value: T, _ body: (UnsafeRawBufferPointer) throws(IOMMUFDError) -> R) throws(IOMMUFDError) -> R {
    var v = value
    return try withUnsafeBytes(of: &v) { (b) throws(IOMMUFDError) -> R in try body(b) }
}
