/// Why vendor data from `IOMMU_GET_HW_INFO` could not be decoded.
public enum HardwareInfoDecodingError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Fewer bytes than the type's structure needs.
    case truncated(type: HardwareInfoKind, expected: Int, got: Int)

    public var description: String {
        switch self {
        case .truncated(let type, let expected, let got):
            "\(type) hardware info needs \(expected) bytes, got \(got)"
        }
    }
}

/// Little-endian reads from a byte array, each checked against the structure's declared size first.
struct LittleEndianBytes {
    let bytes: [UInt8]

    func u8(at offset: Int) -> UInt8 { bytes[offset] }
    func u32(at offset: Int) -> UInt32 {
        (0..<4).reduce(0) { $0 | UInt32(bytes[offset + $1]) << (8 * UInt32($1)) }
    }
    func u64(at offset: Int) -> UInt64 {
        (0..<8).reduce(0) { $0 | UInt64(bytes[offset + $1]) << (8 * UInt64($1)) }
    }

    /// Throws ``HardwareInfoDecodingError/truncated(type:expected:got:)`` when shorter than `size`.
    func require(_ size: Int, for type: HardwareInfoKind) throws(HardwareInfoDecodingError) {
        guard bytes.count >= size else { throw .truncated(type: type, expected: size, got: bytes.count) }
    }
}

/// `struct iommu_test_hw_info`: what the kernel's selftest mock IOMMU reports (8 bytes).
public struct SelftestHardwareInfo: Hashable, Sendable {
    /// Size of the structure in bytes.
    public static let size = 8
    /// The value the mock driver puts in ``testRegister`` (`IOMMU_HW_INFO_SELFTEST_REGVAL`).
    public static let expectedTestRegister: UInt32 = 0xdead_beef

    public var flags: UInt32
    public var testRegister: UInt32

    public init(flags: UInt32, testRegister: UInt32) {
        self.flags = flags
        self.testRegister = testRegister
    }
}

/// Vendor data of `IOMMU_GET_HW_INFO`, decoded by type.
public enum HardwareInfo: Hashable, Sendable {
    /// No vendor data (`IOMMU_HW_INFO_TYPE_NONE`).
    case none
    case intelVTd(VTdHardwareInfo)
    case armSMMUv3(SMMUv3HardwareInfo)
    case tegra241CMDQV(Tegra241CMDQVHardwareInfo)
    case amd(AMDHardwareInfo)
    case selftest(SelftestHardwareInfo)
    /// A type this module does not decode; the bytes are kept as the kernel wrote them.
    case unknown(type: UInt32, bytes: [UInt8])

    /// The type this data decodes.
    public var type: HardwareInfoKind {
        switch self {
        case .none: .none
        case .intelVTd: .intelVTd
        case .armSMMUv3: .armSMMUv3
        case .tegra241CMDQV: .tegra241CMDQV
        case .amd: .amd
        case .selftest: .selftest
        case .unknown(let type, _): HardwareInfoKind(rawValue: type)
        }
    }

    /// Decodes the `data_len` bytes the kernel filled for `out_data_type`, little-endian.
    ///
    /// Bytes past the structure this module knows (a newer kernel's longer structure, or the zeroed
    /// tail of a larger buffer) are ignored. Costs one copy of `data`.
    /// - Throws: ``HardwareInfoDecodingError/truncated(type:expected:got:)`` when `data` is shorter
    ///   than the type's structure. Type `none` and unknown types never throw.
    public init(type rawType: UInt32, data: some Collection<UInt8>) throws(HardwareInfoDecodingError) {
        let type = HardwareInfoKind(rawValue: rawType)
        let r = LittleEndianBytes(bytes: Array(data))
        switch type {
        case .none:
            self = .none
        case .intelVTd:
            try r.require(VTdHardwareInfo.size, for: type)
            self = .intelVTd(VTdHardwareInfo(
                flags: VTdHardwareInfo.Flags(rawValue: r.u32(at: 0)),
                capability: VTdCapability(rawValue: r.u64(at: 8)),
                extendedCapability: VTdExtendedCapability(rawValue: r.u64(at: 16))))
        case .armSMMUv3:
            try r.require(SMMUv3HardwareInfo.size, for: type)
            self = .armSMMUv3(SMMUv3HardwareInfo(
                flags: SMMUv3HardwareInfo.Flags(rawValue: r.u32(at: 0)),
                idr: (0..<6).map { r.u32(at: 8 + 4 * $0) },
                iidr: r.u32(at: 32), aidr: r.u32(at: 36)))
        case .tegra241CMDQV:
            try r.require(Tegra241CMDQVHardwareInfo.size, for: type)
            self = .tegra241CMDQV(Tegra241CMDQVHardwareInfo(
                flags: r.u32(at: 0), version: r.u8(at: 4), log2VCMDQs: r.u8(at: 5), log2VSIDs: r.u8(at: 6)))
        case .amd:
            try r.require(AMDHardwareInfo.size, for: type)
            self = .amd(AMDHardwareInfo(
                efr: AMDExtendedFeatures(rawValue: r.u64(at: 0)),
                efr2: AMDExtendedFeatures2(rawValue: r.u64(at: 8))))
        case .selftest:
            try r.require(SelftestHardwareInfo.size, for: type)
            self = .selftest(SelftestHardwareInfo(flags: r.u32(at: 0), testRegister: r.u32(at: 4)))
        default:
            self = .unknown(type: rawType, bytes: r.bytes)
        }
    }

