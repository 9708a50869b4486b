#if canImport(Glibc)
import Glibc
#endif
import Foundation
import IOMMUCtlKit
import IOMMUFD
import Testing

/// `iommuctl bench` run as a subprocess on the real kernel with small counts; its `--json`
/// report parsed back and checked against the counts asked for and what the test reads itself.
@Suite(.serialized, .enabled(if: KernelTier.enabled, "needs /dev/iommu"))
struct IOMMUCtlBenchKernelTests {
    let tool = EduKernelTests.IOMMUCtlKernelTests()

    func freeHugePages(_ kB: Int) -> Int {
        (try? String(contentsOfFile: "/sys/kernel/mm/hugepages/hugepages-\(kB)kB/free_hugepages", encoding: .utf8))
            .flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
    }

    @Test func benchJSONHasEveryCaseWithTheCountsAskedFor() throws {
        let mock = try IOMMUFDContext().hasMockIOMMU
        let hugeBefore = freeHugePages(2048)
        let r = try tool.iommuctl(["bench", "--json", "--areas-4k", "8", "--areas-2m", "2", "--areas-1g", "0", "--rounds", "2",
                                   "--copy-areas", "4", "--mirror-changes", "128"], timeout: 600)
        #expect(r.status == 0, "\(r.stderr)")
        let report = try JSONDecoder().decode(BenchReport.self, from: Data(r.stdout.utf8))
        #expect(report.kernelRelease == kernelRelease())
        #expect(report.machine == (VMHarness.insideVM ? "vm" : "host"))
        #expect(report.mockIOMMU == mock)
        #expect(report.options == BenchOptions(areas4K: 8, areas2M: 2, areas1G: 0, rounds: 2, copyAreas: 4, mirrorChanges: 128))
        let domains = mock ? ["none", "mock"] : ["none"]
        for domain in domains {
            func only(_ name: String) -> BenchCase? {
                let found = report.cases.filter { $0.name == name && $0.domain == domain }
                #expect(found.count == 1, "\(name), \(domain): \(report.cases.map(\.name))")
                return found.first
            }
            // Two measured rounds: 8 single maps each, one range map each.
            #expect(only("map 4 KiB areas, singly")?.operations == 16)
            #expect(only("unmap 4 KiB areas, singly")?.operations == 16)
            #expect(only("map 8 x 4 KiB as one range")?.bytesPerOperation == 8 * 4096)
            #expect(only("unmap 8 x 4 KiB as one range")?.operations == 2)
            let twoMiB = try #require(only("map 2 MiB areas, singly"))
            #expect(twoMiB.operations == 4 && twoMiB.bytesPerOperation == 2 << 20)
            // The VM reserves 64 huge pages of 2 MiB (hugepages=64): the 2 MiB areas use them.
            if hugeBefore >= 2 { #expect(twoMiB.backing == "2 MiB hugetlb", "\(report.skipped)") }
            #expect(only("second IOAS by IOAS_COPY, 4 KiB areas")?.operations == 4)
            #expect(only("second IOAS by IOAS_MAP, 4 KiB areas")?.operations == 4)
            #expect(only("second IOAS by IOAS_COPY, 2 MiB areas")?.operations == 1)
        }
        let mirror = report.cases.filter { $0.group == "mirror" }
        #expect(mirror.map(\.domain) == ["null target", "IOAS, domain \(domains.last!)"])
        #expect(mirror.allSatisfy { $0.operations == 128 })
        #expect(report.cases.count == domains.count * (8 + 4) + 2)
        for c in report.cases {
            #expect(c.medianNanoseconds > 0 && c.p99Nanoseconds >= c.medianNanoseconds && c.meanNanoseconds > 0, "\(c)")
        }
        // The huge pages went back when the run ended.
        #expect(freeHugePages(2048) == hugeBefore)
    }

    /// 1 GiB areas need reserved 1 GiB pages: without them the case is skipped and says what the
    /// kernel answered; with them (run-in-vm.sh --append "hugepagesz=1G hugepages=1") it runs.
    @Test func oneGiBAreasRunOrSaySoAndTheTextHasTheTable() throws {
        let r = try tool.iommuctl(["bench", "--areas-4k", "1", "--areas-2m", "0", "--areas-1g", "1", "--rounds", "1",
                                   "--copy-areas", "0", "--mirror-changes", "0", "--no-mock-domain"], timeout: 600)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("case") && r.stdout.contains("median") && r.stdout.contains("map 4 KiB areas, singly"), "\(r.stdout)")
        if freeHugePages(1_048_576) >= 1 {
            #expect(r.stdout.contains("map 1 GiB areas, singly") && r.stdout.contains("1 GiB hugetlb"), "\(r.stdout)")
        } else {
            #expect(r.stdout.contains("skipped: 1 GiB areas, domain none: allocateBuffer"), "\(r.stdout)")
            #expect(r.stdout.contains("hugepagesz=1G hugepages=1"))
        }
        #expect(r.stderr.contains("bench: [0/2] map/unmap 4 KiB areas, domain none"), "\(r.stderr)")
        #expect(r.stderr.hasSuffix("bench: [2/2] done\n"), "\(r.stderr)")
    }
}
