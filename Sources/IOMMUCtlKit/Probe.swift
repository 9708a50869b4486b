#if canImport(Glibc)
import Glibc
#endif
public import IOMMUCapabilities

/// A page-table stage the kernel owns, as `probe` reports it.
public struct StageEntry: Codable, Hashable, Sendable {
    /// `nil` when the registers do not say.
    public var format: String?
    /// `["4K", "2M"]`.
    public var pageSizes: [String]
    public var inputAddressBits: Int
    public var signExtended: Bool
    public var dirtyTracking: Bool

    public init(_ stage: KernelManagedStage) {
        format = stage.format.map(String.init(describing:))
        pageSizes = stage.pageSizes.sizes.map(\.description)
        inputAddressBits = stage.inputAddressBits
        signExtended = stage.signExtended
        dirtyTracking = stage.dirtyTracking
    }
}

/// A format the host walks in hardware for a guest (nesting).
public struct NestedStageEntry: Codable, Hashable, Sendable {
    public var format: String
    public var pageSizes: [String]
    public var inputAddressBits: Int
}

/// ``HostIOMMUCapabilities``, vendor-neutral, as `probe` reports it.
public struct HostCapabilitiesEntry: Codable, Hashable, Sendable {
    /// `intel-vtd`, `arm-smmuv3`, `amd-vi`, `selftest`, `unknown`.
    public var kind: String
    public var mirrorStage: StageEntry
    public var dirtyTrackingStage: StageEntry?
    public var nestParentStage: StageEntry?
    public var nestedStages: [NestedStageEntry]
    public var nesting: Bool
    public var dirtyTracking: Bool
    public var outputAddressBits: Int?
    public var pasidBits: Int
    public var pri: Bool
    public var ats: Bool
    public var coherent: Bool

    public init(_ host: HostIOMMUCapabilities) {
        kind = host.kind.rawValue
        mirrorStage = StageEntry(host.mirrorStage)
        dirtyTrackingStage = host.dirtyTrackingStage.map(StageEntry.init)
        nestParentStage = host.nestParentStage.map(StageEntry.init)
        nestedStages = host.nestedStages.map {
            NestedStageEntry(format: $0.format.description, pageSizes: $0.pageSizes.sizes.map(\.description),
                             inputAddressBits: $0.inputAddressBits)
        }
        nesting = host.nesting
        dirtyTracking = host.dirtyTracking
        outputAddressBits = host.outputAddressBits
        pasidBits = host.pasidBits
        pri = host.pri
        ats = host.ats
        coherent = host.coherent
    }
}

/// One `IOMMU_GET_HW_INFO` answer, raw and decoded.
public struct HardwareInfoEntry: Codable, Hashable, Sendable {
    /// The vendor format, named (`intelVTd`, `selftest`, ...).
    public var type: String
    /// `out_data_type` as the kernel wrote it.
    public var typeValue: UInt32
    /// Names of the generic capability bits set (`dirtyTracking`, ...).
    public var capabilities: [String]
    /// `out_capabilities`, hex.
    public var capabilityBits: String
    public var maxPASIDLog2: Int
    /// How many vendor bytes the kernel has (`data_len`).
    public var dataLength: Int
    /// The vendor registers by name, hex (`cap`, `ecap` for VT-d; `idr0`...`idr5` for SMMUv3).
    public var registers: [String: String]
    /// What the registers mean, vendor-neutral.
    public var host: HostCapabilitiesEntry

    public init(_ raw: RawHardwareInfo, _ report: HardwareInfoReport, _ host: HostIOMMUCapabilities) {
        type = raw.type.description
        typeValue = raw.type.rawValue
        let names: [(IOMMUHardwareCapabilities, String)] = [
            (.dirtyTracking, "dirtyTracking"), (.pasidExecute, "pasidExecute"),
            (.pasidPrivileged, "pasidPrivileged"), (.atsNotSupported, "atsNotSupported"),
        ]
        capabilities = names.filter { raw.capabilities.contains($0.0) }.map(\.1)
        capabilityBits = hex(raw.capabilities.rawValue)
        maxPASIDLog2 = Int(raw.maxPASIDLog2)
        dataLength = raw.kernelDataLength
        registers = Self.registers(report.info)
        self.host = HostCapabilitiesEntry(host)
    }

    static func registers(_ info: HardwareInfo) -> [String: String] {
        switch info {
        case .none: [:]
        case .intelVTd(let v):
            ["cap": hex(v.capability.rawValue), "ecap": hex(v.extendedCapability.rawValue), "flags": hex(v.flags.rawValue)]
        case .armSMMUv3(let s):
            ["flags": hex(s.flags.rawValue), "idr0": hex(s.idr0.rawValue), "idr1": hex(s.idr1.rawValue), "idr2": hex(s.idr2),
             "idr3": hex(s.idr3.rawValue), "idr4": hex(s.idr4), "idr5": hex(s.idr5.rawValue),
             "iidr": hex(s.iidr.rawValue), "aidr": hex(s.aidr.rawValue)]
        case .tegra241CMDQV(let t):
            ["flags": hex(t.flags), "version": "\(t.version)", "log2VCMDQs": "\(t.log2VCMDQs)", "log2VSIDs": "\(t.log2VSIDs)"]
        case .amd(let a): ["efr": hex(a.efr.rawValue), "efr2": hex(a.efr2.rawValue)]
        case .selftest(let s): ["flags": hex(s.flags), "testRegister": hex(s.testRegister)]
        case .unknown(_, let bytes): ["data": bytes.map { hex($0, width: 2, prefix: false) }.joined()]
        }
    }
}

