/// Ioctls whose nonnegative result is the answer (a version, a yes or no, a new descriptor),
/// and ioctls whose argument is a plain integer in the pointer's place.
extension KernelDescriptor {
    /// One ioctl with `argument` in and out; returns the ioctl's result.
    @inline(__always)
    func ioctlValue<Argument>(
        _ request: IoctlRequest, _ argument: inout Argument, _ operation: IOMMUFDError.Operation
    ) throws(IOMMUFDError) -> CInt {
        let fd = rawValue
        let r = withUnsafeMutableBytes(of: &argument) { kernel.ioctl(fd, request, $0.baseAddress) }
        switch r {
        case .success(let value): return value
        case .failure(let e): throw IOMMUFDError(operation, request: request, errno: e)
        }
    }

    /// One ioctl whose argument is an integer (`VFIO_CHECK_EXTENSION`, `VFIO_SET_IOMMU`), or a
    /// caller-built buffer's address; returns the ioctl's result.
    func ioctlValue(
        _ request: IoctlRequest, integer: UInt, _ operation: IOMMUFDError.Operation
    ) throws(IOMMUFDError) -> CInt {
        switch kernel.ioctl(rawValue, request, UnsafeMutableRawPointer(bitPattern: integer)) {
        case .success(let value): return value
        case .failure(let e): throw IOMMUFDError(operation, request: request, errno: e)
        }
    }

    /// One ioctl whose argument is a caller-built buffer (variable-length commands); returns
    /// the ioctl's result.
    func ioctlValue(
        _ request: IoctlRequest, buffer: UnsafeMutableRawPointer?, _ operation: IOMMUFDError.Operation
    ) throws(IOMMUFDError) -> CInt {
        switch kernel.ioctl(rawValue, request, buffer) {
        case .success(let value): return value
        case .failure(let e): throw IOMMUFDError(operation, request: request, errno: e)
        }
    }
}