    /// Decodes from raw memory, as ``init(type:data:)``.
    public init(type rawType: UInt32, data: UnsafeRawBufferPointer) throws(HardwareInfoDecodingError) {
        try self.init(type: rawType, data: Array(data))
    }
}

/// Everything one `IOMMU_GET_HW_INFO` answer says about the IOMMU behind one device.
public struct HardwareInfoReport: Hashable, Sendable {
    /// The decoded vendor data (`out_data_type` plus the `data_uptr` buffer).
    public var info: HardwareInfo
    /// Generic capability bits (`out_capabilities`).
    public var capabilities: IOMMUHardwareCapabilities
    /// PASID width usable by this device; 0 means no PASID (`out_max_pasid_log2`).
    public var maxPASIDLog2: UInt8

    public init(info: HardwareInfo, capabilities: IOMMUHardwareCapabilities, maxPASIDLog2: UInt8) {
        self.info = info
        self.capabilities = capabilities
        self.maxPASIDLog2 = maxPASIDLog2
    }

    /// Decodes the fields of one `struct iommu_hw_info` answer.
    ///
    /// - Parameters:
    ///   - type: `out_data_type`.
    ///   - data: the first `data_len` bytes of the buffer at `data_uptr` (after the call).
    ///   - capabilities: `out_capabilities`.
    ///   - maxPASIDLog2: `out_max_pasid_log2`.
    /// - Throws: ``HardwareInfoDecodingError`` when `data` is too short for `type`.
    public init(
        type: UInt32, data: some Collection<UInt8>, capabilities: UInt64, maxPASIDLog2: UInt8
    ) throws(HardwareInfoDecodingError) {
        self.info = try HardwareInfo(type: type, data: data)
        self.capabilities = IOMMUHardwareCapabilities(rawValue: capabilities)
        self.maxPASIDLog2 = maxPASIDLog2
    }

    /// Decodes the answer of ``IOMMUFDContext/IOMMUFDContext/hardwareInfo(of:requesting:capacity:)``.
    /// - Throws: ``HardwareInfoDecodingError`` when the data is too short for its type.
    public init(_ raw: RawHardwareInfo) throws(HardwareInfoDecodingError) {
        try self.init(type: raw.type.rawValue, data: raw.data, capabilities: raw.capabilities.rawValue,
                      maxPASIDLog2: raw.maxPASIDLog2)
    }

    /// As ``init(type:data:capabilities:maxPASIDLog2:)`` with the data buffer as raw memory.
    public init(
        type: UInt32, data: UnsafeRawBufferPointer, capabilities: UInt64, maxPASIDLog2: UInt8
    ) throws(HardwareInfoDecodingError) {
        try self.init(type: type, data: Array(data), capabilities: capabilities, maxPASIDLog2: maxPASIDLog2)
    }
}

/// Bits `low...high` of `value`, shifted down.
@inline(__always)
func field(_ value: UInt64, _ low: Int, _ high: Int) -> UInt64 {
    (value >> UInt64(low)) & (high - low == 63 ? .max : (1 << UInt64(high - low + 1)) - 1)
}

@inline(__always)
func bit(_ value: UInt64, _ n: Int) -> Bool { (value >> UInt64(n)) & 1 == 1 }
