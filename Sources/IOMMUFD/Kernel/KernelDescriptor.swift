#if canImport(Glibc)
import Glibc
#endif

/// One kernel file descriptor, owned: closed exactly once, by ``close()`` or when the owner ends.
///
/// Every owner of a descriptor in this package (the iommufd, VFIO devices, event and fault
/// queues) holds one and issues its calls through it, so each call goes through the owner's
/// ``KernelInterface`` and ends in the package's one syscall choke point.
struct KernelDescriptor: ~Copyable, Sendable {
    let rawValue: CInt
    let kernel: any KernelInterface
    /// `kernel` is ``LinuxKernel``: the ioctl path calls it statically, with no witness-table
    /// dispatch (measured: about 50 instructions per call, most of the typed layer's cost).
    let isLinux: Bool
    /// Cleared by ``close()``, which closes the descriptor itself.
    private var closeOnDeinit = true

    init(_ rawValue: CInt, kernel: any KernelInterface) {
        self.rawValue = rawValue
        self.kernel = kernel
        self.isLinux = kernel.isLinuxKernel
    }

    deinit { if closeOnDeinit { _ = kernel.close(rawValue) } }

    /// Closes the descriptor; it is released even when `close(2)` reports an error.
    consuming func close() throws(IOMMUFDError) {
        closeOnDeinit = false
        if case .failure(let e) = kernel.close(rawValue) { throw IOMMUFDError(.close, errno: e) }
    }

    /// One ioctl with `argument` in and out; the argument lives wherever the caller keeps it
    /// (the stack, for every fixed-size command), so the call does not allocate.
    @inline(__always)
    func ioctl<Argument>(
        _ request: IoctlRequest, _ argument: inout Argument, _ operation: IOMMUFDError.Operation
    ) throws(IOMMUFDError) {
        let fd = rawValue
        // Unprotected: the argument is a plain C struct, so no stack canary is needed (5
        // instructions of a 4 KiB map's ~80 in the typed layer).
        let r = _withUnprotectedUnsafeMutableBytes(of: &argument) { p in
            isLinux ? LinuxKernel().ioctl(fd, request, p.baseAddress) : kernel.ioctl(fd, request, p.baseAddress)
        }
        if case .failure(let e) = r { throw IOMMUFDError(operation, request: request, errno: e) }
    }

    /// One ioctl whose argument is a caller-built buffer (variable-length commands).
    func ioctl(
        _ request: IoctlRequest, buffer: UnsafeMutableRawPointer?, _ operation: IOMMUFDError.Operation
    ) -> Result<Void, IOMMUFDError> {
        switch isLinux ? LinuxKernel().ioctl(rawValue, request, buffer) : kernel.ioctl(rawValue, request, buffer) {
        case .success: .success(())
        case .failure(let e): .failure(IOMMUFDError(operation, request: request, errno: e))
        }
    }

    /// Waits up to `milliseconds` for the descriptor to be readable (`poll(2)`); true when it is.
    /// A signal restarts the wait with the whole timeout.
    func waitReadable(milliseconds: Int32, _ operation: IOMMUFDError.Operation) throws(IOMMUFDError) -> Bool {
        switch kernel.poll(rawValue, events: Int16(POLLIN), timeoutMilliseconds: milliseconds) {
        case .success(let revents): return revents & Int16(POLLIN) != 0
        case .failure(let e): throw IOMMUFDError(operation, errno: e)
        }
    }

    /// `read(2)` into `buffer`: bytes read.
    func read(into buffer: UnsafeMutableRawBufferPointer, _ operation: IOMMUFDError.Operation) throws(IOMMUFDError) -> Int {
        switch kernel.read(rawValue, into: buffer) {
        case .success(let n): return n
        case .failure(let e): throw IOMMUFDError(operation, errno: e)
        }
    }

    /// `write(2)` of `buffer`: bytes written.
    func write(from buffer: UnsafeRawBufferPointer, _ operation: IOMMUFDError.Operation) throws(IOMMUFDError) -> Int {
        switch kernel.write(rawValue, from: buffer) {
        case .success(let n): return n
        case .failure(let e): throw IOMMUFDError(operation, errno: e)
        }
    }

    /// `pread(2)` at `offset`: bytes read.
    func pread(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64, _ operation: IOMMUFDError.Operation) throws(IOMMUFDError) -> Int {
        switch kernel.pread(rawValue, into: buffer, at: offset) {
        case .success(let n): return n
        case .failure(let e): throw IOMMUFDError(operation, errno: e)
        }
    }

    /// `pwrite(2)` at `offset`: bytes written.
    func pwrite(from buffer: UnsafeRawBufferPointer, at offset: Int64, _ operation: IOMMUFDError.Operation) throws(IOMMUFDError) -> Int {
        switch kernel.pwrite(rawValue, from: buffer, at: offset) {
        case .success(let n): return n
        case .failure(let e): throw IOMMUFDError(operation, errno: e)
        }
    }

    /// `mmap(2)` of `length` bytes of this descriptor at `offset`, shared.
    func mmap(length: Int, protection: CInt, offset: Int64, _ operation: IOMMUFDError.Operation) throws(IOMMUFDError) -> UnsafeMutableRawPointer {
        switch kernel.mmap(length: length, protection: protection, flags: MAP_SHARED, fd: rawValue, offset: offset) {
        case .success(let p): return p
        case .failure(let e): throw IOMMUFDError(operation, errno: e)
        }
    }
}
