#if canImport(Glibc)
import Glibc
#endif
import Foundation
import IOMMUCapabilities
import IOMMUCtlKit
import IOMMUFD
import QEMUDevices
import Testing

extension EduKernelTests {
    /// The built `iommuctl` run as a subprocess on the real kernel, its reports checked against
    /// what the test reads itself.
    @Suite struct IOMMUCtlKernelTests {
        struct Run {
            var status: Int32
            var stdout: String
            var stderr: String
        }

        static let tool: String = {
            let bundle = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
            return URL(fileURLWithPath: bundle).deletingLastPathComponent().appendingPathComponent("iommuctl").path
        }()

        /// Runs `iommuctl arguments`, killing it after `timeout` seconds (an unbind that blocks).
        ///
        /// posix_spawn, not Foundation's `Process`: the VM's kernel has no AF_UNIX sockets, which
        /// `Process` needs for its run loop.
        func iommuctl(_ arguments: [String], timeout: Double = 120) throws -> Run {
            try #require(FileManager.default.isExecutableFile(atPath: Self.tool), "build iommuctl first: \(Self.tool)")
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("iommuctl-k-\(UUID())")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: dir) }
            let out = dir.appendingPathComponent("out").path, err = dir.appendingPathComponent("err").path
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            posix_spawn_file_actions_addopen(&actions, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            let argv: [UnsafeMutablePointer<CChar>?] = ([Self.tool] + arguments).map { strdup($0) } + [nil]
            defer { for a in argv { free(a) } }
            var pid: pid_t = 0
            let spawned = posix_spawn(&pid, Self.tool, &actions, nil, argv, environ)
            try #require(spawned == 0, "posix_spawn: \(spawned)")
            var status: CInt = 0
            let deadline = monotonicSeconds() + timeout
            while waitpid(pid, &status, WNOHANG) == 0 {
                if monotonicSeconds() > deadline {
                    kill(pid, SIGKILL)
                    waitpid(pid, &status, 0)
                    Issue.record("iommuctl \(arguments) did not finish within \(timeout) s")
                    break
                }
                usleep(20_000)
            }
            let exited = status & 0x7f == 0
            let r = Run(status: exited ? (status >> 8) & 0xff : 128 + (status & 0x7f),
                        stdout: try String(contentsOfFile: out, encoding: .utf8),
                        stderr: try String(contentsOfFile: err, encoding: .utf8))
            print("iommuctl \(arguments.joined(separator: " ")): exit \(r.status)\n\(r.stdout)\(r.stderr)")
            return r
        }

        func decode<T: Decodable>(_ type: T.Type, _ run: Run) throws -> T {
            try JSONDecoder().decode(T.self, from: Data(run.stdout.utf8))
        }

        func temporaryFile(_ text: String) throws -> String {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("iommuctl-\(UUID()).conf").path
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }

        @Test func probeJSONAgreesWithWhatTheTestReads() throws {
            let edus = EduDevice.all()
            try #require(edus.count == 2, "the VM has two edu devices")
            let r = try iommuctl(["probe", "--json"])
            #expect(r.status == 0, "\(r.stderr)")
            let report = try decode(ProbeReport.self, r)
            #expect(report.kernelRelease == kernelRelease())
            let fd = try IOMMUFDContext()
            #expect(report.features.supported.count == fd.probeFeatures().supported.count)
            #expect(report.features.supported.contains("IOMMU_GET_HW_INFO"))
            let dmar = try #require(report.iommus.first { $0.name.hasPrefix("dmar") }, "\(report.iommus.map(\.name))")
            #expect(dmar.attributes["intel-iommu/cap"] != nil)
            var nodes: [Int?] = []
            for address in edus {
                let pci = try #require(report.pciDevices.first { $0.address == address.description })
                #expect(pci.vendor == "0x1234" && pci.device == "0x11e8")
                #expect(pci.driver == address.driver() && pci.driver == "vfio-pci")
                #expect(pci.numaNode == address.numaNode())
                #expect(pci.iommu == dmar.name && dmar.devices.contains(address.description))
                #expect(pci.iommuGroup != nil)
                nodes.append(pci.numaNode)
                // The hardware info, read here through our own iommufd, matches the tool's.
                let vfio = try #require(report.vfioDevices.first { $0.address == address.description })
                #expect(vfio.error == nil)
                let info = try #require(vfio.hardwareInfo)
                let edu = try EduDevice(address, boundTo: fd)
                let raw = try fd.hardwareInfo(of: edu.device)
                guard case .intelVTd(let vtd) = try HardwareInfoReport(raw).info else {
                    Issue.record("edu is not behind VT-d: \(raw.type)")
                    continue
                }
                #expect(info.type == "intelVTd" && info.typeValue == HardwareInfoKind.intelVTd.rawValue)
                #expect(info.registers["cap"] == "0x" + String(vtd.capability.rawValue, radix: 16))
                #expect(info.registers["ecap"] == "0x" + String(vtd.extendedCapability.rawValue, radix: 16))
                #expect(info.host.kind == "intel-vtd")
                #expect(info.host.mirrorStage.inputAddressBits == HostIOMMUCapabilities(report: try HardwareInfoReport(raw)).inputAddressBits)
                #expect(vfio.cdev == (try address.vfioDevicePath()))
            }
            #expect(nodes.contains(1), "one edu sits on NUMA node 1: \(nodes)")
        }

