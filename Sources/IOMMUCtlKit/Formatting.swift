#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import SystemCalls

/// A plain-text table: a header row and rows, columns padded to their widest cell.
public struct TextTable: Sendable {
    public var headers: [String]
    public var rows: [[String]]

    public init(headers: [String], rows: [[String]] = []) {
        self.headers = headers
        self.rows = rows
    }

    /// The table, each line indented by `indent` and without trailing spaces; short rows are padded.
    public func render(indent: String = "  ") -> String {
        let all = [headers] + rows
        let columns = all.map(\.count).max() ?? 0
        let widths = (0..<columns).map { c in all.map { c < $0.count ? $0[c].count : 0 }.max() ?? 0 }
        return all.map { row in
            let cells = (0..<columns).map { c -> String in
                let cell = c < row.count ? row[c] : ""
                return c == columns - 1 ? cell : cell + String(repeating: " ", count: widths[c] - cell.count)
            }
            var line = indent + cells.joined(separator: "  ")
            while line.last == " " { line.removeLast() }
            return line
        }.joined(separator: "\n")
    }
}

/// JSON for every report: sorted keys, pretty-printed, so output diffs cleanly.
public func encodeJSON(_ value: some Encodable) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

/// `yes` or `no`.
func yesNo(_ b: Bool) -> String { b ? "yes" : "no" }

extension StageEntry {
    var summary: String {
        "\(format ?? "unknown format"), pages \(pageSizes.joined(separator: " ")), \(inputAddressBits)-bit IOVA"
            + (signExtended ? " (lower half)" : "") + (dirtyTracking ? ", dirty tracking" : "")
    }
}

