#if canImport(Glibc)
import Glibc
#endif
import IOMMUFD
import Testing

/// The kernel tier runs where `/dev/iommu` exists (the test VM of `Harness/`). When the
/// harness sets `SWIFT_IOMMUFD_REQUIRE_KERNEL=1`, a missing `/dev/iommu` makes every test fail
/// instead of being skipped: a kernel test that cannot run in CI is a failure.
enum KernelTier {
    static let available = access("/dev/iommu", F_OK) == 0
    static let required = getenv("SWIFT_IOMMUFD_REQUIRE_KERNEL").map { String(cString: $0) == "1" } ?? false
    static var enabled: Bool { available || required }
}

/// One page of the system's size, as a byte count.
let page = Int(PageSize.system.bytes)

/// A buffer with a recognizable pattern: byte i is `(i * 7 + seed) & 0xff`.
func patterned(_ length: Int, seed: UInt8) throws -> DMABuffer {
    let buffer = try DMABuffer(length: length)
    buffer.withUnsafeMutableBytes { b in
        for i in 0..<b.count { b[i] = UInt8(truncatingIfNeeded: i * 7) &+ seed }
    }
    return buffer
}

func range(_ base: UInt64, _ length: Int) -> IOVARange {
    try! IOVARange(base: IOVA(base), length: UInt64(length))
}

/// Expects `body` to throw an ``IOMMUFDError`` from the kernel with `errno`.
func expectKernelError<R: ~Copyable>(
    _ errno: Errno, _ operation: IOMMUFDError.Operation? = nil,
    sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> R
) {
    do {
        _ = try body()
        Issue.record("expected \(errno), the call succeeded", sourceLocation: sourceLocation)
    } catch let error as IOMMUFDError {
        #expect(error.errno == errno, "\(error)", sourceLocation: sourceLocation)
        if let operation { #expect(error.operation == operation, sourceLocation: sourceLocation) }
    } catch {
        Issue.record("expected an IOMMUFDError, got \(error)", sourceLocation: sourceLocation)
    }
}

/// New kernel log records, read from `/dev/kmsg` from the moment the reader was made.
struct KernelLog: ~Copyable {
    let fd: CInt
    init() {
        fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        if fd >= 0 { lseek(fd, 0, SEEK_END) }
    }
    deinit { if fd >= 0 { close(fd) } }

    /// Waits up to `seconds` for a record containing every string in `parts`; returns it.
    func waitFor(_ parts: [String], seconds: Double) -> String? {
        let deadline = monotonicSeconds() + seconds
        var buffer = [UInt8](repeating: 0, count: 8192)
        while monotonicSeconds() < deadline {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                let line = String(decoding: buffer[..<n], as: UTF8.self)
                if parts.allSatisfy({ line.contains($0) }) { return line }
            } else {
                usleep(10_000)
            }
        }
        return nil
    }
}

func monotonicSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}
