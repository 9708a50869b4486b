public import SystemPackage

/// Every system call the package makes, as one protocol: the kernel layer, DMA buffers, event
/// descriptors, sysfs reads and guest memory all call through it.
///
/// ``LinuxKernel`` makes the calls for real. Tests and benchmarks supply their own (a model of
/// iommufd's semantics) to run without `/dev/iommu`; a model sees every call, including the
/// memory and sysfs ones, and may pass those it does not model to ``LinuxKernel``.
/// Implementations must be thread-safe: one iommufd may be used from many threads at once.
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
    /// `lseek(2)`: the new offset.
    func lseek(_ fd: CInt, offset: Int64, whence: CInt) -> Result<Int64, Errno>
    /// `mmap(2)` at an address the kernel chooses; `fd` is -1 for anonymous memory.
    func mmap(
        length: Int, protection: CInt, flags: CInt, fd: CInt, offset: Int64
    ) -> Result<UnsafeMutableRawPointer, Errno>
    /// `munmap(2)`.
    func munmap(_ address: UnsafeMutableRawPointer, length: Int) -> Result<Void, Errno>
    /// `memfd_create(2)`.
    func memfdCreate(_ name: String, flags: UInt32) -> Result<CInt, Errno>
    /// `ftruncate(2)`.
    func ftruncate(_ fd: CInt, length: Int64) -> Result<Void, Errno>
    /// `eventfd(2)`.
    func eventfd(initialValue: UInt32, flags: CInt) -> Result<CInt, Errno>
    /// `poll(2)` of one descriptor: the returned events, 0 on timeout.
    func poll(_ fd: CInt, events: Int16, timeoutMilliseconds: CInt) -> Result<Int16, Errno>
    /// `readlink(2)`: the link's target.
    func readlink(_ path: String) -> Result<String, Errno>
    /// The names in a directory (`opendir(3)`/`readdir(3)`), sorted, without `.` and `..`.
    func listDirectory(_ path: String) -> Result<[String], Errno>
}

/// The real kernel: each call goes straight to libc through the package's one choke point
/// (``Syscalls``), which retries `EINTR` and captures `errno`.
public struct LinuxKernel: KernelInterface {
    public init() {}

    public func open(_ path: String, flags: CInt) -> Result<CInt, Errno> { Syscalls.open(path, flags) }
    public func close(_ fd: CInt) -> Result<Void, Errno> { Syscalls.close(fd) }
    /// Inlinable, so a caller that knows it holds the real kernel (``isLinuxKernel``) makes the
    /// ioctl with no dynamic dispatch in between.
    @inlinable @inline(__always)
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
    public func lseek(_ fd: CInt, offset: Int64, whence: CInt) -> Result<Int64, Errno> {
        Syscalls.lseek(fd, offset, whence)
    }
    public func mmap(
        length: Int, protection: CInt, flags: CInt, fd: CInt, offset: Int64
    ) -> Result<UnsafeMutableRawPointer, Errno> {
        Syscalls.mmap(length, protection, flags, fd, offset)
    }
    public func munmap(_ address: UnsafeMutableRawPointer, length: Int) -> Result<Void, Errno> {
        Syscalls.munmap(address, length)
    }
    public func memfdCreate(_ name: String, flags: UInt32) -> Result<CInt, Errno> { Syscalls.memfdCreate(name, flags) }
    public func ftruncate(_ fd: CInt, length: Int64) -> Result<Void, Errno> { Syscalls.ftruncate(fd, length).map { _ in () } }
    public func eventfd(initialValue: UInt32, flags: CInt) -> Result<CInt, Errno> { Syscalls.eventfd(initialValue, flags) }
    public func poll(_ fd: CInt, events: Int16, timeoutMilliseconds: CInt) -> Result<Int16, Errno> {
        Syscalls.poll(fd, events, timeoutMilliseconds)
    }
    public func readlink(_ path: String) -> Result<String, Errno> { Syscalls.readlink(path) }
    public func listDirectory(_ path: String) -> Result<[String], Errno> { Syscalls.listDirectory(path) }
}

extension KernelInterface {
    /// Whether this is ``LinuxKernel``: hot paths check it once and then call it statically.
    public var isLinuxKernel: Bool { self is LinuxKernel }

    /// Reads a small text file whole (a sysfs attribute): `open`, `read` until end of file,
    /// `close`, all through this interface.
    public func readTextFile(_ path: String, maximumBytes: Int = 4096) -> Result<String, Errno> {
        let fd: CInt
        switch open(path, flags: 0 /* O_RDONLY */) {
        case .success(let f): fd = f
        case .failure(let e): return .failure(e)
        }
        defer { _ = close(fd) }
        var bytes = [UInt8](repeating: 0, count: maximumBytes)
        var count = 0
        while count < maximumBytes {
            let r = bytes.withUnsafeMutableBytes { read(fd, into: UnsafeMutableRawBufferPointer(rebasing: $0[count...])) }
            switch r {
            case .success(0): return .success(String(decoding: bytes[..<count], as: UTF8.self))
            case .success(let n): count += n
            case .failure(let e): return .failure(e)
            }
        }
        return .success(String(decoding: bytes[..<count], as: UTF8.self))
    }

    /// Writes `text` to a file whole (a sysfs attribute): `open`, one `write`, `close`.
    public func writeTextFile(_ path: String, _ text: String) -> Result<Void, Errno> {
        let fd: CInt
        switch open(path, flags: 1 /* O_WRONLY */) {
        case .success(let f): fd = f
        case .failure(let e): return .failure(e)
        }
        defer { _ = close(fd) }
        var text = text
        return text.withUTF8 { write(fd, from: UnsafeRawBufferPointer($0)) }.map { _ in () }
    }
}