extension ProbeReport {
    /// The readable form: kernel and features, IOMMUs, PCI devices, then each VFIO device's IOMMU.
    public var text: String {
        var out: [String] = []
        out.append("kernel \(kernelRelease): \(iommufd) knows \(features.supported.count) of "
                   + "\(features.supported.count + features.unsupported.count) iommufd ioctls"
                   + (features.unsupported.isEmpty ? "" : " (not: \(features.unsupported.joined(separator: ", ")))"))
        out.append("")
        out.append("IOMMUs (/sys/class/iommu)")
        if iommus.isEmpty { out.append("  none") } else {
            out.append(TextTable(headers: ["NAME", "DEVICES", "REGISTERS"], rows: iommus.map { i in
                [i.name, i.devices.count == 1 ? "1 device" : "\(i.devices.count) devices",
                 i.attributes.sorted { $0.key < $1.key }.filter { ["cap", "ecap", "features"].contains($0.key.split(separator: "/").last.map(String.init) ?? "") }
                    .map { "\($0.key.split(separator: "/").last!)=\($0.value)" }.joined(separator: " ")]
            }).render())
        }
        out.append("")
        out.append("PCI devices")
        out.append(TextTable(headers: ["ADDRESS", "ID", "CLASS", "DRIVER", "GROUP", "NODE", "IOMMU", "VFIO"], rows: pciDevices.map { d in
            [d.address, "\(d.vendor.dropFirst(2)):\(d.device.dropFirst(2))", d.pciClass, d.driver ?? "-",
             d.iommuGroup.map(String.init) ?? "-", d.numaNode.map(String.init) ?? "-", d.iommu ?? "-", d.vfioDevice ?? "-"]
        }).render())
        out.append("")
        out.append("VFIO devices (each bound to a fresh iommufd, IOMMU_GET_HW_INFO)")
        if vfioDevices.isEmpty { out.append("  none: bind one with `iommuctl bind DEVICE`") }
        for v in vfioDevices {
            out.append("  \(v.address) \(v.cdev) (NUMA node \(v.numaNode.map(String.init) ?? "none"))")
            if let error = v.error {
                out.append(contentsOf: error.split(separator: "\n").map { "    error: " + $0.trimmed })
                continue
            }
            guard let h = v.hardwareInfo else { continue }
            out.append("    hardware info: \(h.type) (type \(h.typeValue)), \(h.dataLength) bytes, capabilities "
                       + "\(h.capabilities.isEmpty ? "none" : h.capabilities.joined(separator: " ")) (\(h.capabilityBits)), "
                       + "max PASID log2 \(h.maxPASIDLog2)")
            if !h.registers.isEmpty {
                out.append("    registers: " + h.registers.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
            }
            let c = h.host
            out.append("    IOMMU: \(c.kind); mirror stage \(c.mirrorStage.summary)")
            out.append("    nesting \(yesNo(c.nesting))"
                       + (c.nestedStages.isEmpty ? "" : " (\(c.nestedStages.map(\.format).joined(separator: ", ")))")
                       + ", dirty tracking \(yesNo(c.dirtyTracking)), PASID \(c.pasidBits) bits, PRI \(yesNo(c.pri)), "
                       + "ATS \(yesNo(c.ats)), coherent \(yesNo(c.coherent))"
                       + (c.outputAddressBits.map { ", output \($0)-bit" } ?? ""))
        }
        return out.joined(separator: "\n")
    }
}

extension CheckReport {
    /// The readable form: the guest, a table of plans, the mismatches, then the groups.
    public var text: String {
        let r = requirements
        var out = ["guest (\(requirementsFile)): \(r.viommu) vIOMMU" + (r.format.map { ", \($0) tables" } ?? "")
                   + ", \(r.addressBits)-bit IOVA, \(r.guestPhysicalAddressBits)-bit guest-physical, pages "
                   + "\(r.pageSizes.joined(separator: " ")), PASID \(r.pasidBits) bits, nesting \(r.nesting)"
                   + (r.dirtyTracking ? ", dirty tracking" : "") + (r.pri ? ", PRI" : "") + (r.ats ? ", ATS" : ""), ""]
        out.append(TextTable(headers: ["DEVICE", "IOMMU", "PLAN", "GROUP"], rows: devices.map {
            [$0.address, $0.iommu, $0.strategy, $0.group.map(String.init) ?? "-"]
        }).render())
        for d in devices {
            out.append("")
            out.append("  \(d.address): \(d.plan)")
            out.append("    planner: \(d.assignment)")
        }
        out.append("")
        out.append("groups (one IOAS and one plan each)")
        if groups.isEmpty { out.append("  none: every device is refused") }
        for g in groups { out.append("  group \(g.index): \(g.strategy) on \(g.iommu): \(g.devices.joined(separator: " "))") }
        if refused > 0 { out.append("\n\(refused) of \(devices.count) device\(devices.count == 1 ? "" : "s") refused") }
        return out.joined(separator: "\n")
    }
}

extension BindingReport {
    /// One line for `bind` or `unbind`, then any notes.
    public func text(command: String) -> String {
        var line: String
        if command == "bind" {
            line = changed
                ? "\(address): \(driverBefore ?? "no driver") -> vfio-pci" + (cdev.map { " (\($0))" } ?? "")
                    + "; `iommuctl unbind \(address)` restores \(previousDriver ?? "no driver") (recorded in \(stateFile))"
                : "\(address) is already bound to vfio-pci" + (cdev.map { " (\($0))" } ?? "")
        } else {
            line = "\(address): vfio-pci -> \(driver ?? "no driver")"
        }
        return ([line] + notes.map { "  note: " + $0 }).joined(separator: "\n")
    }
}

private func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s : s + String(repeating: " ", count: width - s.count) }
private func microseconds(_ us: Double) -> String {
    us < 10 ? "\((us * 10).rounded() / 10) µs" : us < 10_000 ? "\(Int(us.rounded())) µs" : "\((us / 100).rounded() / 10) ms"
}
/// A DMAR fault record from "fault addr" on (the device is named on the line already).
private func faultReason(_ record: String) -> String {
    guard let at = record.firstRange(of: "fault addr") else { return record }
    return String(record[at.lowerBound...])
}
private func byteCount(_ b: UInt64) -> String {
    b >= 1 << 20 && b % (1 << 20) == 0 ? "\(b >> 20) MiB" : b >= 1024 && b % 1024 == 0 ? "\(b >> 10) KiB" : "\(b) B"
}

