#if canImport(Glibc)
import Glibc
#endif
import Foundation
import IOMMUCtlKit
import Testing

/// The built `iommuctl`, next to this test bundle.
let iommuctl: String = {
    let bundle = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return URL(fileURLWithPath: bundle).deletingLastPathComponent().appendingPathComponent("iommuctl").path
}()

struct Run {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs `executable` with `arguments`; output goes through files, so a large report cannot block.
func runTool(_ arguments: [String], executable: String = iommuctl, directory: String? = nil,
         environment: [String: String] = [:]) throws -> Run {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("iommuctl-run-\(UUID())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let out = dir.appendingPathComponent("out"), err = dir.appendingPathComponent("err")
    _ = FileManager.default.createFile(atPath: out.path, contents: nil)
    _ = FileManager.default.createFile(atPath: err.path, contents: nil)
    var env = ProcessInfo.processInfo.environment
    env.removeValue(forKey: "IOMMUCTL_HARNESS")
    env.removeValue(forKey: "HIL_VM")
    for (k, v) in environment { env[k] = v }
    // A freshly copied executable can fail with ETXTBSY while another test's child, forked in the
    // moment the copy's write descriptor was open, has not yet exec'd: the kernel's rule, not the
    // tool's. Such a launch never started, so it is tried again.
    var attempt = 0
    let p: Process
    while true {
        let candidate = Process()
        candidate.executableURL = URL(fileURLWithPath: executable)
        candidate.arguments = arguments
        if let directory { candidate.currentDirectoryURL = URL(fileURLWithPath: directory) }
        candidate.environment = env
        candidate.standardOutput = try FileHandle(forWritingTo: out)
        candidate.standardError = try FileHandle(forWritingTo: err)
        candidate.standardInput = FileHandle.nullDevice
        do {
            try candidate.run()
            p = candidate
            break
        } catch let error as NSError {
            let posix = error.userInfo[NSUnderlyingErrorKey] as? NSError
            guard posix?.domain == NSPOSIXErrorDomain, posix?.code == Int(ETXTBSY), attempt < 50 else { throw error }
            attempt += 1
            usleep(20_000)
        }
    }
    p.waitUntilExit()
    return Run(status: p.terminationStatus, stdout: try String(contentsOf: out, encoding: .utf8),
               stderr: try String(contentsOf: err, encoding: .utf8))
}

/// A copy of the built tool in a new temporary folder (the caller removes the folder).
func copyOfTool(_ tag: String) throws -> (folder: URL, path: String) {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("iommuctl-\(tag)-\(UUID())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let copy = dir.appendingPathComponent("iommuctl").path
    try FileManager.default.copyItem(atPath: iommuctl, toPath: copy)
    return (dir, copy)
}

@Suite struct CommandLineTests {
    init() throws {
        try #require(FileManager.default.isExecutableFile(atPath: iommuctl), "build iommuctl first (swift build): \(iommuctl)")
    }

    @Test func probeWithoutIOMMUFDSaysWhatToDo() throws {
        // A path that exists nowhere, so the test means the same on a machine with /dev/iommu.
        let r = try runTool(["probe", "--iommufd", "/nonexistent/iommu"])
        #expect(r.status == 69)
        #expect(r.stdout.isEmpty)
        #expect(r.stderr.hasPrefix("iommuctl probe: open failed (/nonexistent/iommu): ENOENT"), "\(r.stderr)")
        #expect(r.stderr.contains("CONFIG_IOMMUFD") && r.stderr.contains("`iommuctl probe --vm`"), "\(r.stderr)")
    }

    @Test(.enabled(if: access("/dev/iommu", F_OK) != 0, "this machine has /dev/iommu"))
    func probeOnThisMachineWithoutDevIOMMU() throws {
        for args in [["probe"], ["probe", "--json"], ["mirror"]] {
            let r = try runTool(args)
            #expect(r.status == 69, "\(args)")
            #expect(r.stderr.contains("open failed (/dev/iommu): ENOENT") && r.stderr.contains("--vm"), "\(args): \(r.stderr)")
        }
    }

    @Test func aMalformedRequirementsFileFailsWithLineNumbers() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("iommuctl-req-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try "# guest\nviommu = intel-vtd\npasdi = 8\nats = perhaps\n".write(to: dir.appendingPathComponent("requirements.conf"),
                                                                            atomically: true, encoding: .utf8)
        let r = try runTool(["check", "requirements.conf"], directory: dir.path)
        #expect(r.status == 65)
        #expect(r.stderr == """
            iommuctl check: requirements.conf:3: unknown key 'pasdi' (did you mean 'pasid'?)
            requirements.conf:4: 'ats' must be yes or no, got 'perhaps'

            """)
        let missing = try runTool(["check", "/nonexistent.conf"])
        #expect(missing.status == 1 && missing.stderr.contains("cannot read the requirements file /nonexistent.conf"))
        // A valid file gets as far as the iommufd.
        try "viommu = virtio\n".write(to: dir.appendingPathComponent("ok.conf"), atomically: true, encoding: .utf8)
        let ok = try runTool(["check", "ok.conf", "--iommufd", "/nonexistent/iommu"], directory: dir.path)
        #expect(ok.status == 69 && ok.stderr.contains("`iommuctl check --vm`"), "\(ok.stderr)")
    }

    @Test func badDevicesAreNamed() throws {
        let usage = try runTool(["bind", "eth0"])
        #expect(usage.status == 64 && usage.stderr.contains("'eth0' is not a PCI address"), "\(usage.stderr)")
        let absent = try runTool(["unbind", "0000:fe:1f.7"])
        #expect(absent.status == 1 && absent.stderr.contains("no PCI device 0000:fe:1f.7"), "\(absent.stderr)")
        let missingArgument = try runTool(["bind"])
        #expect(missingArgument.status == 64 && missingArgument.stderr.contains("Missing expected argument '<device>'"))
    }

    @Test func vmWithoutAHarnessSaysWhereItLooked() throws {
        // A copy of the tool outside any checkout, run from /.
        let (dir, copy) = try copyOfTool("alone")
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try runTool(["probe", "--vm"], executable: copy, directory: "/")
        #expect(r.status == 69)
        #expect(r.stderr.contains("--vm: cannot find Harness/run-in-vm.sh in any directory above \(dir.path)"), "\(r.stderr)")
        #expect(r.stderr.contains("IOMMUCTL_HARNESS"))
        let wrong = try runTool(["probe", "--vm"], executable: copy, directory: "/", environment: ["IOMMUCTL_HARNESS": "/nowhere"])
        #expect(wrong.status == 69 && wrong.stderr.contains("/nowhere/run-in-vm.sh is not an executable file"))
    }

    @Test func aLaunchRefusedWithETXTBSYIsTriedAgain() throws {
        // The race runTool's retry is for, made on purpose: a writer holds the copy open while
        // the first launches are tried, and lets go 100 ms later.
        let (dir, copy) = try copyOfTool("busy")
        defer { try? FileManager.default.removeItem(at: dir) }
        let writer = open(copy, O_WRONLY | O_CLOEXEC)
        try #require(writer >= 0)
        let released = Thread { usleep(100_000); close(writer) }
        released.start()
        let r = try runTool(["--version"], executable: copy)
        #expect(r.status == 0 && r.stdout == "0.1.0\n")
    }

    @Test func helpVersionAndCompletion() throws {
        let help = try runTool(["--help"])
        #expect(help.status == 0)
        for command in ["probe", "bind", "unbind", "check", "mirror"] { #expect(help.stdout.contains("  \(command) "), "\(command)") }
        let probeHelp = try runTool(["probe", "--help"])
        #expect(probeHelp.status == 0 && probeHelp.stdout.contains("--json") && probeHelp.stdout.contains("--vm"))
        let checkHelp = try runTool(["help", "check"])
        #expect(checkHelp.stdout.contains("pasid") && checkHelp.stdout.contains("Exit status 3"))
        #expect(try runTool(["--version"]).stdout == "0.1.0\n")
        for shell in ["bash", "zsh", "fish"] {
            let c = try runTool(["--generate-completion-script", shell])
            #expect(c.status == 0 && c.stdout.contains("iommuctl") && c.stdout.contains("mirror"), "\(shell)")
        }
        let unknown = try runTool(["frobnicate"])
        #expect(unknown.status == 64)
    }
}
