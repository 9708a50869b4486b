#if canImport(Glibc)
import Glibc
#endif
import Foundation
import IOMMUCtlKit
import Testing

/// `iommuctl bench` on the host: its arguments, errors, JSON shape and progress display. The
/// measurements themselves run on the real kernel (KernelTests.IOMMUCtlBenchKernelTests).
@Suite struct BenchTests {
    static let sample = BenchReport(
        kernelRelease: "7.3.0", iommufd: "/dev/iommu", machine: "vm", mockIOMMU: true, options: BenchOptions(areas4K: 8),
        hugePages: [BenchHugePages(size: "2 MiB", reserved: 64, free: 64), BenchHugePages(size: "1 GiB", reserved: 0, free: 0)],
        cases: [
            BenchCase(group: "map", name: "map 4 KiB areas, singly", domain: "none", backing: "4 KiB pages", operations: 24,
                      bytesPerOperation: 4096, medianNanoseconds: 10_510, p99Nanoseconds: 31_000, meanNanoseconds: 11_200.5),
            BenchCase(group: "mirror", name: "mirror engine, one-page changes", domain: "null target", backing: "4 KiB pages",
                      operations: 2000, bytesPerOperation: 4096, medianNanoseconds: 340, p99Nanoseconds: 651, meanNanoseconds: 1291),
        ],
        skipped: [BenchSkip(name: "1 GiB areas, domain none", reason: "allocateBuffer failed: ENOMEM")])

    @Test func theJSONReportRoundTripsWithTheDocumentedKeys() throws {
        let json = try encodeJSON(Self.sample)
        #expect(try JSONDecoder().decode(BenchReport.self, from: Data(json.utf8)) == Self.sample)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        #expect(Set(object.keys) == ["kernelRelease", "iommufd", "machine", "mockIOMMU", "options", "hugePages", "cases", "skipped"])
        let first = try #require((object["cases"] as? [[String: Any]])?.first)
        #expect(Set(first.keys) == ["group", "name", "domain", "backing", "operations", "bytesPerOperation",
                                    "medianNanoseconds", "p99Nanoseconds", "meanNanoseconds"])
        #expect(first["medianNanoseconds"] as? Double == 10_510)
        let options = try #require(object["options"] as? [String: Any])
        #expect(options["areas4K"] as? Int == 8 && options["mockDomain"] as? Bool == true)
    }

    @Test func theSummaryTableHasEveryCaseAndTheSkips() {
        let text = Self.sample.text
        #expect(text.hasPrefix("kernel 7.3.0 (vm), /dev/iommu; mock IOMMU: yes; huge pages: 2 MiB 64 free of 64, 1 GiB 0 free of 0"))
        #expect(text.contains("case                             domain       backing      ops   median    p99       mean"), "\(text)")
        #expect(text.contains("map 4 KiB areas, singly          none         4 KiB pages  24    10.5 us   31.0 us   11.2 us"), "\(text)")
        #expect(text.contains("mirror engine, one-page changes  null target  4 KiB pages  2000  340.0 ns  651.0 ns  1.29 us"), "\(text)")
        #expect(text.hasSuffix("skipped: 1 GiB areas, domain none: allocateBuffer failed: ENOMEM"))
    }

    @Test func progressIsABarOnATerminalAndLinesElsewhere() {
        let tty = BenchProgressLine(terminal: true, width: 10)
        #expect(tty.render(0, 4, "map 4 KiB") == "\r[----------] 0/4 map 4 KiB\u{1B}[K")
        #expect(tty.render(2, 4, "copy") == "\r[#####-----] 2/4 copy\u{1B}[K")
        #expect(tty.render(4, 4, "done") == "\r[##########] 4/4 done\u{1B}[K\n")
        let plain = BenchProgressLine(terminal: false)
        #expect(plain.render(1, 12, "mirror engine, null target") == "bench: [1/12] mirror engine, null target\n")
    }

    @Test func countsOutOfRangeAreUsageErrors() throws {
        #expect(throws: ToolError.self) { try BenchOptions(rounds: 0).validate() }
        #expect(throws: ToolError.self) { try BenchOptions(areas1G: 2).validate() }
        #expect(throws: Never.self) { try BenchOptions(areas2M: 0, areas1G: 0, copyAreas: 0, mirrorChanges: 0).validate() }
        try #require(FileManager.default.isExecutableFile(atPath: iommuctl), "build iommuctl first (swift build): \(iommuctl)")
        let r = try runTool(["bench", "--rounds", "0", "--iommufd", "/nonexistent/iommu"])
        #expect(r.status == 64, "\(r.stderr)")
        #expect(r.stderr.contains("--rounds must be at least 1, not 0"), "\(r.stderr)")
        let big = try runTool(["bench", "--areas-1g", "3"])
        #expect(big.status == 64 && big.stderr.contains("1 of 1 GiB"), "\(big.stderr)")
    }

    @Test func withoutIOMMUFDBenchSaysWhatToDo() throws {
        try #require(FileManager.default.isExecutableFile(atPath: iommuctl), "build iommuctl first (swift build): \(iommuctl)")
        let r = try runTool(["bench", "--json", "--iommufd", "/nonexistent/iommu"])
        #expect(r.status == 69)
        #expect(r.stdout.isEmpty)
        #expect(r.stderr.hasPrefix("iommuctl bench: open failed (/nonexistent/iommu): ENOENT"), "\(r.stderr)")
        #expect(r.stderr.contains("`iommuctl bench --vm`"), "\(r.stderr)")
    }

    @Test func helpNamesTheCountsAndTheVM() throws {
        try #require(FileManager.default.isExecutableFile(atPath: iommuctl), "build iommuctl first (swift build): \(iommuctl)")
        let r = try runTool(["bench", "--help"])
        #expect(r.status == 0)
        for option in ["--areas-4k", "--areas-2m", "--areas-1g", "--rounds", "--copy-areas", "--mirror-changes", "--no-mock-domain",
                       "--vm", "--json"] {
            #expect(r.stdout.contains(option), "\(option): \(r.stdout)")
        }
    }
}
