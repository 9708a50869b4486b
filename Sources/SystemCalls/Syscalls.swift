#if canImport(Glibc)
public import Glibc
#endif
public import CIOMMUFD
public import SystemPackage

/// The only place this package calls libc. Each call captures `errno` at once and retries
/// `EINTR`; everything above sees `Result<_, Errno>`. Only ``LinuxKernel`` calls it: the rest of
/// the package reaches the kernel through a ``KernelInterface``.
@usableFromInline
enum Syscalls {
    @inlinable @inline(__always)
    static func retrying<R: FixedWidthInteger>(_ body: () -> R) -> Result<R, Errno> {
        while true {
            let r = body()
            if r != -1 { return .success(r) }
            let e = Glibc.errno
            if e != EINTR { return .failure(Errno(rawValue: e)) }
        }
    }

    static func open(_ path: String, _ flags: CInt) -> Result<CInt, Errno> {
        retrying { Glibc.open(path, flags | O_CLOEXEC) }
    }

    /// Not retried on EINTR: on Linux the descriptor is released either way.
    static func close(_ fd: CInt) -> Result<Void, Errno> {
        Glibc.close(fd) == 0 ? .success(()) : .failure(Errno(rawValue: Glibc.errno))
    }

    @inlinable @inline(__always)
    static func ioctl(_ fd: CInt, _ request: UInt, _ argument: UnsafeMutableRawPointer?) -> Result<CInt, Errno> {
        retrying { cio_ioctl(fd, request, argument) }
    }

    static func pread(_ fd: CInt, _ buffer: UnsafeMutableRawBufferPointer, _ offset: Int64) -> Result<Int, Errno> {
        retrying { Glibc.pread(fd, buffer.baseAddress, buffer.count, off_t(offset)) }
    }

    static func pwrite(_ fd: CInt, _ buffer: UnsafeRawBufferPointer, _ offset: Int64) -> Result<Int, Errno> {
        retrying { Glibc.pwrite(fd, buffer.baseAddress, buffer.count, off_t(offset)) }
    }

    static func read(_ fd: CInt, _ buffer: UnsafeMutableRawBufferPointer) -> Result<Int, Errno> {
        retrying { Glibc.read(fd, buffer.baseAddress, buffer.count) }
    }

    static func write(_ fd: CInt, _ buffer: UnsafeRawBufferPointer) -> Result<Int, Errno> {
        retrying { Glibc.write(fd, buffer.baseAddress, buffer.count) }
    }

    static func lseek(_ fd: CInt, _ offset: Int64, _ whence: CInt) -> Result<Int64, Errno> {
        retrying { Glibc.lseek(fd, off_t(offset), whence) }.map { Int64($0) }
    }

    static func mmap(
        _ length: Int, _ protection: CInt, _ flags: CInt, _ fd: CInt, _ offset: Int64
    ) -> Result<UnsafeMutableRawPointer, Errno> {
        let p = Glibc.mmap(nil, length, protection, flags, fd, off_t(offset))
        guard let p, p != MAP_FAILED else { return .failure(Errno(rawValue: Glibc.errno)) }
        return .success(p)
    }

    static func munmap(_ address: UnsafeMutableRawPointer, _ length: Int) -> Result<Void, Errno> {
        Glibc.munmap(address, length) == 0 ? .success(()) : .failure(Errno(rawValue: Glibc.errno))
    }

    static func memfdCreate(_ name: String, _ flags: UInt32) -> Result<CInt, Errno> {
        retrying { cio_memfd_create(name, flags) }
    }

    static func ftruncate(_ fd: CInt, _ length: Int64) -> Result<CInt, Errno> {
        retrying { Glibc.ftruncate(fd, off_t(length)) }
    }

    static func eventfd(_ initial: UInt32, _ flags: CInt) -> Result<CInt, Errno> {
        retrying { cio_eventfd(initial, flags) }
    }

    static func poll(_ fd: CInt, _ events: Int16, _ timeoutMilliseconds: CInt) -> Result<Int16, Errno> {
        var p = pollfd(fd: fd, events: events, revents: 0)
        return retrying { Glibc.poll(&p, 1, timeoutMilliseconds) }.map { $0 == 0 ? 0 : p.revents }
    }

    static func readlink(_ path: String) -> Result<String, Errno> {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let r = buffer.withUnsafeMutableBufferPointer { b in
            b.withMemoryRebound(to: CChar.self) { p in retrying { Glibc.readlink(path, p.baseAddress!, p.count - 1) } }
        }
        return r.map { String(decoding: buffer[..<$0], as: UTF8.self) }
    }

    /// The names in a directory, sorted, without `.` and `..`.
    static func listDirectory(_ path: String) -> Result<[String], Errno> {
        guard let dir = opendir(path) else { return .failure(Errno(rawValue: Glibc.errno)) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return .success(names.sorted())
    }
}
