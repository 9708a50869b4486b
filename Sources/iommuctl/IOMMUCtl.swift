// iommuctl: probe IOMMUs and VFIO devices, move devices to vfio-pci and back, check a guest
// platform's requirements against the host IOMMUs, run the software-mirroring demo, and time
// map/unmap, IOAS_COPY and the mirror engine on the kernel (bench).
import ArgumentParser
import Foundation
import IOMMUCtlKit
import IOMMUFD

@main
struct IOMMUCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iommuctl",
        abstract: "Inspect IOMMUs and VFIO devices through Linux's iommufd, and plan a guest's devices on them.",
        discussion: """
            Exit status: 0 success, 1 the operation failed, 3 `check` refused a device, 64 bad usage, \
            65 malformed requirements file, 69 no iommufd (or, with --vm, no VM harness), 77 not permitted.

            Without /dev/iommu here, add --vm to any command to run it inside the bundled test VM.
            """,
        version: "0.1.0",
        subcommands: [Probe.self, Bind.self, Unbind.self, Check.self, Mirror.self, Bench.self])
}

/// Options every command takes.
struct CommonOptions: ParsableArguments {
    @Flag(help: "Run the command inside the bundled test VM (Harness/run-in-vm.sh: Linux with iommufd, an emulated Intel VT-d and two edu DMA devices); for hosts without /dev/iommu.")
    var vm = false

    @Option(help: ArgumentHelp("Seconds the VM may take (with --vm).", valueName: "seconds"))
    var vmTimeout = 600

    @Flag(help: "Print the report as JSON.")
    var json = false
}

/// Runs `body` here, or the whole command line inside the VM with `--vm`; turns errors into a
/// message with hints on standard error and the tool's exit status.
func perform(_ options: CommonOptions, command: String, _ body: () throws -> Void) throws {
    do {
        if options.vm && !VMHarness.insideVM {
            throw ExitCode(try runInVM(timeout: options.vmTimeout))
        }
        try body()
    } catch let exit as ExitCode {
        throw exit
    } catch {
        let tool = ToolError.from(error, command: command)
        FileHandle.standardError.write(Data(("iommuctl \(command): " + tool.description + "\n").utf8))
        throw ExitCode(tool.status.rawValue)
    }
}

/// Prints `report` as JSON or as its text.
func emit(_ options: CommonOptions, _ report: some Encodable, text: String) throws {
    print(options.json ? try encodeJSON(report) : text)
}

/// Runs this command line (less `--vm`) inside the test VM; its standard output and error come
/// back through the VM's work share, so `--json` output stays clean. Returns its exit status.
func runInVM(timeout: Int) throws -> Int32 {
    let executable = VMHarness.currentExecutable()
    let runner = try VMHarness.locate(executable: executable, workingDirectory: FileManager.default.currentDirectoryPath)
    let work = FileManager.default.temporaryDirectory.appendingPathComponent("iommuctl-vm-\(getpid())").path
    try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: work) }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: runner)
    let cwd = FileManager.default.currentDirectoryPath
    var staged = 0
    let arguments = try VMHarness.stagingTemporaryFiles(
        VMHarness.forwardedArguments(Array(CommandLine.arguments.dropFirst())), workingDirectory: cwd,
        isFile: { var d: ObjCBool = false; return FileManager.default.fileExists(atPath: $0, isDirectory: &d) && !d.boolValue },
        stage: { path in
            staged += 1
            let name = "file\(staged)-" + URL(fileURLWithPath: path).lastPathComponent
            try FileManager.default.copyItem(atPath: path, toPath: work + "/" + name)
            return "/tmp/hil/" + name
        })
    process.arguments = ["--timeout", String(timeout), "--", "/bin/sh", "-c",
                         "exec \"$0\" \"$@\" >/tmp/hil/iommuctl.out 2>/tmp/hil/iommuctl.err", executable] + arguments
    var environment = ProcessInfo.processInfo.environment
    environment["HIL_OUT"] = work
    process.environment = environment
    let console = work + "/console.log"
    _ = FileManager.default.createFile(atPath: console, contents: nil)
    process.standardOutput = FileHandle(forWritingAtPath: console)
    process.standardInput = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    if let out = FileManager.default.contents(atPath: work + "/iommuctl.out") { FileHandle.standardOutput.write(out) }
    if let err = FileManager.default.contents(atPath: work + "/iommuctl.err") { FileHandle.standardError.write(err) }
    let status = process.terminationStatus
    if status == 124 || status == 125 {
        let log = (try? String(contentsOfFile: console, encoding: .utf8)) ?? ""
        let tail = log.split(separator: "\n").suffix(20).joined(separator: "\n")
        FileHandle.standardError.write(Data("iommuctl: the VM run failed (status \(status)); its console ended:\n\(tail)\n".utf8))
    }
    return status
}

