import Foundation
import IOMMUCapabilities
@testable import IOMMUCtlKit
import Testing

/// The VT-d of the test VM (QEMU 10.0.2's intel-iommu), as `IOMMU_GET_HW_INFO` answered there.
func qemuVTdAnswer() throws -> (RawHardwareInfo, HardwareInfoReport, HostIOMMUCapabilities) {
    var data = [UInt8](repeating: 0, count: 24)
    func put(_ v: UInt64, at offset: Int) { for i in 0..<8 { data[offset + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
    data[0] = 1
    put(0xd2008c222f0606, at: 8)
    put(0xf00f4a, at: 16)
    let raw = RawHardwareInfo(type: .intelVTd, data: data, kernelDataLength: 24, capabilities: .atsNotSupported, maxPASIDLog2: 0)
    let report = try HardwareInfoReport(raw)
    return (raw, report, HostIOMMUCapabilities(report: report))
}

@Suite struct ReportTests {
    @Test func tablesPadColumnsAndDropTrailingSpace() {
        let table = TextTable(headers: ["A", "LONG HEADER", "C"], rows: [["wide cell", "x"], ["b", "yy", "zzz"]])
        #expect(table.render() == """
              A          LONG HEADER  C
              wide cell  x
              b          yy           zzz
            """)
        #expect(TextTable(headers: ["X"]).render(indent: "") == "X")
    }

    func sampleProbe() throws -> ProbeReport {
        let (raw, report, host) = try qemuVTdAnswer()
        let json = """
            {"kernelRelease": "7.3.4", "iommufd": "/dev/iommu",
             "features": {"supported": ["IOMMU_DESTROY", "IOMMU_IOAS_ALLOC"], "unsupported": ["IOMMU_HW_QUEUE_ALLOC"]},
             "iommus": [{"name": "dmar0", "devices": ["0000:00:05.0", "0000:81:00.0"],
                         "attributes": {"intel-iommu/cap": "d2008c222f0606", "intel-iommu/ecap": "f00f4a"}}],
             "pciDevices": [{"address": "0000:00:05.0", "vendor": "0x1234", "device": "0x11e8", "pciClass": "0x00ff00",
                             "driver": "vfio-pci", "iommuGroup": 5, "iommu": "dmar0", "vfioDevice": "vfio0"},
                            {"address": "0000:81:00.0", "vendor": "0x1234", "device": "0x11e8", "pciClass": "0x00ff00",
                             "iommuGroup": 8, "numaNode": 1, "iommu": "dmar0"}],
             "vfioDevices": [{"address": "0000:00:05.0", "cdev": "/dev/vfio/devices/vfio0"}]}
            """
        var probe = try JSONDecoder().decode(ProbeReport.self, from: Data(json.utf8))
        probe.vfioDevices[0].hardwareInfo = HardwareInfoEntry(raw, report, host)
        return probe
    }

    @Test func probeJSONRoundTripsAndSaysWhatTheRegistersMean() throws {
        let probe = try sampleProbe()
        let json = try encodeJSON(probe)
        #expect(try JSONDecoder().decode(ProbeReport.self, from: Data(json.utf8)) == probe)
        let info = try #require(probe.vfioDevices[0].hardwareInfo)
        #expect(info.type == "intelVTd" && info.typeValue == 1 && info.dataLength == 24)
        #expect(info.registers == ["cap": "0xd2008c222f0606", "ecap": "0xf00f4a", "flags": "0x1"])
        #expect(info.capabilities == ["atsNotSupported"] && info.capabilityBits == "0x8")
        #expect(info.host.kind == "intel-vtd" && !info.host.nesting && !info.host.dirtyTracking && !info.host.ats)
        #expect(info.host.mirrorStage.format == "VT-d second-stage 4-level")
        #expect(info.host.mirrorStage.inputAddressBits == 48)
        #expect(info.host.mirrorStage.pageSizes == ["4K", "2M", "1G"])
        // Sorted keys: the same report always prints the same bytes.
        #expect(json.contains("\"cdev\" : \"/dev/vfio/devices/vfio0\""))
        #expect(try encodeJSON(probe) == json)
    }

    @Test func probeTextHasEverySection() throws {
        let text = try sampleProbe().text
        #expect(text.hasPrefix("kernel 7.3.4: /dev/iommu knows 2 of 3 iommufd ioctls (not: IOMMU_HW_QUEUE_ALLOC)"))
        #expect(text.contains("  dmar0  2 devices  cap=d2008c222f0606 ecap=f00f4a"))
        #expect(text.contains("  0000:00:05.0  1234:11e8  0x00ff00  vfio-pci  5      -     dmar0  vfio0"))
        #expect(text.contains("  0000:81:00.0  1234:11e8  0x00ff00  -         8      1     dmar0  -"))
        #expect(text.contains("hardware info: intelVTd (type 1), 24 bytes, capabilities atsNotSupported (0x8), max PASID log2 0"))
        #expect(text.contains("IOMMU: intel-vtd; mirror stage VT-d second-stage 4-level, pages 4K 2M 1G, 48-bit IOVA"))
        #expect(text.contains("nesting no, dirty tracking no, PASID 0 bits, PRI no, ATS no, coherent no"))
    }

    @Test func checkPlansGroupsAndRoundTrips() throws {
        let (_, _, vtd) = try qemuVTdAnswer()
        let file = try RequirementsFile.parse("viommu = intel-vtd\nlevels = 4", file: "vtd.conf")
        let report = planDevices(file, name: "vtd.conf", hosts: [("0000:00:05.0", vtd), ("0000:81:00.0", vtd),
                                                                 ("mock", .selftestMock)])
        #expect(report.devices.map(\.strategy) == ["softwareMirroring", "softwareMirroring", "softwareMirroring"])
        #expect(report.devices.map(\.group) == [0, 0, 1])
        #expect(report.groups.map(\.devices) == [["0000:00:05.0", "0000:81:00.0"], ["mock"]])
        #expect(report.devices[0].mismatches.contains("host IOMMU has no nesting"))
        #expect(report.refused == 0)
        #expect(try JSONDecoder().decode(CheckReport.self, from: Data(try encodeJSON(report).utf8)) == report)
        let text = report.text
        #expect(text.contains("guest (vtd.conf): intel-vtd vIOMMU, VT-d second-stage 4-level tables, 48-bit IOVA, 39-bit guest-physical"))
        #expect(text.contains("  0000:00:05.0  intel-vtd  softwareMirroring  0"))
        #expect(text.contains("  group 0: softwareMirroring on intel-vtd: 0000:00:05.0 0000:81:00.0"))
        #expect(text.contains("planner: starts group 1 (IOMMU kind selftest differs from intel-vtd"))

        // Nesting required on a host without it: every device refused, no group.
        let strict = try RequirementsFile.parse("viommu = intel-vtd\nnesting = required\nmixing = refuse")
        let refused = planDevices(strict, name: "strict.conf", hosts: [("0000:00:05.0", vtd)])
        #expect(refused.refused == 1 && refused.groups.isEmpty && refused.devices[0].strategy == "refuse")
        #expect(refused.text.contains("1 of 1 device refused"))
        // Mixing refused: the second, different host is refused although it could be served.
        let mixing = try RequirementsFile.parse("viommu = virtio\nmixing = refuse")
        let mixed = planDevices(mixing, name: "m", hosts: [("a", vtd), ("b", .selftestMock)])
        #expect(mixed.devices.map(\.group) == [0, nil] && mixed.devices[1].strategy == "refuse")
        #expect(mixed.devices[1].plan.hasPrefix("refuse: refused, its IOMMU differs"))
    }

    @Test func bindingAndMirrorReportsRoundTrip() throws {
        let binding = BindingReport(address: "0000:00:05.0", driverBefore: nil, driver: "vfio-pci", previousDriver: nil,
                                    changed: true, cdev: "/dev/vfio/devices/vfio0", stateFile: "/run/x.json", notes: ["n"])
        #expect(try JSONDecoder().decode(BindingReport.self, from: Data(try encodeJSON(binding).utf8)) == binding)
        #expect(binding.text(command: "bind") == """
            0000:00:05.0: no driver -> vfio-pci (/dev/vfio/devices/vfio0); `iommuctl unbind 0000:00:05.0` restores no driver (recorded in /run/x.json)
              note: n
            """)
        let (_, _, vtd) = try qemuVTdAnswer()
        let mirror = MirrorReport(
            kernelRelease: "7.3.4", knownIOCTLs: 22, iommufdIOCTLs: 22, guest: "g",
            devices: [MirrorDeviceEntry(address: "0000:00:05.0", numaNode: nil, hardwareInfoType: "intelVTd",
                                        registers: ["cap": "0x1", "ecap": "0x2"], host: HostCapabilitiesEntry(vtd),
                                        plan: "p", assignment: "starts group 0"),
                      MirrorDeviceEntry(address: "0000:81:00.0", numaNode: 1, hardwareInfoType: "intelVTd",
                                        registers: [:], host: HostCapabilitiesEntry(vtd), plan: "p", assignment: "joins group 0")],
            mirroredDevices: ["0000:00:05.0", "0000:81:00.0"], ioasLayout: "shared",
            ioasDecision: "the planner put 0000:00:05.0 and 0000:81:00.0 in one group (same host IOMMU and plan): one shared IOAS",
            kernelBehaviour: "k", mapFile: true, guestRAMBytes: 16 << 20,
            guestTable: ["[0x2000000...0x2003fff] -> 0x10000 rw--"], hostTableFormat: "AMD v1, 4 levels",
            hostTable: ["[0x2000000...0x2003fff] -> 0x10000 rw--"], hostTableMatches: true, hostTableMatchesAfterChange: true,
            targets: [MirrorTargetEntry(name: "ioas", kind: "ioas", ioas: 3, devices: ["0000:00:05.0", "0000:81:00.0"], calls: 6,
                                        maps: 5, unmaps: 1, bytesMapped: 2 << 20, bytesUnmapped: 16384, transientUnmaps: 1, failures: 0),
                      MirrorTargetEntry(name: "amd-v1", kind: "page table", ioas: nil, devices: [], calls: 6, maps: 5, unmaps: 1,
                                        bytesMapped: 4096, bytesUnmapped: 1000, transientUnmaps: 1, failures: 0)],
            changes: [MirrorChangeEntry(change: "resync", status: "applied", maps: 2, unmaps: 0, transientUnmaps: 0),
                      MirrorChangeEntry(change: "unmap + invalidate 0x2000000 +4096", status: "applied", maps: 1, unmaps: 1, transientUnmaps: 1)],
            dma: [MirrorDMAEntry(device: "0000:00:05.0", transfer: "copy 0x2001000 -> 0x4001000", bytes: 4096, equal: true)],
            refusedAfterUnmap: [MirrorRefusalEntry(device: "0000:00:05.0", iova: "0x2000000", memoryUnchanged: true, fault: "DMAR: [DMA Write NO_PASID] Request device [0000:00:05.0] fault addr 0x2000000 [fault reason 0x05] PTE Write access is not set"),
                                MirrorRefusalEntry(device: "0000:81:00.0", iova: "0x2000000", memoryUnchanged: true, fault: nil)],
            newMapping: [MirrorDMAEntry(device: "0000:00:05.0", transfer: "round trip 0x6000000", bytes: 4096, equal: true)],
            metrics: MirrorMetricsEntry(changesIn: 3, changesRefused: 0, operationsElided: 1, leavesRefused: 0,
                                        latencyP50Microseconds: 41.2, latencyP99Microseconds: 18_645),
            invariantViolations: [])
        #expect(try JSONDecoder().decode(MirrorReport.self, from: Data(try encodeJSON(mirror).utf8)) == mirror)
        let text = mirror.text
        #expect(text.contains("  VT-d cap 0x1 ecap 0x2"))
        #expect(text.contains("  planner: joins group 0"))
        #expect(text.contains("IOAS: the planner put 0000:00:05.0 and 0000:81:00.0 in one group (same host IOMMU and plan): one shared IOAS"))
        #expect(text.contains("guest RAM: 16 MiB memfd, mapped into the IOAS by IOMMU_IOAS_MAP_FILE"))
        #expect(text.contains("  target ioas: IOAS 3 for 0000:00:05.0, 0000:81:00.0"))
        #expect(text.contains("  target amd-v1: host page table, AMD v1, 4 levels (the translated table)"))
        #expect(text.contains("AMD v1, 4 levels walked back: [0x2000000...0x2003fff] -> 0x10000 rw-- (equal)"))
        #expect(text.contains("edu DMA 0000:00:05.0: copy 0x2001000 -> 0x4001000, 4096 bytes equal"))
        #expect(text.contains("guest change: unmap + invalidate 0x2000000 +4096: applied (1 unmap, 1 map, 1 transient)"))
        #expect(text.contains("  DMA 0000:00:05.0 -> 0x2000000: refused, guest memory unchanged (DMAR: fault addr 0x2000000 [fault reason 0x05] PTE Write access is not set)"))
        #expect(text.contains("  DMA 0000:81:00.0 -> 0x2000000: refused, guest memory unchanged\n"))
        #expect(text.contains("  DMA 0000:00:05.0 round trip 0x6000000: 4096 bytes equal"))
        #expect(text.contains("== metrics: 3 changes, 0 refused, 1 ops elided, latency p50 41 µs p99 18.6 ms"))
        #expect(text.contains("  ioas     6      5     1       2 MiB      16 KiB     1          0"))
        #expect(text.contains("  amd-v1   6      5     1       4 KiB      1000 B     1          0"))
        #expect(text.hasSuffix("invariants: clean"))
    }
}