extension MirrorReport {
    /// The demo's readable account.
    public var text: String {
        var out = ["kernel \(kernelRelease): /dev/iommu knows \(knownIOCTLs) of \(iommufdIOCTLs) iommufd ioctls", "",
                   "== devices and their IOMMU (guest: \(guest))"]
        for d in devices {
            out.append("\(d.address) (NUMA node \(d.numaNode.map(String.init) ?? "none")): \(d.hardwareInfoType) IOMMU, "
                       + "IOVA \(d.host.mirrorStage.inputAddressBits) bits, pages [\(d.host.mirrorStage.pageSizes.joined(separator: ", "))], "
                       + "nesting \(d.host.nesting), dirty tracking \(d.host.dirtyTracking)")
            if let cap = d.registers["cap"], let ecap = d.registers["ecap"] { out.append("  VT-d cap \(cap) ecap \(ecap)") }
            out.append("  plan: \(d.plan)")
            out.append("  planner: \(d.assignment)")
        }
        out.append("")
        out.append("== the mirror engine: guest VT-d table -> \(targets.count) targets (\(mirroredDevices.joined(separator: ", ")))")
        out.append("IOAS: \(ioasDecision)")
        out.append("guest RAM: \(guestRAMBytes >> 20) MiB memfd, "
                   + (mapFile ? "mapped into the IOAS by IOMMU_IOAS_MAP_FILE" : "mapped by IOMMU_IOAS_MAP (no MAP_FILE here)")
                   + "; kernel: \(kernelBehaviour)")
        for t in targets {
            out.append("  target \(t.name): " + (t.kind == "ioas" ? "IOAS \(t.ioas.map(String.init) ?? "?") for \(t.devices.joined(separator: ", "))" : "host page table, \(hostTableFormat) (the translated table)"))
        }
        out.append("guest table:   " + guestTable.joined(separator: ", "))
        out.append("\(hostTableFormat) walked back: " + hostTable.joined(separator: ", ")
                   + (hostTableMatches ? " (equal)" : " (DIFFERENT)"))
        for d in dma {
            out.append("edu DMA \(d.device): \(d.transfer), \(d.bytes) bytes " + (d.equal ? "equal" : "DIFFERENT"))
        }
        out.append("guest change: " + changes.dropFirst().map { "\($0.change): \($0.status) (\($0.unmaps) unmap, \($0.maps) map, \($0.transientUnmaps) transient)" }.joined(separator: "; "))
        for r in refusedAfterUnmap {
            out.append("  DMA \(r.device) -> \(r.iova): " + (r.memoryUnchanged ? "refused, guest memory unchanged" : "REACHED MEMORY")
                       + (r.fault.map { " (DMAR: \(faultReason($0)))" } ?? ""))
        }
        for d in newMapping {
            out.append("  DMA \(d.device) \(d.transfer): \(d.bytes) bytes " + (d.equal ? "equal" : "DIFFERENT"))
        }
        out.append("host table after the change: " + (hostTableMatchesAfterChange ? "equal to the guest's" : "DIFFERENT from the guest's"))
        out.append("")
        out.append("== metrics: \(metrics.changesIn) changes, \(metrics.changesRefused) refused, \(metrics.operationsElided) ops elided, "
                   + "latency p50 \(microseconds(metrics.latencyP50Microseconds)) p99 \(microseconds(metrics.latencyP99Microseconds))")
        out.append("  target   calls  maps  unmaps  mapped     unmapped   transient  failures")
        for t in targets {
            out.append("  " + [pad(t.name, 8), pad("\(t.calls)", 6), pad("\(t.maps)", 5), pad("\(t.unmaps)", 7),
                               pad(byteCount(t.bytesMapped), 10), pad(byteCount(t.bytesUnmapped), 10), pad("\(t.transientUnmaps)", 10),
                               "\(t.failures)"].joined(separator: " "))
        }
        out.append("invariants: " + (invariantViolations.isEmpty ? "clean" : invariantViolations.joined(separator: "; ")))
        return out.joined(separator: "\n")
    }
}
