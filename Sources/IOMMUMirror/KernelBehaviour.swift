public import IOMMUFD
import SystemPackage

/// How this kernel answers the calls whose answer changed between versions, found by trying
/// them on scratch IOAS at start rather than assumed.
public struct KernelBehaviour: Hashable, Sendable, CustomStringConvertible {
    /// What `IOMMU_IOAS_UNMAP` of a range holding no area answers.
    public enum EmptyUnmap: Hashable, Sendable {
        /// Success with 0 bytes (newer kernels).
        case zeroBytes
        /// `ENOENT` (older kernels, and the 7.3 kernel this project tests on, per its model).
        case noSuchEntry
    }

    public var emptyUnmap: EmptyUnmap
    /// `IOMMU_IOAS_COPY` of part of one area works (the uAPI text asks for a whole area).
    public var copiesPartOfArea: Bool
    /// `IOMMU_IOAS_MAP_FILE` exists.
    public var mapFile: Bool

    public init(emptyUnmap: EmptyUnmap, copiesPartOfArea: Bool, mapFile: Bool) {
        self.emptyUnmap = emptyUnmap
        self.copiesPartOfArea = copiesPartOfArea
        self.mapFile = mapFile
    }

    public var description: String {
        "empty unmap: \(emptyUnmap == .zeroBytes ? "0 bytes" : "ENOENT"), copy of part of an area: \(copiesPartOfArea ? "yes" : "no"), MAP_FILE: \(mapFile ? "yes" : "no")"
    }

    /// Probes `iommufd` with two scratch IOAS and a two-page memfd: an unmap of nothing, a copy
    /// of the second page of a two-page area, and a file map. Everything is destroyed again.
    /// - Throws: ``IOMMUFDError`` from a set-up call (`IOMMU_IOAS_ALLOC`, the first
    ///   `IOMMU_IOAS_MAP`, or `memfd_create`/`mmap` reported as operation `probe`), or an unmap
    ///   answer other than the two known ones.
    ///
    /// The corresponding ioctls are `IOMMU_IOAS_ALLOC`, `IOMMU_IOAS_MAP`, `IOMMU_IOAS_COPY`,
    /// `IOMMU_IOAS_UNMAP`, `IOMMU_IOAS_MAP_FILE` and `IOMMU_DESTROY`.
    public static func probe(_ iommufd: borrowing IOMMUFDContext) throws(IOMMUFDError) -> KernelBehaviour {
        let kernel = iommufd.kernel
        let page = PageSize.system.bytes
        let fd: CInt
        switch kernel.memfdCreate("iommu-mirror-probe", flags: 1 /* MFD_CLOEXEC */) {
        case .success(let f): fd = f
        case .failure(let e): throw IOMMUFDError(.probe, errno: e)
        }
        defer { _ = kernel.close(fd) }
        if case .failure(let e) = kernel.ftruncate(fd, length: Int64(2 * page)) { throw IOMMUFDError(.probe, errno: e) }
        let memory: UnsafeMutableRawPointer
        switch kernel.mmap(length: Int(2 * page), protection: 3 /* PROT_READ | PROT_WRITE */, flags: 1 /* MAP_SHARED */, fd: fd, offset: 0) {
        case .success(let p): memory = p
        case .failure(let e): throw IOMMUFDError(.probe, errno: e)
        }
        defer { _ = kernel.munmap(memory, length: Int(2 * page)) }

        let a = try iommufd.allocateIOAS()
        defer { try? iommufd.destroy(a) }
        let b = try iommufd.allocateIOAS()
        defer { try? iommufd.destroy(b) }
        let base = IOVA(0x100_0000)
        _ = try iommufd.map(try! HostRange(base: HostAddress(memory), length: 2 * page), into: a, at: base)

        let secondPage = try! IOVARange(base: IOVA(base.rawValue + page), length: page)
        let copies = (try? iommufd.copy(secondPage, from: a, to: b, at: base)) != nil

        let empty: EmptyUnmap
        do throws(IOMMUFDError) {
            let bytes = try iommufd.unmap(try! IOVARange(base: IOVA(base.rawValue + 0x100_0000), length: page), from: a)
            guard bytes == 0 else {
                throw IOMMUFDError(.probe, request: .ioasUnmap, reason: .unexpectedResult("unmap of nothing removed \(bytes) bytes"))
            }
            empty = .zeroBytes
        } catch {
            guard error.errno == .noSuchFileOrDirectory else { throw error }
            empty = .noSuchEntry
        }

        let file = (try? iommufd.mapFile(fd, offset: 0, length: page, into: a, at: IOVA(base.rawValue + 0x200_0000))) != nil
        return KernelBehaviour(emptyUnmap: empty, copiesPartOfArea: copies, mapFile: file)
    }
}

extension IOMMUFDError.Operation {
    /// ``KernelBehaviour/probe(_:)``.
    public static let probe = Self(rawValue: "probe")
}
