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

func monotonicSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}
