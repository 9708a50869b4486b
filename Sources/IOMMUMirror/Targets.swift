public import IOMMUFD
public import IOPageTables
public import SystemPackage
public import NUMA
import Synchronization

/// One host area to create, with everything any target needs to create it.
public struct MirrorMapping: Hashable, Sendable {
    public var iova: IOVARange
    public var guestPhysical: GuestPhysicalAddress
    /// The same bytes in this process.
    public var host: HostAddress
    /// The memfd and offset of the same bytes, when the region is memfd-backed.
    public var file: MirrorFileBacking?
    /// Read and write only.
    public var permissions: Permissions
    /// An IOAS of the same iommufd that holds exactly this area now, for a target that fans
    /// out by `IOMMU_IOAS_COPY` (set by the engine; `nil` otherwise).
    public var copySource: IOASID?

    public init(iova: IOVARange, guestPhysical: GuestPhysicalAddress, host: HostAddress, file: MirrorFileBacking? = nil,
                permissions: Permissions, copySource: IOASID? = nil) {
        self.iova = iova
        self.guestPhysical = guestPhysical
        self.host = host
        self.file = file
        self.permissions = permissions
        self.copySource = copySource
    }

    public var length: UInt64 { iova.last.rawValue &- iova.first.rawValue &+ 1 }
}

/// A target's failure: which target, which operation and range, and the `errno` when the
/// kernel answered.
public struct MirrorTargetError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Operation: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }
        public static let map = Self(rawValue: "map")
        public static let unmap = Self(rawValue: "unmap")
        public static let readBack = Self(rawValue: "readBack")
    }

    public let target: String
    public let operation: Operation
    public let range: IOVARange
    /// The kernel's answer, when the kernel refused.
    public let errno: Errno?
    public let detail: String

    public init(target: String, operation: Operation, range: IOVARange, errno: Errno?, detail: String) {
        self.target = target
        self.operation = operation
        self.range = range
        self.errno = errno
        self.detail = detail
    }

    public var description: String { "\(target): \(operation) \(range) failed: \(detail)" }
}

/// A host address space the engine keeps equal to the guest's view: an IOAS, a host page
/// table, or nothing (benchmarks). The engine calls a target from one thread at a time.
public protocol MirrorTarget: AnyObject, Sendable {
    /// For reports.
    var name: String { get }
    /// The IOVA ranges the target accepts, ascending (read once, when an engine is set up).
    var usableRanges: [IOVARange] { get }
    /// Every IOVA and length must be a multiple of this.
    var alignment: UInt64 { get }
    /// Whether a host area can carry exactly `permissions` (read and write bits only).
    func canExpress(_ permissions: Permissions) -> Bool
    /// Creates one area; on failure nothing was created.
    func map(_ mapping: MirrorMapping) throws(MirrorTargetError)
    /// Removes the areas inside `range` (whole areas only: the engine never asks for a cut) and
    /// returns the bytes removed. On failure, part of them may be gone.
    func unmap(_ range: IOVARange, expectedBytes: UInt64) throws(MirrorTargetError) -> UInt64
    /// Removes the one area exactly at `area`: `true` when it was there, `false` when nothing
    /// was (after a failed multi-area unmap, to learn what is left).
    func unmapIfPresent(_ area: IOVARange) throws(MirrorTargetError) -> Bool
    /// What the target itself says it translates, when it can tell (a page table walked back),
    /// in IOVA order; `nil` when it cannot (an IOAS: no ioctl lists areas). For checks.
    func readBack() throws(MirrorTargetError) -> [MirrorRun]?
    /// The NUMA node the target's calls should run on (its device's node, from sysfs); `nil`:
    /// no preference. A worker of ``MirrorEngine/Execution/workers`` mode pins itself to it.
    var node: NUMANode? { get }
}

extension MirrorTarget {
    /// No preference.
    public var node: NUMANode? { nil }
    /// Whether `range` lies inside one of ``usableRanges``.
    public func accepts(_ range: IOVARange) -> Bool { usableRanges.contains { $0.contains(range) } }
}

// MARK: IOAS

/// An iommufd IOAS as a target: one `IOMMU_IOAS_MAP` (or `IOMMU_IOAS_MAP_FILE`, or
/// `IOMMU_IOAS_COPY` from another IOAS) per area, one `IOMMU_IOAS_UNMAP` per run of areas.
/// Works on the real kernel and on `IOMMUFDModel`.
public final class IOASTarget: MirrorTarget {
    public let name: String
    public let context: SharedIOMMUFDContext
    public let ioas: IOASID
    public let usableRanges: [IOVARange]
    public let alignment: UInt64
    /// How this kernel answers; decides `MAP_FILE` and how an empty unmap reads.
    public let behaviour: KernelBehaviour
    /// How a second IOAS of the same iommufd gets an area an earlier target already holds.
    /// `.map` is the default: on the test VM's mock domain `IOMMU_IOAS_COPY` cost about the
    /// same as a map for 4 KiB areas and 1.6 to 9 times more for 64 KiB and 2 MiB ones (it
    /// reads the source's pages back one by one). ``FanOutMeasurement/measure(_:from:to:at:areaBytes:samples:)``
    /// times both on the IOAS in use and gives the cheaper as its ``FanOutMeasurement/choice``.
    public enum FanOut: Hashable, Sendable {
        /// `IOMMU_IOAS_MAP` again (the memory is pinned again).
        case map
        /// `IOMMU_IOAS_COPY` from the earlier IOAS (pinned once).
        case copy
    }

