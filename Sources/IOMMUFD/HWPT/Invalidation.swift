import CIOMMUFD
import SystemPackage

/// The format of invalidation entries (`enum iommu_hwpt_invalidate_data_type` and the vIOMMU's).
public struct InvalidationDataType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// VT-d stage-1 cache invalidation on a nested HWPT. `IOMMU_HWPT_INVALIDATE_DATA_VTD_S1`.
    public static let intelVTdStage1 = Self(rawValue: CIO_IOMMU_HWPT_INVALIDATE_DATA_VTD_S1)
    /// SMMUv3 command-queue entries on a vIOMMU. `IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3`.
    public static let armSMMUv3 = Self(rawValue: CIO_IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3)
    /// The mock IOMMU's entries (nested HWPT IOTLB, or vIOMMU device cache). `IOMMU_*_INVALIDATE_DATA_SELFTEST`.
    public static let selftest = Self(rawValue: CIO_IOMMU_HWPT_INVALIDATE_DATA_SELFTEST)
    public var description: String {
        switch self {
        case .intelVTdStage1: "intelVTdStage1"
        case .armSMMUv3: "armSMMUv3"
        case .selftest: "selftest"
        default: "InvalidationDataType(0x\(String(rawValue, radix: 16)))"
        }
    }
}

/// One VT-d stage-1 invalidation (`struct iommu_hwpt_vtd_s1_invalidate`).
public struct VTdStage1Invalidation: Hashable, Sendable {
    /// Guest IOVA of the first page, 4 KiB aligned.
    public var address: UInt64
    /// Pages to invalidate; `UInt64.max` with address 0 means all.
    public var pageCount: UInt64
    /// Only leaf entries changed (`IOMMU_VTD_INV_FLAGS_LEAF`).
    public var leafOnly: Bool
    public init(address: UInt64, pageCount: UInt64, leafOnly: Bool = false) {
        self.address = address
        self.pageCount = pageCount
        self.leafOnly = leafOnly
    }
}

/// One SMMUv3 command (`struct iommu_viommu_arm_smmuv3_invalidate`), as the guest queued it.
public struct SMMUv3Command: Hashable, Sendable {
    public var word0: UInt64
    public var word1: UInt64
    public init(word0: UInt64, word1: UInt64) {
        self.word0 = word0
        self.word1 = word1
    }
}

/// One invalidation of a mock nested HWPT's IOTLB (`struct iommu_hwpt_invalidate_selftest`).
public struct SelftestInvalidation: Hashable, Sendable {
    /// Raw flags; bit 0 (`IOMMU_TEST_INVALIDATE_FLAG_ALL`) clears every entry. Other bits are
    /// refused by the mock (`EOPNOTSUPP`), which makes a bad entry for tests.
    public var flags: UInt32
    /// The entry to clear, 0...3.
    public var iotlbID: UInt32
    public init(flags: UInt32 = 0, iotlbID: UInt32) {
        self.flags = flags
        self.iotlbID = iotlbID
    }
    /// Clears every IOTLB entry.
    public static let all = Self(flags: CIO_IOMMU_TEST_INVALIDATE_FLAG_ALL, iotlbID: 0)
}

/// One invalidation of a mock device's cache through a vIOMMU (`struct iommu_viommu_invalidate_selftest`).
public struct SelftestDeviceCacheInvalidation: Hashable, Sendable {
    /// Raw flags; bit 0 clears every entry.
    public var flags: UInt32
    /// The device's virtual id in the vIOMMU (its vDEVICE's `virtualID`).
    public var virtualDeviceID: UInt32
    /// The entry to clear, 0...3.
    public var cacheID: UInt32
    public init(flags: UInt32 = 0, virtualDeviceID: UInt32, cacheID: UInt32) {
        self.flags = flags
        self.virtualDeviceID = virtualDeviceID
        self.cacheID = cacheID
    }
}

