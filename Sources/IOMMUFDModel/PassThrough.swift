public import IOMMUFD
import Synchronization

/// The calls the model does not model: memory (anonymous `mmap`, memfds), eventfds, `poll`,
/// sysfs links and directories, and every call on a descriptor that is not the model's. They go
/// to the real kernel through ``LinuxKernel`` and, while tracing, are recorded as
/// ``IOMMUFDModel/TraceEntry/Call/other(_:)`` entries, so a test sees every system call the
/// code above made.
extension IOMMUFDModel {
    /// The model's own descriptors are numbered from 65536 up; lower numbers are the process's.
    static func isModelDescriptor(_ fd: CInt) -> Bool { fd >= Files.firstDescriptor }

    func passThrough<T>(_ fd: CInt, _ name: String, _ call: (LinuxKernel) -> Result<T, Errno>) -> Result<T, Errno> {
        let r = call(LinuxKernel())
        if case .failure(let e) = r { record(fd, .other(name), [], e) } else { record(fd, .other(name), [], nil) }
        return r
    }

    public func memfdCreate(_ name: String, flags: UInt32) -> Result<CInt, Errno> {
        passThrough(-1, "memfd_create") { $0.memfdCreate(name, flags: flags) }
    }

    public func ftruncate(_ fd: CInt, length: Int64) -> Result<Void, Errno> {
        passThrough(fd, "ftruncate") { $0.ftruncate(fd, length: length) }
    }

    public func eventfd(initialValue: UInt32, flags: CInt) -> Result<CInt, Errno> {
        passThrough(-1, "eventfd") { $0.eventfd(initialValue: initialValue, flags: flags) }
    }

    public func poll(_ fd: CInt, events: Int16, timeoutMilliseconds: CInt) -> Result<Int16, Errno> {
        passThrough(fd, "poll") { $0.poll(fd, events: events, timeoutMilliseconds: timeoutMilliseconds) }
    }

    public func readlink(_ path: String) -> Result<String, Errno> {
        passThrough(-1, "readlink(\(path))") { $0.readlink(path) }
    }

    public func listDirectory(_ path: String) -> Result<[String], Errno> {
        passThrough(-1, "listDirectory(\(path))") { $0.listDirectory(path) }
    }
}
