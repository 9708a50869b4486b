import IOMMUCtlKit
import IOMMUFD
import Testing

@Suite struct ErrorTests {
    @Test func noIOMMUFDSaysWhichKernelOptionAndOffersTheVM() {
        let e = ToolError.from(IOMMUFDError(.open, reason: .kernel(.noSuchFileOrDirectory, subject: "/dev/iommu")), command: "probe")
        #expect(e.status == .unavailable && e.status.rawValue == 69)
        #expect(e.message.hasPrefix("open failed (/dev/iommu): ENOENT"))
        #expect(e.description.contains("CONFIG_IOMMUFD"))
        #expect(e.description.contains("modprobe iommufd"))
        #expect(e.description.contains("`iommuctl probe --vm`"))
    }

    @Test func permissionSaysWhatToChange() {
        let e = ToolError.from(IOMMUFDError(.open, reason: .kernel(.permissionDenied, subject: "/dev/iommu")))
        #expect(e.status == .permission && e.status.rawValue == 77)
        #expect(e.description.contains("EACCES") && e.description.contains("udev rule") && e.description.contains("root"))
        let device = ToolError.from(IOMMUFDError(.openDevice, reason: .kernel(.permissionDenied, subject: "/dev/vfio/devices/vfio0")))
        #expect(device.status == .permission && device.description.contains("/dev/vfio/devices"))
        let sysfs = ToolError.from(IOMMUFDError(.sysfs, reason: .kernel(.permissionDenied, subject: "/sys/bus/pci/drivers_probe")))
        #expect(sysfs.status == .permission && sysfs.description.contains("writes sysfs"))
    }

    @Test func busyDevicesNameTheCause() {
        let e = ToolError.from(IOMMUFDError(.openDevice, reason: .kernel(.resourceBusy, subject: "/dev/vfio/devices/vfio0")))
        #expect(e.status == .failure)
        #expect(e.description.contains("EBUSY") && e.description.contains("another process (a VMM)"))
        let bound = ToolError.from(IOMMUFDError(.bind, request: .vfioDeviceBindIOMMUFD, errno: .invalidArgument))
        #expect(bound.description.contains("VFIO_DEVICE_BIND_IOMMUFD") && bound.description.contains("another process"))
    }

    @Test func requirementsErrorsKeepTheirLines() throws {
        do {
            _ = try RequirementsFile.parse("viommu = intel-vtd\nlevels = 6", file: "r.conf")
            Issue.record("parsed")
        } catch {
            let e = ToolError.from(error)
            #expect(e.status == .badRequirements && e.status.rawValue == 65)
            #expect(e.description == "r.conf:2: vtd-second-stage tables have 3-5 levels, not 6")
        }
    }

    @Test func deviceArguments() throws {
        #expect(try parseDevice("00:05.0").description == "0000:00:05.0")
        #expect(throws: ToolError.self) { try parseDevice("0000:00:05") }
        do { _ = try parseDevice("eth0") } catch { #expect(error.status == .usage && error.message.contains("DDDD:BB:DD.F")) }
    }

    @Test func theHarnessIsFoundAboveTheExecutableOrTheWorkingDirectory() throws {
        let present: Set<String> = ["/repo/Harness/run-in-vm.sh"]
        let exists = { (p: String) in present.contains(p) }
        #expect(try VMHarness.locate(executable: "/repo/.build/x86_64-unknown-linux-gnu/debug/iommuctl", workingDirectory: "/",
                                     override: .some(nil), isExecutable: exists) == "/repo/Harness/run-in-vm.sh")
        #expect(try VMHarness.locate(executable: "/usr/local/bin/iommuctl", workingDirectory: "/repo/Sources",
                                     override: .some(nil), isExecutable: exists) == "/repo/Harness/run-in-vm.sh")
        #expect(try VMHarness.locate(executable: "/x", workingDirectory: "/", override: "/repo/Harness", isExecutable: exists)
                == "/repo/Harness/run-in-vm.sh")
        do {
            _ = try VMHarness.locate(executable: "/usr/bin/iommuctl", workingDirectory: "/home/me", override: .some(nil), isExecutable: exists)
            Issue.record("found a harness that is not there")
        } catch {
            #expect(error.status == .unavailable)
            #expect(error.message.contains("cannot find Harness/run-in-vm.sh") && error.message.contains("/usr/bin")
                    && error.message.contains("/home/me"))
            #expect(error.description.contains("IOMMUCTL_HARNESS"))
        }
        #expect(throws: ToolError.self) {
            try VMHarness.locate(executable: "/x", workingDirectory: "/", override: "/nowhere", isExecutable: exists)
        }
    }

    @Test func filesUnderTmpAreStagedForTheVM() {
        let files: Set<String> = ["/tmp/a.conf", "/tmp/work/b.conf", "/home/me/c.conf"]
        var staged: [String] = []
        let stage = { (p: String) -> String in staged.append(p); return "/tmp/hil/" + p.split(separator: "/").last! }
        #expect(VMHarness.stagingTemporaryFiles(["check", "/tmp/a.conf", "b.conf", "/home/me/c.conf", "/tmp/none"],
                                                workingDirectory: "/tmp/work", isFile: files.contains, stage: stage)
                == ["check", "/tmp/hil/a.conf", "b.conf", "/home/me/c.conf", "/tmp/none"])
        #expect(staged == ["/tmp/a.conf"])
        #expect(VMHarness.stagingTemporaryFiles(["../a.conf"], workingDirectory: "/tmp/x", isFile: { _ in true }, stage: stage)
                == ["/tmp/hil/a.conf"])
    }

    @Test func theVMGetsTheCommandLineWithoutVM() {
        #expect(VMHarness.forwardedArguments(["probe", "--vm", "--json"]) == ["probe", "--json"])
        #expect(VMHarness.forwardedArguments(["check", "--vm-timeout", "30", "r.conf", "--vm-timeout=9", "--vm"]) == ["check", "r.conf"])
    }
}