/// An array of invalidation requests of one format.
///
/// An empty array is valid: the kernel then only checks that the HWPT or vIOMMU takes the format.
public enum InvalidationRequests: Hashable, Sendable {
    case intelVTdStage1([VTdStage1Invalidation])
    case armSMMUv3([SMMUv3Command])
    case selftest([SelftestInvalidation])
    case selftestDeviceCache([SelftestDeviceCacheInvalidation])
    /// `count` entries of `entryLength` bytes each, in `bytes`, passed as they are.
    case raw(type: InvalidationDataType, entryLength: Int, bytes: [UInt8])

    /// The most entries one call may carry (the kernel's `IOMMU_HWPT_INVALIDATE_ENTRY_NUM_MAX`).
    public static let maximumCount = 1 << 19
    /// The largest entry the kernel accepts (one page).
    public static let maximumEntryLength = 4096

    public var type: InvalidationDataType {
        switch self {
        case .intelVTdStage1: .intelVTdStage1
        case .armSMMUv3: .armSMMUv3
        case .selftest, .selftestDeviceCache: .selftest
        case .raw(let type, _, _): type
        }
    }

    public var count: Int {
        switch self {
        case .intelVTdStage1(let a): a.count
        case .armSMMUv3(let a): a.count
        case .selftest(let a): a.count
        case .selftestDeviceCache(let a): a.count
        case .raw(_, let length, let bytes): length == 0 ? 0 : bytes.count / length
        }
    }

    var entryLength: Int {
        switch self {
        case .intelVTdStage1: MemoryLayout<cio_iommu_hwpt_vtd_s1_invalidate>.size
        case .armSMMUv3: MemoryLayout<cio_iommu_viommu_arm_smmuv3_invalidate>.size
        case .selftest: MemoryLayout<cio_iommu_hwpt_invalidate_selftest>.size
        case .selftestDeviceCache: MemoryLayout<cio_iommu_viommu_invalidate_selftest>.size
        case .raw(_, let length, _): length
        }
    }

    /// Writes entry `i` into `p` (typed cases only).
    func store(_ i: Int, _ p: UnsafeMutableRawPointer) {
        switch self {
        case .intelVTdStage1(let a):
            var s = cio_iommu_hwpt_vtd_s1_invalidate()
            s.addr = a[i].address
            s.npages = a[i].pageCount
            s.flags = a[i].leafOnly ? CIO_IOMMU_VTD_INV_FLAGS_LEAF : 0
            p.storeBytes(of: s, as: cio_iommu_hwpt_vtd_s1_invalidate.self)
        case .armSMMUv3(let a):
            var s = cio_iommu_viommu_arm_smmuv3_invalidate()
            s.cmd = (a[i].word0.littleEndian, a[i].word1.littleEndian)
            p.storeBytes(of: s, as: cio_iommu_viommu_arm_smmuv3_invalidate.self)
        case .selftest(let a):
            p.storeBytes(of: cio_iommu_hwpt_invalidate_selftest(flags: a[i].flags, iotlb_id: a[i].iotlbID),
                         as: cio_iommu_hwpt_invalidate_selftest.self)
        case .selftestDeviceCache(let a):
            p.storeBytes(of: cio_iommu_viommu_invalidate_selftest(flags: a[i].flags, vdev_id: a[i].virtualDeviceID,
                                                                  cache_id: a[i].cacheID),
                         as: cio_iommu_viommu_invalidate_selftest.self)
        case .raw:
            break
        }
    }
}

/// What the kernel did with an array of invalidation requests.
///
/// The kernel handles entries in order and stops at the first it refuses; ``handled`` says how
/// many went through (`entry_num` after the call), also when ``error`` is set.
public struct InvalidationOutcome: Hashable, Sendable {
    /// Entries passed.
    public let requested: Int
    /// Entries the kernel handled before it stopped.
    public let handled: Int
    /// Why the kernel stopped, or `nil` when it handled every entry.
    public let error: IOMMUFDError?

    public var succeeded: Bool { error == nil }

    /// The number handled, or the kernel's error.
    public func get() throws(IOMMUFDError) -> Int {
        if let error { throw error }
        return handled
    }
}

