import IOMMUFD
import Testing

/// One iommufd shared by reference and used from several threads at once, as the mirror
/// engine's workers will.
@Suite(.serialized, .enabled(if: KernelTier.enabled, "needs /dev/iommu"))
struct SharingKernelTests {
    @Test func concurrentMapsAndUnmapsThroughOneSharedIOMMUFD() async throws {
        let shared = SharedIOMMUFDContext(try IOMMUFDContext())
        let ioas = try shared.iommufd.allocateIOAS()
        let workers = 4, perWorker = 64
        let memory = try DMABuffer(length: workers * perWorker * page)
        let base = memory.address
        let kept = try await withThrowingTaskGroup(of: UInt64.self) { group in
            for w in 0..<workers {
                group.addTask {
                    // Each worker maps its pages at its own 4 GiB window, then unmaps every
                    // other one again: maps and unmaps of all workers interleave on one fd.
                    var kept: UInt64 = 0
                    for i in 0..<perWorker {
                        let host = try HostRange(base: base.advanced(by: UInt64((w * perWorker + i) * page))!,
                                                 length: UInt64(page))
                        let iova = try shared.iommufd.map(host, into: ioas, at: IOVA(UInt64(w + 1) << 32 + UInt64(i * page)))
                        if i % 2 == 1 {
                            let gone = try shared.iommufd.unmap(try IOVARange(base: iova, length: UInt64(page)), from: ioas)
                            #expect(gone == UInt64(page))
                        } else {
                            kept += UInt64(page)
                        }
                    }
                    return kept
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(kept == UInt64(workers * perWorker / 2 * page))
        // Exactly the pages each worker kept are there.
        #expect(try shared.iommufd.unmapAll(from: ioas) == kept)
    }
}