        @Test func checkPlansBothEduDevices() throws {
            let edus = EduDevice.all().map(\.description)
            let mirrored = try temporaryFile("# the demo's guest\nviommu = intel-vtd\nformat = vtd-second-stage\nlevels = 4\n")
            let r = try iommuctl(["check", mirrored, "--json"])
            #expect(r.status == 0, "\(r.stderr)")
            let report = try decode(CheckReport.self, r)
            #expect(report.devices.map(\.address) == edus)
            #expect(report.devices.allSatisfy { $0.strategy == "softwareMirroring" && $0.iommu == "intel-vtd" })
            // Both behind the same emulated VT-d: one group, one IOAS.
            #expect(report.groups.count == 1 && report.groups.first?.devices == edus)
            #expect(report.refused == 0)

            // Nesting required: QEMU's VT-d cannot nest, so both are refused, exit status 3.
            let nesting = try temporaryFile("viommu = intel-vtd\nformat = x86-64\nnesting = required\n")
            let refused = try iommuctl(["check", nesting, edus[0]])
            #expect(refused.status == 3)
            #expect(refused.stdout.contains("\(edus[0]): refuse: host IOMMU has no nesting"), "\(refused.stdout)")
            #expect(refused.stdout.contains("1 of 1 device refused"))
        }

        @Test func unbindAndBindBackAnEduDevice() throws {
            let address = try #require(EduDevice.all().last)
            let state = FileManager.default.temporaryDirectory.appendingPathComponent("iommuctl-state-\(UUID())").path
            #expect(address.driver() == "vfio-pci")
            // Whatever happens below, the other edu tests find it on vfio-pci again.
            defer { if address.driver() != "vfio-pci" { _ = try? DeviceBinder(store: BindingStore(directory: state)).bind(address) } }

            // The VM bound it at boot: no record, so unbind leaves it without a driver.
            let unbound = try iommuctl(["unbind", address.description, "--state-dir", state, "--json"])
            #expect(unbound.status == 0, "\(unbound.stderr)")
            let u = try decode(BindingReport.self, unbound)
            #expect(u.driverBefore == "vfio-pci" && u.driver == nil && u.changed)
            #expect(address.driver() == nil)
            #expect(throws: IOMMUFDError.self) { try address.vfioDevicePath() }

            // Now it is not on vfio-pci: the tool says so and how to fix it.
            let check = try iommuctl(["check", try temporaryFile("viommu = intel-vtd\n"), address.description])
            #expect(check.status == 1)
            #expect(check.stderr.contains("\(address) is not bound to vfio-pci (its driver is none)"), "\(check.stderr)")
            #expect(check.stderr.contains("`iommuctl bind \(address)`"))
            let again = try iommuctl(["unbind", address.description, "--state-dir", state])
            #expect(again.status == 1 && again.stderr.contains("is not bound to vfio-pci"))

            // Bind it back: vfio-pci again, with a record that it had no driver before.
            let bound = try iommuctl(["bind", address.description, "--state-dir", state, "--json"])
            #expect(bound.status == 0, "\(bound.stderr)")
            let b = try decode(BindingReport.self, bound)
            #expect(b.driverBefore == nil && b.driver == "vfio-pci" && b.previousDriver == nil && b.changed)
            #expect(address.driver() == "vfio-pci")
            #expect(b.cdev == (try address.vfioDevicePath()))
            let record = try JSONDecoder().decode(BindingRecord.self, from: try Data(contentsOf: URL(fileURLWithPath: b.stateFile)))
            #expect(record == BindingRecord(address: address.description, previousDriver: nil, ids: "0x1234:0x11e8"))
            // The device works again: bind it to an iommufd and read its identification register.
            let fd = try IOMMUFDContext()
            let edu = try EduDevice(address, boundTo: fd)
            #expect(try edu.identification() == 0x0100_00ed)
            let repeated = try iommuctl(["bind", address.description, "--state-dir", state])
            #expect(repeated.status == 0 && repeated.stdout.contains("already bound to vfio-pci"))
        }

