#if canImport(Glibc)
import Glibc
#endif

/// New kernel log records from `/dev/kmsg`, from the moment the log was made: an IOMMU's fault
/// reports, for one. Reads nothing where the log cannot be opened (not root).
public struct KernelLog: ~Copyable {
    let fd: CInt?
    let kernel: any KernelInterface

    /// Opens `/dev/kmsg` non-blocking and seeks to its end.
    public init(kernel: any KernelInterface = LinuxKernel()) {
        self.kernel = kernel
        switch kernel.open("/dev/kmsg", flags: O_RDONLY | O_NONBLOCK) {
        case .success(let fd):
            self.fd = fd
            _ = kernel.lseek(fd, offset: 0, whence: SEEK_END)
        case .failure:
            self.fd = nil
        }
    }

    deinit { if let fd { _ = kernel.close(fd) } }

    /// Waits up to `seconds` for a record containing every string in `parts`, reading every 10 ms;
    /// returns it.
    public func waitFor(_ parts: [String], seconds: Double) -> String? {
        guard let fd else { return nil }
        let clock = SuspendingClock()
        let deadline = clock.now.advanced(by: .seconds(seconds))
        var buffer = [UInt8](repeating: 0, count: 8192)
        while clock.now < deadline {
            if case .success(let n) = buffer.withUnsafeMutableBytes({ kernel.read(fd, into: $0) }), n > 0 {
                let line = String(decoding: buffer[..<n], as: UTF8.self)
                if parts.allSatisfy({ line.contains($0) }) { return line }
            } else {
                usleep(10_000)
            }
        }
        return nil
    }
}