struct Probe: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the IOMMUs, the PCI devices (IOMMU groups, drivers, NUMA nodes), each VFIO device's IOMMU (IOMMU_GET_HW_INFO, decoded) and the kernel's iommufd features.")

    @OptionGroup var options: CommonOptions
    @Option(help: ArgumentHelp("The iommufd device node.", valueName: "path")) var iommufd = "/dev/iommu"

    func run() throws {
        try perform(options, command: "probe") {
            let report = try probe(iommufdPath: iommufd)
            try emit(options, report, text: report.text)
            let failed = report.vfioDevices.filter { $0.error != nil }
            if !failed.isEmpty {
                throw ToolError("\(failed.count) of \(report.vfioDevices.count) VFIO devices could not be read: "
                                + failed.map(\.address).joined(separator: ", "))
            }
        }
    }
}

struct Bind: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Move a PCI device to vfio-pci, recording its driver so `unbind` can restore it (needs root).",
        discussion: "The record is a small JSON file a device under /run/iommuctl/bindings (emptied at boot, as bindings are). "
            + "Other devices in the same IOMMU group that keep a driver are named: the group is usable only once they leave it. "
            + "With --vm the binding lasts for that VM run only.")

    @OptionGroup var options: CommonOptions
    @Argument(help: ArgumentHelp("The PCI device: DDDD:BB:DD.F or BB:DD.F.", valueName: "device")) var device: String
    @Option(help: ArgumentHelp("Where binding records are kept (default /run/iommuctl/bindings, or $IOMMUCTL_STATE_DIR).", valueName: "dir"))
    var stateDir: String?

    func run() throws {
        try perform(options, command: "bind") {
            let report = try DeviceBinder(store: BindingStore(directory: stateDir)).bind(try parseDevice(device))
            try emit(options, report, text: report.text(command: "bind"))
        }
    }
}

struct Unbind: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Give a PCI device back from vfio-pci to the driver it had before `bind` (none if there is no record; needs root).",
        discussion: "Refuses a device whose VFIO file (or group) a process has open, naming the process: the kernel would "
            + "block the unbind until that process closes it.")

    @OptionGroup var options: CommonOptions
    @Argument(help: ArgumentHelp("The PCI device: DDDD:BB:DD.F or BB:DD.F.", valueName: "device")) var device: String
    @Option(help: ArgumentHelp("Bind to this driver instead of the recorded one.", valueName: "name")) var driver: String?
    @Option(help: ArgumentHelp("Where binding records are kept (default /run/iommuctl/bindings, or $IOMMUCTL_STATE_DIR).", valueName: "dir"))
    var stateDir: String?

    func run() throws {
        try perform(options, command: "unbind") {
            let report = try DeviceBinder(store: BindingStore(directory: stateDir)).unbind(try parseDevice(device), to: driver)
            try emit(options, report, text: report.text(command: "unbind"))
        }
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a guest platform's requirements against the host IOMMU of each device; print each device's plan and the device groups.",
        discussion: "The requirements file has one `key = value` a line (`#` comments). Keys: "
            + RequirementsFile.keys.joined(separator: ", ") + ". `viommu` is required. Exit status 3 when a device is refused.")

    @OptionGroup var options: CommonOptions
    @Argument(help: ArgumentHelp("The guest platform's requirements file.", valueName: "requirements")) var requirements: String
    @Argument(help: ArgumentHelp("PCI devices to check (default: every device bound to vfio-pci).", valueName: "device"))
    var devices: [String] = []
    @Option(help: ArgumentHelp("The iommufd device node.", valueName: "path")) var iommufd = "/dev/iommu"

    func run() throws {
        try perform(options, command: "check") {
            guard let data = FileManager.default.contents(atPath: requirements) else {
                throw ToolError("cannot read the requirements file \(requirements)")
            }
            let file = try RequirementsFile.parse(String(decoding: data, as: UTF8.self), file: requirements)
            _ = try IOMMUFDContext(path: iommufd)
            let targets: [(address: PCIAddress, cdev: String)]
            if devices.isEmpty {
                targets = vfioDevices()
                guard !targets.isEmpty else {
                    throw ToolError("no device is bound to vfio-pci", hints: ["bind one: `iommuctl bind DEVICE`"])
                }
            } else {
                targets = try devices.map { (try parseDevice($0), try vfioCdev(for: try parseDevice($0))) }
            }
            let hosts = try targets.map { ($0.address.description, try readDeviceIOMMU(cdev: $0.cdev, iommufdPath: iommufd).host) }
            let report = planDevices(file, name: requirements, hosts: hosts)
            try emit(options, report, text: report.text)
            if report.refused > 0 { throw ExitCode(ToolError.ExitStatus.refused.rawValue) }
        }
    }
}