        @Test func aDeviceInUseIsReportedNotUnbound() throws {
            let address = try #require(EduDevice.all().first)
            let fd = try IOMMUFDContext()
            let held = try EduDevice(address, boundTo: fd)
            let unbind = try iommuctl(["unbind", address.description, "--state-dir", "/tmp/iommuctl-busy"], timeout: 60)
            #expect(unbind.status == 1)
            #expect(unbind.stderr.contains("\(address) is in use (EBUSY): process \(getpid())"), "\(unbind.stderr)")
            #expect(address.driver() == "vfio-pci")
            // probe reports the held device's error and exits nonzero; the other device is read.
            let probe = try iommuctl(["probe", "--json"])
            #expect(probe.status == 1)
            let report = try decode(ProbeReport.self, probe)
            let entry = try #require(report.vfioDevices.first { $0.address == address.description })
            #expect(entry.hardwareInfo == nil && entry.error?.contains("VFIO_DEVICE_BIND_IOMMUFD") == true, "\(entry)")
            #expect(report.vfioDevices.filter { $0.hardwareInfo != nil }.count == report.vfioDevices.count - 1)
            #expect(probe.stderr.contains("1 of \(report.vfioDevices.count) VFIO devices could not be read"))
            _ = held.device
        }

        /// `iommuctl mirror`: the engine mirrors a guest VT-d table into the edu IOAS (one shared
        /// by both devices when the planner groups them) and an AMD v1 table; the report's claims
        /// checked one by one.
        @Test func mirrorReportsTheEngineAtWork() throws {
            let edus = EduDevice.all().map(\.description)
            let r = try iommuctl(["mirror", "--json"])
            #expect(r.status == 0, "\(r.stderr)")
            let report = try decode(MirrorReport.self, r)
            #expect(report.devices.map(\.address) == edus)
            #expect(report.devices.allSatisfy { $0.hardwareInfoType == "intelVTd" && $0.plan.hasPrefix("software mirroring") })
            #expect(report.mirroredDevices == edus)
            #expect(report.mapFile, "guest RAM is a memfd: the IOAS targets map it by IOMMU_IOAS_MAP_FILE")
            // Both behind the one emulated VT-d: the planner makes one group, so one shared IOAS.
            let ioas = report.targets.filter { $0.kind == "ioas" }
            if report.ioasLayout == "shared" {
                #expect(ioas.count == 1 && ioas.first?.devices == edus, "\(ioas)")
                #expect(report.devices.map(\.assignment) == ["starts group 0", "joins group 0"])
            } else {
                #expect(ioas.count == edus.count && ioas.map(\.devices) == edus.map { [$0] }, "\(ioas)")
            }
            #expect(report.targets.count == ioas.count + 1 && report.targets.last?.kind == "page table")
            checkMirrorClaims(report, devices: edus)

            // One device: one IOAS target plus the host table.
            let one = try #require(edus.last)
            let single = try iommuctl(["mirror", "--device", one, "--json"])
            #expect(single.status == 0, "\(single.stderr)")
            let s = try decode(MirrorReport.self, single)
            #expect(s.mirroredDevices == [one] && s.targets.map(\.kind) == ["ioas", "page table"] && s.targets[0].devices == [one])
            checkMirrorClaims(s, devices: [one])

            let text = try iommuctl(["mirror"])
            #expect(text.status == 0, "\(text.stderr)")
            #expect(text.stdout.contains("IOAS: the planner put \(edus.joined(separator: " and ")) in one group"), "\(text.stdout)")
            #expect(text.stdout.contains("mapped into the IOAS by IOMMU_IOAS_MAP_FILE"))
            #expect(text.stdout.contains("walked back: [0x2000000...0x2003fff] -> 0x10000 rw--, [0x4000000...0x41fffff] -> 0x200000 rw-- (equal)"))
            #expect(text.stdout.contains("-> 0x2000000: refused, guest memory unchanged (DMAR"))
            #expect(text.stdout.contains("invariants: clean"))
            print(text.stdout)
        }

