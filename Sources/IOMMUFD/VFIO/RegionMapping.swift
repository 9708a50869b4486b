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
        guard region.flags.contains(.mappable), region.size > 0, let length = Int(exactly: region.size) else {
            throw IOMMUFDError(.mapRegion, reason: .invalidArgument("region \(region.index) cannot be mapped (\(region.flags))"))
        }
        var protection: CInt = 0
        if region.flags.contains(.readable) { protection |= PROT_READ }
        if region.flags.contains(.writeable) { protection |= PROT_WRITE }
        switch device.kernel.mmap(device.descriptor, length: length, protection: protection, offset: Int64(region.offset)) {
        case .success(let p):
            self.address = HostAddress(p)
            self.length = length
            self.kernel = device.kernel
        case .failure(let e):
            throw IOMMUFDError(.mapRegion, errno: e)
        }
    }

    deinit { _ = kernel.munmap(address.unsafePointer!, length: length) }

    /// Loads a register. Traps when `offset` is outside the region or misaligned (a programmer error).
    public func load<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
        precondition(offset >= 0 && offset % MemoryLayout<T>.size == 0 && offset + MemoryLayout<T>.size <= length,
                     "register access outside the region or misaligned")
        return T(littleEndian: address.unsafePointer!.advanced(by: offset).assumingMemoryBound(to: T.self).pointee)
    }

    /// Stores a register. Traps when `offset` is outside the region or misaligned (a programmer error).
    public func store<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        precondition(offset >= 0 && offset % MemoryLayout<T>.size == 0 && offset + MemoryLayout<T>.size <= length,
                     "register access outside the region or misaligned")
        address.unsafePointer!.advanced(by: offset).assumingMemoryBound(to: T.self).pointee = value.littleEndian
    }
}

/// An eventfd: the kernel's counter that VFIO signals interrupts and faults through.
public struct EventFD: ~Copyable, Sendable {
    let handle: KernelDescriptor
    public var descriptor: CInt { handle.rawValue }

    /// - Throws: ``IOMMUFDError`` with operation `eventfd`.
    public init() throws(IOMMUFDError) {
        switch Syscalls.eventfd(0, CInt(EFD_CLOEXEC | EFD_NONBLOCK)) {
        case .success(let fd): handle = KernelDescriptor(fd, kernel: LinuxKernel())
        case .failure(let e): throw IOMMUFDError(.eventfd, errno: e)
        }
    }

    /// Waits up to `milliseconds` for the counter to become nonzero, then reads and clears it.
    /// - Returns: The count, or 0 on timeout.
    public func wait(milliseconds: Int32) throws(IOMMUFDError) -> UInt64 {
        guard try handle.waitReadable(milliseconds: milliseconds, .eventfd) else { return 0 }
        var value: UInt64 = 0
        let r = withUnsafeMutableBytes(of: &value) { handle.kernel.read(descriptor, into: $0) }
        if case .failure(let e) = r { throw IOMMUFDError(.eventfd, errno: e) }
        return value
    }
}
