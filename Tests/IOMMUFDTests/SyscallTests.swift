#if canImport(Glibc)
import Glibc
#endif
@testable import SystemCalls
import IOMMUFD
import Testing

/// The one syscall choke point: errno captured at once, EINTR retried, other errors returned.
@Suite struct SyscallTests {
    @Test func interruptedCallsAreRetried() {
        var calls = 0
        let r = Syscalls.retrying { () -> CInt in
            calls += 1
            if calls < 3 {
                errno = EINTR
                return -1
            }
            return 42
        }
        #expect(r == .success(42))
        #expect(calls == 3)
    }

    @Test func otherErrorsAreReturnedOnce() {
        var calls = 0
        let r = Syscalls.retrying { () -> Int in
            calls += 1
            errno = EBADF
            return -1
        }
        #expect(r == .failure(.badFileDescriptor))
        #expect(calls == 1)
    }

    @Test func realCallsReportErrno() {
        var closed: Errno?
        if case .failure(let e) = Syscalls.close(-1) { closed = e }
        #expect(closed == .badFileDescriptor)
        #expect(Syscalls.open("/nonexistent/iommu", O_RDWR) == .failure(.noSuchFileOrDirectory))
        // An ioctl iommufd would answer, sent to /dev/null: ENOTTY.
        guard case .success(let fd) = Syscalls.open("/dev/null", O_RDWR) else {
            Issue.record("cannot open /dev/null")
            return
        }
        defer { _ = Syscalls.close(fd) }
        var size: UInt32 = 0
        let r = withUnsafeMutableBytes(of: &size) { Syscalls.ioctl(fd, IoctlRequest.ioasAlloc.rawValue, $0.baseAddress) }
        #expect(r == .failure(.inappropriateIOCTLForDevice))
    }

    @Test func pciAddressesParseOnlySysfsWidths() {
        #expect(PCIAddress("0000:00:05.0") == PCIAddress(domain: 0, bus: 0, device: 5, function: 0))
        #expect(PCIAddress("81:00.0") == PCIAddress(domain: 0, bus: 0x81, device: 0, function: 0))
        for bad in ["00000:00:05.0", "0:0:5.0", "0000:0:05.0", "0000:00:5.0", "0000:00:05.00", "0000:00:20.0", "0000:00:05.8", "+fff:00:05.0", "0000:+0:05.0"] {
            #expect(PCIAddress(bad) == nil, "\(bad)")
        }
    }
}