        func checkMirrorClaims(_ report: MirrorReport, devices: [String], sourceLocation: SourceLocation = #_sourceLocation) {
            // The guest's table and the AMD v1 table walked back: equal, before and after the change.
            #expect(report.guestTable == ["[0x2000000...0x2003fff] -> 0x10000 rw--", "[0x4000000...0x41fffff] -> 0x200000 rw--"],
                    sourceLocation: sourceLocation)
            #expect(report.hostTable == report.guestTable && report.hostTableMatches && report.hostTableMatchesAfterChange,
                    sourceLocation: sourceLocation)
            // Resync: two areas (four contiguous leaves coalesce); the change: split and re-map, one new map.
            #expect(report.changes.map(\.status) == ["applied", "applied", "applied"], sourceLocation: sourceLocation)
            #expect(report.changes.map(\.maps) == [2, 1, 1] && report.changes.map(\.unmaps) == [0, 1, 0], sourceLocation: sourceLocation)
            #expect(report.changes[1].transientUnmaps == 1, sourceLocation: sourceLocation)
            // DMA through the mirror on every device, bytes equal.
            #expect(report.dma.map(\.device) == devices && report.dma.allSatisfy { $0.equal && $0.bytes == 4096 }, sourceLocation: sourceLocation)
            // After the guest's unmap: refused on every device (memory unchanged; VT-d logs the fault).
            #expect(report.refusedAfterUnmap.map(\.device) == devices, sourceLocation: sourceLocation)
            #expect(report.refusedAfterUnmap.allSatisfy { $0.memoryUnchanged && $0.iova == "0x2000000" }, sourceLocation: sourceLocation)
            #expect(report.refusedAfterUnmap.allSatisfy { $0.fault?.contains("fault addr 0x2000000") == true }, "\(report.refusedAfterUnmap)",
                    sourceLocation: sourceLocation)
            // The guest's new mapping works on every device.
            #expect(report.newMapping.map(\.device) == devices && report.newMapping.allSatisfy(\.equal), sourceLocation: sourceLocation)
            // The engine's metrics: every target did the same work; elisions and latency recorded.
            for t in report.targets {
                #expect(t.maps == 4 && t.unmaps == 1 && t.transientUnmaps == 1 && t.failures == 0, "\(t)", sourceLocation: sourceLocation)
                #expect(t.calls >= t.maps + t.unmaps && t.bytesMapped == (16 << 10) + (2 << 20) + (12 << 10) + 4096
                        && t.bytesUnmapped == 16 << 10, "\(t)", sourceLocation: sourceLocation)
            }
            #expect(report.metrics.changesIn == 3 && report.metrics.changesRefused == 0, sourceLocation: sourceLocation)
            #expect(report.metrics.latencyP50Microseconds > 0 && report.metrics.latencyP99Microseconds >= report.metrics.latencyP50Microseconds,
                    sourceLocation: sourceLocation)
            #expect(report.invariantViolations.isEmpty, "\(report.invariantViolations)", sourceLocation: sourceLocation)
        }
    }
}