extension IOMMUFDContext {
    /// Invalidates the caches of a nested HWPT after the guest changed its stage-1 table.
    ///
    /// Entries are copied into one stack buffer (heap only for very large arrays) and sent in
    /// one call.
    ///
    /// - Returns: How many entries the kernel handled and, if it stopped early, why: `EINVAL`
    ///   for a bad entry or a HWPT that is not nested, `EOPNOTSUPP` for unknown entry flags.
    /// - Throws: ``IOMMUFDError`` before the call (nothing sent) for more than
    ///   ``InvalidationRequests/maximumCount`` entries, or raw entries of a length outside
    ///   1...4096 or bytes that are not a whole number of entries.
    ///
    /// The corresponding ioctl is `IOMMU_HWPT_INVALIDATE`.
    public func invalidate(_ hwpt: HWPTID, _ requests: InvalidationRequests) throws(IOMMUFDError) -> InvalidationOutcome {
        try invalidate(hwpt.rawValue, requests)
    }

    /// Invalidates caches owned by a vIOMMU (device caches, ATC, configuration caches) with
    /// commands the guest queued; see ``invalidate(_:_:)-(HWPTID,_)``.
    ///
    /// The corresponding ioctl is `IOMMU_HWPT_INVALIDATE` on the vIOMMU's id.
    public func invalidate(_ viommu: VIOMMUID, _ requests: InvalidationRequests) throws(IOMMUFDError) -> InvalidationOutcome {
        try invalidate(viommu.rawValue, requests)
    }

    private func invalidate(_ id: UInt32, _ requests: InvalidationRequests) throws(IOMMUFDError) -> InvalidationOutcome {
        let entryLength = requests.entryLength
        let count = requests.count
        // The kernel's checks made before any id is looked up (entry length and count, for a
        // nonempty array), and whole raw entries, which the call could not express otherwise.
        if case .raw(_, let length, let bytes) = requests, !bytes.isEmpty {
            guard length >= 1, length <= InvalidationRequests.maximumEntryLength, bytes.count % length == 0 else {
                throw IOMMUFDError(.invalidate, request: .hwptInvalidate,
                                   reason: .invalidArgument("\(bytes.count) bytes are not whole entries of length \(length) (1...\(InvalidationRequests.maximumEntryLength))"))
            }
        }
        guard count <= InvalidationRequests.maximumCount else {
            throw IOMMUFDError(.invalidate, request: .hwptInvalidate,
                               reason: .invalidArgument("\(count) entries, at most \(InvalidationRequests.maximumCount) per call"))
        }
        return withUnsafeTemporaryAllocation(byteCount: max(count * entryLength, 8), alignment: 8) { buffer in
            if case .raw(_, _, let bytes) = requests {
                bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
            } else {
                for i in 0..<count { requests.store(i, buffer.baseAddress! + i * entryLength) }
            }
            var cmd = makeCommand(cio_iommu_hwpt_invalidate.self)
            cmd.hwpt_id = id
            cmd.data_uptr = count == 0 ? 0 : UInt64(UInt(bitPattern: buffer.baseAddress))
            cmd.data_type = requests.type.rawValue
            cmd.entry_len = UInt32(entryLength)
            cmd.entry_num = UInt32(count)
            let r = withUnsafeMutableBytes(of: &cmd) { ioctl(.hwptInvalidate, buffer: $0.baseAddress!, .invalidate) }
            guard case .failure(let error) = r else {
                return InvalidationOutcome(requested: count, handled: Int(cmd.entry_num), error: nil)
            }
            // The handler writes back how many entries it took; a call refused before the
            // handler ran (unknown ioctl, bad size, bad pointer) took none.
            let beforeHandler: [Errno] = [.inappropriateIOCTLForDevice, .argListTooLong, .badAddress]
            let handled = error.errno.map(beforeHandler.contains) == true ? 0 : min(Int(cmd.entry_num), count)
            return InvalidationOutcome(requested: count, handled: handled, error: error)
        }
    }
}
