#if canImport(Glibc)
import Glibc
#endif
import CIOMMUFD

/// A region an iommufd object offers for `mmap` (a vIOMMU's hardware-queue page, the mock
/// vIOMMU's two pages), mapped shared and uncached into this process; unmapped when the owner
/// ends. While it is mapped the kernel keeps the object that offered it (destroying it answers
/// `EBUSY`).
///
/// Loads and stores are single accesses of their width, as registers want.
public struct IOMMUFDRegionMapping: ~Copyable, Sendable {
    public let address: HostAddress
    public let length: Int
    private let kernel: any KernelInterface
    private var unmapOnDeinit = true

    init(address: HostAddress, length: Int, kernel: any KernelInterface) {
        self.address = address
        self.length = length
        self.kernel = kernel
    }

    deinit { if unmapOnDeinit { _ = kernel.munmap(address.unsafePointer!, length: length) } }

    /// Unmaps the region now.
    /// - Throws: ``IOMMUFDError`` with operation `unmapRegion` and the `errno` of `munmap(2)`.
    public consuming func unmap() throws(IOMMUFDError) {
        unmapOnDeinit = false
        if case .failure(let e) = kernel.munmap(address.unsafePointer!, length: length) {
            throw IOMMUFDError(.unmapRegion, errno: e)
        }
    }

    /// Loads a value of 1, 2, 4 or 8 bytes, little-endian, in one access of that width. Traps
    /// when `offset` is outside the region or misaligned, or `T` has another width.
    public func load<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
        let p = pointer(offset, MemoryLayout<T>.size)
        let raw: UInt64 = switch MemoryLayout<T>.size {
        case 1: UInt64(cio_mmio_read8(p))
        case 2: UInt64(cio_mmio_read16(p))
        case 4: UInt64(cio_mmio_read32(p))
        default: cio_mmio_read64(p)
        }
        return T(littleEndian: T(truncatingIfNeeded: raw))
    }

    /// Stores a value of 1, 2, 4 or 8 bytes, little-endian, in one access of that width. Traps
    /// as ``load(_:at:)``.
    public func store<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        let p = pointer(offset, MemoryLayout<T>.size)
        let raw = UInt64(truncatingIfNeeded: value.littleEndian)
        switch MemoryLayout<T>.size {
        case 1: cio_mmio_write8(p, UInt8(truncatingIfNeeded: raw))
        case 2: cio_mmio_write16(p, UInt16(truncatingIfNeeded: raw))
        case 4: cio_mmio_write32(p, UInt32(truncatingIfNeeded: raw))
        default: cio_mmio_write64(p, raw)
        }
    }

    private func pointer(_ offset: Int, _ width: Int) -> UnsafeMutableRawPointer {
        precondition([1, 2, 4, 8].contains(width), "accesses are 1, 2, 4 or 8 bytes wide")
        precondition(offset >= 0 && offset % width == 0 && offset <= length - width, "access outside the region or misaligned")
        return address.unsafePointer!.advanced(by: offset)
    }
}

extension IOMMUFDContext {
    /// Maps the region an object of this iommufd offers at `offset` (its allocation's
    /// `out_..._mmap_offset`), `length` bytes, exactly as offered.
    ///
    /// - Parameter writable: Map for writing too (`PROT_WRITE`); never executable.
    /// - Throws: ``IOMMUFDError``; before the call for an offset or length this process cannot
    ///   express; from `mmap(2)` `ENXIO` when no region starts at `offset` or `length`, rounded
    ///   up to whole pages as `mmap(2)` does, is not its length.
    ///
    /// The corresponding call is `mmap(2)` on the iommufd (`MAP_SHARED`).
    public func mapRegion(offset: UInt64, length: UInt64, writable: Bool = true) throws(IOMMUFDError) -> IOMMUFDRegionMapping {
        guard let count = Int(exactly: length), let position = Int64(exactly: offset) else {
            throw IOMMUFDError(.mapIOMMUFDRegion,
                               reason: .invalidArgument("offset 0x\(String(offset, radix: 16)) or length \(length) is too large for mmap"))
        }
        let protection = PROT_READ | (writable ? PROT_WRITE : 0)
        let p = try handle.mmap(length: count, protection: protection, offset: position, .mapIOMMUFDRegion)
        return IOMMUFDRegionMapping(address: HostAddress(p), length: count, kernel: kernel)
    }

    /// Maps the region a vIOMMU's driver data offers (``VIOMMUData``'s `mmapOffset` and
    /// `mmapLength`); see ``mapRegion(offset:length:writable:)``.
    ///
    /// The corresponding call is `mmap(2)` on the iommufd (`MAP_SHARED`).
    public func mapRegion(of data: VIOMMUData, writable: Bool = true) throws(IOMMUFDError) -> IOMMUFDRegionMapping {
        switch data {
        case .tegra241CMDQV(let offset, let length), .selftest(_, _, let offset, let length):
            try mapRegion(offset: offset, length: length, writable: writable)
        }
    }
}

extension IOMMUFDError.Operation {
    public static let mapIOMMUFDRegion = Self(rawValue: "mapIOMMUFDRegion")
    public static let unmapRegion = Self(rawValue: "unmapRegion")
}
