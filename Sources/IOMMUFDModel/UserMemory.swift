#if canImport(Glibc)
import Glibc
#endif
import IOMMUFD
import SystemPackage

/// Copies to and from process addresses named inside commands, as `copy_from_user` and
/// `copy_to_user` do: an address that is not mapped (or not writeable, for a write) answers
/// `EFAULT` instead of crashing the process.
///
/// The bytes pass through a pipe: `write(2)` from the source and `read(2)` into the
/// destination make the kernel check both addresses, so a bad one is an `EFAULT` answer, never
/// a fault in the model. Costs a pipe and four syscalls per copy of up to 4 KiB.
enum UserMemory {
    /// Reads `count` bytes at the process address `address` into `destination`.
    static func read(_ address: UInt64, into destination: UnsafeMutableRawPointer, _ count: Int) throws(Errno) {
        try transfer(from: try check(address, count), to: destination, count)
    }

    /// Writes `count` bytes from `source` to the process address `address`.
    static func write(_ address: UInt64, from source: UnsafeRawPointer, _ count: Int) throws(Errno) {
        try transfer(from: source, to: try check(address, count), count)
    }

    /// Addresses below `vm.mmap_min_addr`'s default or wrapping past 2^64 always fault.
    private static func check(_ address: UInt64, _ count: Int) throws(Errno) -> UnsafeMutableRawPointer {
        let (_, overflow) = address.addingReportingOverflow(UInt64(count))
        guard address >= minimumUserAddress, !overflow, let p = UnsafeMutableRawPointer(bitPattern: UInt(address)) else {
            throw Errno(rawValue: EFAULT)
        }
        return p
    }

    private static func transfer(from source: UnsafeRawPointer, to destination: UnsafeMutableRawPointer, _ count: Int) throws(Errno) {
        guard count > 0 else { return }
        var fds: [CInt] = [-1, -1]
        guard pipe(&fds) == 0 else { throw Errno(rawValue: errno) }
        defer { Glibc.close(fds[0]); Glibc.close(fds[1]) }
        var done = 0
        while done < count {
            let chunk = min(4096, count - done)
            guard Glibc.write(fds[1], source + done, chunk) == chunk else { throw Errno(rawValue: EFAULT) }
            guard Glibc.read(fds[0], destination + done, chunk) == chunk else { throw Errno(rawValue: EFAULT) }
            done += chunk
        }
    }
}
