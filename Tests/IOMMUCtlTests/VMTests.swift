#if canImport(Glibc)
import Glibc
#endif
import Foundation
import IOMMUCtlKit
import Testing

/// The test kernel `Harness/build-kernel.sh` cached, newest first; `nil` when none is built.
let cachedTestKernel: String? = {
    let env = ProcessInfo.processInfo.environment
    if let k = env["HIL_KERNEL"], FileManager.default.fileExists(atPath: k) { return k }
    let cache = (env["XDG_CACHE_HOME"] ?? ((env["HOME"] ?? "/root") + "/.cache")) + "/swift-iommufd/kernel"
    let images = ((try? FileManager.default.contentsOfDirectory(atPath: cache)) ?? [])
        .map { cache + "/" + $0 + "/bzImage" }.filter { FileManager.default.fileExists(atPath: $0) }
    return images.max { a, b in
        let da = (try? FileManager.default.attributesOfItem(atPath: a)[.modificationDate] as? Date) ?? .distantPast
        let db = (try? FileManager.default.attributesOfItem(atPath: b)[.modificationDate] as? Date) ?? .distantPast
        return da < db
    }
}()

/// `--vm` end to end: the built tool boots the bundled VM (where the harness has a test kernel
/// and QEMU: CI builds the kernel before the host tier) and runs the same command there.
@Suite(.enabled(if: cachedTestKernel != nil && access("/usr/bin/qemu-system-x86_64", X_OK) == 0,
                "needs QEMU and a test kernel built by Harness/build-kernel.sh"))
struct VMTests {
    @Test func theSameCommandRunsInTheVMWithCleanJSONAndItsExitStatus() throws {
        let kernel = try #require(cachedTestKernel)
        let probe = try runTool(["probe", "--vm", "--json", "--vm-timeout", "300"], environment: ["HIL_KERNEL": kernel])
        #expect(probe.status == 0, "\(probe.stderr)")
        let report = try JSONDecoder().decode(ProbeReport.self, from: Data(probe.stdout.utf8))
        #expect(report.kernelRelease.hasPrefix("7."))
        #expect(report.vfioDevices.count == 2 && report.vfioDevices.allSatisfy { $0.hardwareInfo?.host.kind == "intel-vtd" })

        // A file under /tmp, which the VM does not share, is staged; check's status 3 comes back.
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("iommuctl-vm-\(UUID()).conf").path
        try "viommu = intel-vtd\nformat = x86-64\nnesting = required\n".write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let check = try runTool(["check", file, "--vm"], environment: ["HIL_KERNEL": kernel])
        #expect(check.status == 3, "\(check.stderr)")
        #expect(check.stdout.contains("2 of 2 devices refused"), "\(check.stdout)")
    }

    /// `bench --vm --json` with small counts: the measurements come back as clean JSON.
    @Test func benchRunsInTheVMAndItsJSONParses() throws {
        let kernel = try #require(cachedTestKernel)
        let r = try runTool(["bench", "--vm", "--json", "--vm-timeout", "400", "--areas-4k", "4", "--areas-2m", "1", "--areas-1g", "0",
                             "--rounds", "1", "--copy-areas", "2", "--mirror-changes", "64"], environment: ["HIL_KERNEL": kernel])
        #expect(r.status == 0, "\(r.stderr)")
        let report = try JSONDecoder().decode(BenchReport.self, from: Data(r.stdout.utf8))
        #expect(report.machine == "vm" && report.kernelRelease.hasPrefix("7."))
        #expect(report.cases.contains { $0.name == "map 4 KiB areas, singly" && $0.domain == "none" && $0.operations == 4 })
        #expect(report.cases.filter { $0.group == "mirror" }.count == 2)
        #expect(r.stderr.contains("bench: [0/"), "progress lines, not a bar, off a terminal: \(r.stderr)")
    }
}
