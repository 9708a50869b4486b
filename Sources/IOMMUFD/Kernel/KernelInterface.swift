public import SystemPackage

/// The calls the typed layer makes on kernel file descriptors.
///
/// ``LinuxKernel`` makes them for real. Tests and the mirror engine's models supply their own
/// (a model of iommufd's semantics) to run without `/dev/iommu`. Implementations must be
/// thread-safe: one ``IOMMUFDContext`` may be used from many threads at once.
public protocol KernelInterface: Sendable {
    /// `open(2)` with `O_CLOEXEC` added.
    func open(_ path: String, flags: CInt) -> Result<CInt, Errno>
    /// `close(2)`.
    func close(_ fd: CInt) -> Result<Void, Errno>
    /// `ioctl(2)` with a pointer argument (or `nil`); returns the ioctl's nonnegative result.
    func ioctl(_ fd: CInt, _ request: IoctlRequest, _ argument: UnsafeMutableRawPointer?) -> Result<CInt, Errno>
    /// `pread(2)`: bytes read.
    func pread(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) -> Result<Int, Errno>
    /// `pwrite(2)`: bytes written.
    func pwrite(_ fd: CInt, from buffer: UnsafeRawBufferPointer, at offset: Int64) -> Result<Int, Errno>
    /// `read(2)`: bytes read.
    func read(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer) -> Result<Int, Errno>
    /// `write(2)`: bytes written.
    func write(_ fd: CInt, from buffer: UnsafeRawBufferPointer) -> Result<Int, Errno>
    /// `mmap(2)` of a file descriptor (a device region), shared.
    func mmap(_ fd: CInt, length: Int, protection: CInt, offset: Int64) -> Result<UnsafeMutableRawPointer, Errno>
    /// `munmap(2)`.
    func munmap(_ address: UnsafeMutableRawPointer, length: Int) -> Result<Void, Errno>
}

/// The real kernel: each call goes straight to libc through the package's one choke point.
public struct LinuxKernel: KernelInterface {
    public init() {}

    public func open(_ path: String, flags: CInt) -> Result<CInt, Errno> { Syscalls.open(path, flags) }
    public func close(_ fd: CInt) -> Result<Void, Errno> { Syscalls.close(fd) }
    @inline(__always)
    public func ioctl(_ fd: CInt, _ request: IoctlRequest, _ argument: UnsafeMutableRawPointer?) -> Result<CInt, Errno> {
        Syscalls.ioctl(fd, request.rawValue, argument)
    }
    public func pread(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) -> Result<Int, Errno> {
        Syscalls.pread(fd, buffer, offset)
    }
    public func pwrite(_ fd: CInt, from buffer: UnsafeRawBufferPointer, at offset: Int64) -> Result<Int, Errno> {
        Syscalls.pwrite(fd, buffer, offset)
    }
    public func read(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer) -> Result<Int, Errno> {
        Syscalls.read(fd, buffer)
    }
    public func write(_ fd: CInt, from buffer: UnsafeRawBufferPointer) -> Result<Int, Errno> {
        Syscalls.write(fd, buffer)
    }
    public func mmap(_ fd: CInt, length: Int, protection: CInt, offset: Int64) -> Result<UnsafeMutableRawPointer, Errno> {
        Syscalls.mmap(length, protection, 0x01 /* MAP_SHARED */, fd, offset)
    }
    public func munmap(_ address: UnsafeMutableRawPointer, length: Int) -> Result<Void, Errno> {
        Syscalls.munmap(address, length)
    }
}
