#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

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
        out.append("== software mirroring with real DMA through the IOMMU (\(dmaDevice))")
        out.append("guest table: \(leaves) leaves in \(tablesVisited) tables walked and mirrored in \(mirrorMicroseconds) µs")
        for m in mappings { out.append("  IOVA \(m.iova) +\(m.length) -> guest memory \(m.guestAddress)") }
        out.append("edu copied guest IOVA 0x100000 -> 0x201000: guest memory at 0x801000 reads \"\(arrived)\" "
                   + "(\(dmaArrived ? "equal" : "DIFFERENT"))")
        out.append("after the guest's unmap and invalidation: DMA to 0x100000 "
                   + (dmaRefusedAfterUnmap ? "refused by the IOMMU, guest memory unchanged" : "REACHED MEMORY"))
        return out.joined(separator: "\n")
    }
}