    public let fanOut: FanOut
    /// The node of the device behind this IOAS (`PCIAddress.numaNode()`), if known.
    public let node: NUMANode?

    /// A target over `ioas` of `context`, with its usable ranges read now.
    ///
    /// With `fanOut: .copy` the engine creates an area here by `IOMMU_IOAS_COPY` from the first
    /// earlier IOAS target of the same context that is in service and holds exactly that area
    /// (``MirrorMapping/copySource``); otherwise by a map. `node` (the device's, say
    /// `PCIAddress.numaNode().map(NUMANode.init)`) is where a worker-mode engine runs its calls.
    /// - Throws: ``IOMMUFDError`` of `IOMMU_IOAS_IOVA_RANGES`.
    public init(name: String, context: SharedIOMMUFDContext, ioas: IOASID, behaviour: KernelBehaviour,
                fanOut: FanOut = .map, node: NUMANode? = nil) throws(IOMMUFDError) {
        self.name = name
        self.node = node
        self.context = context
        self.ioas = ioas
        self.behaviour = behaviour
        self.fanOut = fanOut
        let ranges = try context.iommufd.iovaRanges(of: ioas)
        self.usableRanges = ranges.ranges
        self.alignment = max(ranges.alignment, 1)
    }

    public func canExpress(_ permissions: Permissions) -> Bool {
        !permissions.isEmpty && permissions.subtracting(.readWrite).isEmpty
    }

    /// The corresponding ioctl is `IOMMU_IOAS_COPY` with a copy source, else `IOMMU_IOAS_MAP`,
    /// or `IOMMU_IOAS_MAP_FILE` for a memfd-backed region when the kernel has it.
    public func map(_ m: MirrorMapping) throws(MirrorTargetError) {
        var access: MapAccess = []
        if m.permissions.contains(.read) { access.insert(.readable) }
        if m.permissions.contains(.write) { access.insert(.writeable) }
        do {
            if let source = m.copySource {
                _ = try context.iommufd.copy(m.iova, from: source, to: ioas, at: m.iova.first, access: access)
            } else if let file = m.file, behaviour.mapFile {
                _ = try context.iommufd.mapFile(file.descriptor, offset: file.offset, length: m.length, into: ioas, at: m.iova.first, access: access)
            } else {
                let host = try! HostRange(base: m.host, length: m.length)
                _ = try context.iommufd.map(host, into: ioas, at: m.iova.first, access: access)
            }
        } catch {
            // The kernel creates the area before it copies its answer out, and that copy can
            // fail (EFAULT, seen under fault injection): an error does not mean nothing was
            // created. The engine maps only where this IOAS holds nothing, so removing exactly
            // this range (EEXIST aside: then something else is there) keeps "on failure nothing
            // was created" true.
            var detail = error.description
            if error.errno != .fileExists {
                do { _ = try context.iommufd.unmap(m.iova, from: ioas) } catch where error.errno == .noSuchFileOrDirectory {} catch {
                    detail += "; removing what it may have created failed too: \(error.description)"
                }
            }
            throw MirrorTargetError(target: name, operation: .map, range: m.iova, errno: error.errno, detail: detail)
        }
    }

    /// The corresponding ioctl is `IOMMU_IOAS_UNMAP`.
    public func unmap(_ range: IOVARange, expectedBytes: UInt64) throws(MirrorTargetError) -> UInt64 {
        do { return try context.iommufd.unmap(range, from: ioas) } catch {
            throw MirrorTargetError(target: name, operation: .unmap, range: range, errno: error.errno, detail: error.description)
        }
    }

    /// `IOMMU_IOAS_UNMAP` of exactly one area. A range that maps nothing answers as the probe
    /// found (`ENOENT` or 0 bytes); the area is exact, so it cannot be a cut.
    public func unmapIfPresent(_ area: IOVARange) throws(MirrorTargetError) -> Bool {
        do { return try context.iommufd.unmap(area, from: ioas) != 0 } catch {
            if error.errno == .noSuchFileOrDirectory, behaviour.emptyUnmap == .noSuchEntry { return false }
            throw MirrorTargetError(target: name, operation: .unmap, range: area, errno: error.errno, detail: error.description)
        }
    }

    public func readBack() -> [MirrorRun]? { nil }
}

// MARK: Null

/// A target that holds nothing and counts calls: the engine's own cost, for benchmarks.
public final class NullTarget: MirrorTarget {
    public let name: String
    public let usableRanges: [IOVARange] = [.all]
    public let alignment: UInt64 = 1
    private let counts = Mutex((maps: 0, unmaps: 0))

    public init(name: String = "null") { self.name = name }

    public func canExpress(_ permissions: Permissions) -> Bool { !permissions.isEmpty }
    public func map(_ mapping: MirrorMapping) { counts.withLock { $0.maps += 1 } }
    public func unmap(_ range: IOVARange, expectedBytes: UInt64) -> UInt64 {
        counts.withLock { $0.unmaps += 1 }
        return expectedBytes
    }
    public func unmapIfPresent(_ area: IOVARange) -> Bool {
        counts.withLock { $0.unmaps += 1 }
        return true
    }
    public func readBack() -> [MirrorRun]? { nil }
    /// Calls made so far.
    public var calls: (maps: Int, unmaps: Int) { counts.withLock { $0 } }
}