struct Mirror: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The mirror engine at work: a guest's VT-d table kept equal in the edu devices' IOAS and an AMD v1 host table, proved with real DMA, a guest change and the engine's metrics (the project's main job).")

    @OptionGroup var options: CommonOptions
    @Option(help: ArgumentHelp("Mirror for this edu device only (default: every edu on vfio-pci, one IOAS per planner group).", valueName: "device"))
    var device: String?
    @Option(help: ArgumentHelp("The iommufd device node.", valueName: "path")) var iommufd = "/dev/iommu"

    func run() throws {
        try perform(options, command: "mirror") {
            let report = try runMirror(device: try device.map(parseDevice), iommufdPath: iommufd)
            try emit(options, report, text: report.text)
        }
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time map/unmap (4 KiB, 2 MiB, 1 GiB areas; singly and as one range; no domain and a mock-IOMMU domain), IOAS_COPY against a second map, and the mirror engine on the null target and a kernel IOAS.",
        discussion: "Each operation is timed on its own; the table gives counts, medians, p99 and means. 2 MiB areas use "
            + "reserved 2 MiB huge pages when free ones exist (else 4 KiB pages); 1 GiB areas need reserved 1 GiB pages. "
            + "Progress goes to standard error: a bar on a terminal, one line a step otherwise.")

    @OptionGroup var options: CommonOptions
    @Option(name: .customLong("areas-4k"), help: "4 KiB areas per map/unmap round.") var areas4K = BenchOptions().areas4K
    @Option(name: .customLong("areas-2m"), help: "2 MiB areas per round (0 skips them).") var areas2M = BenchOptions().areas2M
    @Option(name: .customLong("areas-1g"), help: "1 GiB areas per round (0 or 1).") var areas1G = BenchOptions().areas1G
    @Option(help: "Measured rounds of each map/unmap case (one more warms up).") var rounds = BenchOptions().rounds
    @Option(help: "Areas per IOAS_COPY-against-map case (0 skips them).") var copyAreas = BenchOptions().copyAreas
    @Option(help: "Changes the mirror engine applies per target (0 skips it).") var mirrorChanges = BenchOptions().mirrorChanges
    @Flag(help: "Measure with no domain only, even where the kernel has the mock IOMMU.") var noMockDomain = false
    @Option(help: ArgumentHelp("The iommufd device node.", valueName: "path")) var iommufd = "/dev/iommu"

    var benchOptions: BenchOptions {
        BenchOptions(areas4K: areas4K, areas2M: areas2M, areas1G: areas1G, rounds: rounds, copyAreas: copyAreas,
                     mirrorChanges: mirrorChanges, mockDomain: !noMockDomain)
    }

    func validate() throws {
        do { try benchOptions.validate() } catch { throw ValidationError(error.message) }
    }

    func run() throws {
        try perform(options, command: "bench") {
            let line = BenchProgressLine(terminal: isatty(2) == 1)
            let report = try runBench(benchOptions, iommufdPath: iommufd) { index, total, label in
                FileHandle.standardError.write(Data(line.render(index, total, label).utf8))
            }
            try emit(options, report, text: report.text)
        }
    }
}
