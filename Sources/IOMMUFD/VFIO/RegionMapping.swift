#if canImport(Glibc)
import Glibc
#endif
import CIOMMUFD

/// A device region (a BAR) mapped into this process; unmapped when the owner ends.
///
/// Loads and stores go straight to the device: use the fixed-width accessors, which touch each
/// register exactly once with the width asked for.
public struct RegionMapping: ~Copyable, Sendable {
    public let address: HostAddress
    public let length: Int
    private let kernel: any KernelInterface

    /// Maps a whole region that has ``VFIORegionFlags/mappable``.
    ///
    /// The corresponding call is `mmap(2)` on the device file at the region's offset.
    public init(_ region: VFIORegionInfo, of device: borrowing VFIODevice) throws(IOMMUFDError) {
        guard region.flags.contains(.mappable), region.size > 0, let length = Int(exactly: region.size),
              let offset = Int64(exactly: region.offset) else {
            throw IOMMUFDError(.mapRegion, reason: .invalidArgument("region \(region.index) cannot be mapped (\(region.flags))"))
        }
        var protection: CInt = 0
        if region.flags.contains(.readable) { protection |= PROT_READ }
        if region.flags.contains(.writeable) { protection |= PROT_WRITE }
        let p = try device.handle.mmap(length: length, protection: protection, offset: offset, .mapRegion)
        self.address = HostAddress(p)
        self.length = length
        self.kernel = device.kernel
    }

    deinit { _ = kernel.munmap(address.unsafePointer!, length: length) }

    /// Loads a register of 1, 2, 4 or 8 bytes, in one access of that width. Traps when `offset`
    /// is outside the region or misaligned, or `T` has another width (programmer errors).
    public func load<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
        precondition([1, 2, 4, 8].contains(MemoryLayout<T>.size), "registers are 1, 2, 4 or 8 bytes wide")
        precondition(offset >= 0 && offset % MemoryLayout<T>.size == 0 && offset <= length - MemoryLayout<T>.size,
                     "register access outside the region or misaligned")
        return T(littleEndian: T(truncatingIfNeeded: mmioRead(address.unsafePointer!.advanced(by: offset), MemoryLayout<T>.size)))
    }

    /// Stores a register of 1, 2, 4 or 8 bytes, in one access of that width. Traps as ``load(_:at:)``.
    public func store<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        precondition([1, 2, 4, 8].contains(MemoryLayout<T>.size), "registers are 1, 2, 4 or 8 bytes wide")
        precondition(offset >= 0 && offset % MemoryLayout<T>.size == 0 && offset <= length - MemoryLayout<T>.size,
                     "register access outside the region or misaligned")
        mmioWrite(address.unsafePointer!.advanced(by: offset), MemoryLayout<T>.size, UInt64(truncatingIfNeeded: value.littleEndian))
    }
}

/// One device register access of `width` bytes, never merged or elided (volatile, in C).
@inline(__always)
private func mmioRead(_ p: UnsafeMutableRawPointer, _ width: Int) -> UInt64 {
    switch width {
    case 1: UInt64(cio_mmio_read8(p))
    case 2: UInt64(cio_mmio_read16(p))
    case 4: UInt64(cio_mmio_read32(p))
    default: cio_mmio_read64(p)
    }
}

@inline(__always)
private func mmioWrite(_ p: UnsafeMutableRawPointer, _ width: Int, _ value: UInt64) {
    switch width {
    case 1: cio_mmio_write8(p, UInt8(truncatingIfNeeded: value))
    case 2: cio_mmio_write16(p, UInt16(truncatingIfNeeded: value))
    case 4: cio_mmio_write32(p, UInt32(truncatingIfNeeded: value))
    default: cio_mmio_write64(p, value)
    }
}

/// An eventfd: the kernel's counter that VFIO signals interrupts and faults through.
public struct EventFD: ~Copyable, Sendable {
    let handle: KernelDescriptor
    public var descriptor: CInt { handle.rawValue }

    /// A new nonblocking counter at 0 (`eventfd(2)` through `kernel`).
    /// - Throws: ``IOMMUFDError`` with operation `eventfd`.
    public init(kernel: any KernelInterface = LinuxKernel()) throws(IOMMUFDError) {
        switch kernel.eventfd(initialValue: 0, flags: CInt(EFD_CLOEXEC | EFD_NONBLOCK)) {
        case .success(let fd): handle = KernelDescriptor(fd, kernel: kernel)
        case .failure(let e): throw IOMMUFDError(.eventfd, errno: e)
        }
    }

    /// Waits up to `milliseconds` for the counter to become nonzero, then reads and clears it.
    /// - Returns: The count, or 0 on timeout.
    public func wait(milliseconds: Int32) throws(IOMMUFDError) -> UInt64 {
        guard try handle.waitReadable(milliseconds: milliseconds, .eventfd) else { return 0 }
        var value: UInt64 = 0
        let n = try withUnsafeMutableBytes(of: &value) { b throws(IOMMUFDError) in try handle.read(into: b, .eventfd) }
        guard n == MemoryLayout<UInt64>.size else {
            throw IOMMUFDError(.eventfd, reason: .unexpectedResult("read \(n) of 8 bytes"))
        }
        return value
    }
}