/// A VFIO device bound to a fresh iommufd and asked what IOMMU is behind it.
public struct VFIODeviceReport: Codable, Hashable, Sendable {
    public var address: String
    /// `/dev/vfio/devices/vfioN`.
    public var cdev: String
    public var numaNode: Int?
    public var hardwareInfo: HardwareInfoEntry?
    /// Why the device could not be read (open, bind or `IOMMU_GET_HW_INFO` failed), with hints.
    public var error: String?
}

/// Which iommufd ioctls the running kernel knows.
public struct FeatureReport: Codable, Hashable, Sendable {
    public var supported: [String]
    public var unsupported: [String]

    public init(_ features: KernelFeatures) {
        supported = IoctlRequest.iommufdRequests.filter { features.supports($0) }.map(\.description)
        unsupported = IoctlRequest.iommufdRequests.filter { !features.supports($0) }.map(\.description)
    }
}

/// Everything `iommuctl probe` finds.
public struct ProbeReport: Codable, Hashable, Sendable {
    /// `uname -r`.
    public var kernelRelease: String
    /// The iommufd node opened (`/dev/iommu`).
    public var iommufd: String
    public var features: FeatureReport
    public var iommus: [IOMMUEntry]
    public var pciDevices: [PCIDeviceEntry]
    public var vfioDevices: [VFIODeviceReport]
}

/// The IOMMU behind one VFIO device, read through a fresh iommufd.
public struct DeviceIOMMU: Sendable {
    public var raw: RawHardwareInfo
    public var report: HardwareInfoReport
    public var host: HostIOMMUCapabilities
}

/// Opens `cdev`, binds it to a fresh iommufd at `iommufdPath` and asks `IOMMU_GET_HW_INFO`.
///
/// Costs an open of each file, one bind and one ioctl; everything is closed on return.
/// - Throws: ``IOMMUFDError`` from the open, bind or ioctl; ``ToolError`` when the answer
///   cannot be decoded.
public func readDeviceIOMMU(cdev: String, iommufdPath: String = "/dev/iommu") throws -> DeviceIOMMU {
    let iommufd = try IOMMUFDContext(path: iommufdPath)
    let device = try VFIODevice(path: cdev)
    let id = try device.bind(to: iommufd)
    let raw = try iommufd.hardwareInfo(of: id)
    let report: HardwareInfoReport
    do { report = try HardwareInfoReport(raw) } catch { throw ToolError("\(cdev): \(error)") }
    return DeviceIOMMU(raw: raw, report: report, host: HostIOMMUCapabilities(report: report))
}

/// Gathers the probe report: sysfs first, then every VFIO device through its own fresh iommufd,
/// then the kernel's iommufd features.
///
/// - Throws: the error of opening `iommufdPath` (as ``IOMMUFDError``): without an iommufd there
///   is nothing to probe. A VFIO device that cannot be read is reported in its entry instead.
public func probe(iommufdPath: String = "/dev/iommu", inventory: SysfsInventory = SysfsInventory()) throws -> ProbeReport {
    let iommufd = try IOMMUFDContext(path: iommufdPath)
    let features = FeatureReport(iommufd.probeFeatures())
    let devices = inventory.devices()
    let vfio = devices.compactMap { d -> VFIODeviceReport? in
        guard let name = d.vfioDevice else { return nil }
        let cdev = "/dev/vfio/devices/" + name
        var entry = VFIODeviceReport(address: d.address, cdev: cdev, numaNode: d.numaNode)
        do {
            let found = try readDeviceIOMMU(cdev: cdev, iommufdPath: iommufdPath)
            entry.hardwareInfo = HardwareInfoEntry(found.raw, found.report, found.host)
        } catch {
            entry.error = ToolError.from(error, command: "probe").description
        }
        return entry
    }
    return ProbeReport(kernelRelease: kernelRelease(), iommufd: iommufdPath, features: features,
                       iommus: inventory.iommus(), pciDevices: devices, vfioDevices: vfio)
}

/// `uname -r`.
public func kernelRelease() -> String {
    var name = utsname()
    uname(&name)
    return withUnsafeBytes(of: name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
}

/// `0x1f`, or `1f` without the prefix, zero-padded to `width` digits.
func hex(_ value: some BinaryInteger, width: Int = 0, prefix: Bool = true) -> String {
    let s = String(value, radix: 16)
    return (prefix ? "0x" : "") + String(repeating: "0", count: max(0, width - s.count)) + s
}
