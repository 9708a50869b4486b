#if canImport(Glibc)
import Glibc
#endif
import IOMMUFD
import IOMMUFDModel
import Testing

let page = PageSize.system.bytes

/// A fresh model, with the selftest's reserved regions unless told otherwise.
func newModel(_ configuration: IOMMUFDModel.Configuration = .init(selftest: true)) -> IOMMUFDModel {
    IOMMUFDModel(configuration)
}

/// The errno of a failed result, `nil` on success.
func failure<T>(_ r: Result<T, Errno>) -> Errno? { if case .failure(let e) = r { e } else { nil } }

func iovas(_ base: UInt64, _ length: UInt64) -> IOVARange { try! IOVARange(base: IOVA(base), length: length) }
func host(_ base: UInt64, _ length: UInt64) -> HostRange { try! HostRange(base: HostAddress(base), length: length) }

/// A process address for maps: the model never dereferences it.
let fakeHost: UInt64 = 0x7f00_0000_0000

/// Expects `body` to throw an ``IOMMUFDError``; returns it.
@discardableResult
func expectError<R: ~Copyable>(
    sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> R
) -> IOMMUFDError? {
    do {
        _ = try body()
        Issue.record("expected an error, the call succeeded", sourceLocation: sourceLocation)
    } catch let error as IOMMUFDError {
        return error
    } catch {
        Issue.record("expected an IOMMUFDError, got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

