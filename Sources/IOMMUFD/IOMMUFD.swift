#if canImport(Glibc)
import Glibc
#endif
import CIOMMUFD
import SystemPackage

/// The owner of one iommufd file descriptor (`/dev/iommu`).
///
/// Every object the kernel keeps for this iommufd (IOAS, HWPT, bound devices, ...) is addressed
/// by an id and lives until it is destroyed or this iommufd is closed. The methods may be
/// called from many threads at once; to share one iommufd across threads, keep it in a class
/// (``SharedIOMMUFDContext``). Each ioctl argument lives on the stack: calls do not allocate.
public struct IOMMUFDContext: ~Copyable, Sendable {
    let handle: KernelDescriptor
    /// The raw descriptor, for calls that hand it to the kernel (`VFIO_DEVICE_BIND_IOMMUFD`).
    public var descriptor: CInt { handle.rawValue }
    /// How kernel calls are made: ``LinuxKernel`` or a model.
    public var kernel: any KernelInterface { handle.kernel }

    /// Opens `/dev/iommu` (or `path`).
    ///
    /// - Throws: ``IOMMUFDError`` with operation `open` and the `errno` of `open(2)`
    ///   (`ENOENT` when the kernel has no iommufd).
    public init(path: String = "/dev/iommu", kernel: any KernelInterface = LinuxKernel()) throws(IOMMUFDError) {
        switch kernel.open(path, flags: O_RDWR) {
        case .success(let fd):
            self.handle = KernelDescriptor(fd, kernel: kernel)
        case .failure(let e):
            throw IOMMUFDError(.open, reason: .kernel(e, subject: path))
        }
    }

    /// Takes ownership of an iommufd descriptor opened elsewhere (passed in by a management
    /// stack, say). The descriptor is checked with a harmless `IOMMU_OPTION` get.
    ///
    /// - Throws: ``IOMMUFDError`` with reason ``IOMMUFDError/Reason/notAnIOMMUFD`` when the
    ///   descriptor is something else, or the kernel's `errno` (`EBADF` for a closed one).
    ///   The descriptor is not closed when adoption fails.
    public init(adopting descriptor: CInt, kernel: any KernelInterface = LinuxKernel()) throws(IOMMUFDError) {
        var cmd = makeCommand(cio_iommu_option.self)
        cmd.option_id = CIO_IOMMU_OPTION_RLIMIT_MODE
        cmd.op = UInt16(CIO_IOMMU_OPTION_OP_GET)
        let r = withUnsafeMutableBytes(of: &cmd) { kernel.ioctl(descriptor, .option, $0.baseAddress) }
        if case .failure(let e) = r {
            if e == .inappropriateIOCTLForDevice { throw IOMMUFDError(.adopt, request: .option, reason: .notAnIOMMUFD) }
            throw IOMMUFDError(.adopt, request: .option, errno: e)
        }
        self.handle = KernelDescriptor(descriptor, kernel: kernel)
    }

    /// Closes this descriptor of the iommufd. The kernel destroys every object in it once
    /// nothing else holds the context: bound VFIO devices and open event or fault queue
    /// descriptors keep it alive until they are closed too.
    /// - Throws: ``IOMMUFDError`` with operation `close`; the descriptor is released anyway.
    public consuming func close() throws(IOMMUFDError) { try handle.close() }

    /// Destroys any object of this iommufd.
    ///
    /// - Throws: ``IOMMUFDError`` with `ENOENT` for an unknown id and `EBUSY` while the object
    ///   is in use (an IOAS with attached devices, a HWPT that is a parent).
    ///
    /// The corresponding ioctl is `IOMMU_DESTROY`.
    public func destroy(_ id: some IOMMUObjectID) throws(IOMMUFDError) {
        var cmd = makeCommand(cio_iommu_destroy.self)
        cmd.id = id.rawValue
        try ioctl(.destroy, &cmd, .destroy)
    }

    /// Issues one ioctl on this iommufd with `argument` in and out.
    @inline(__always)
    func ioctl<Argument>(
        _ request: IoctlRequest, _ argument: inout Argument, _ operation: IOMMUFDError.Operation
    ) throws(IOMMUFDError) {
        try handle.ioctl(request, &argument, operation)
    }

    /// Issues one ioctl whose argument is a caller-built buffer (variable-length commands).
    func ioctl(
        _ request: IoctlRequest, buffer: UnsafeMutableRawPointer?, _ operation: IOMMUFDError.Operation
    ) -> Result<Void, IOMMUFDError> {
        handle.ioctl(request, buffer: buffer, operation)
    }
}

/// One ``IOMMUFDContext`` shared by reference, for use from several threads or tasks.
public final class SharedIOMMUFDContext: Sendable {
    public let iommufd: IOMMUFDContext
    public init(_ iommufd: consuming IOMMUFDContext) { self.iommufd = iommufd }
}

/// A zeroed command struct with its leading `size` (iommufd) or `argsz` (VFIO) field set.
///
/// Every iommufd and VFIO argument struct starts with a `__u32` holding its own size; the
/// kernel uses it to tell old callers from new ones.
@inline(__always)
func makeCommand<T>(_ type: T.Type) -> T {
    _withUnprotectedUnsafeTemporaryAllocation(of: T.self, capacity: 1) { p in
        let raw = UnsafeMutableRawBufferPointer(p)
        raw.initializeMemory(as: UInt8.self, repeating: 0)
        raw.storeBytes(of: UInt32(MemoryLayout<T>.size), as: UInt32.self)
        return raw.load(as: T.self)
    }
}
