import IOMMUAddresses
import IOPageTables

/// One broken invariant, said in words.
public struct MirrorViolation: Hashable, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension MirrorEngine {
    /// Checks that every target in service holds the engine's view (its shadow, and what it
    /// says itself when it can: a page table walked back), that every area is guest RAM inside
    /// the space and every target's usable ranges, and, in page-table mode, that the view
    /// equals a fresh walk of the guest's whole table. Allocates; for tests and debugging.
    /// - Returns: the violations, empty when all hold.
    public func checkInvariants() -> [MirrorViolation] {
        var out: [MirrorViolation] = []
        for (i, e) in shadow.enumerated() {
            if i > 0, shadow[i - 1].iova.last >= e.iova.first { out.append(MirrorViolation("areas overlap: \(shadow[i - 1]) and \(e)")) }
            guard let r = memory.regionIndex(containing: e.guestPhysical),
                  memory.regions[r].guestPhysical.contains(e.guestPhysicalRange) else {
                out.append(MirrorViolation("area \(e) is not inside one guest RAM region"))
                continue
            }
            if let refusal = checkIOVA(e.iova) { out.append(MirrorViolation("area \(e): \(refusal)")) }
        }
        let expected = MirrorRun.runs(shadow)
        for t in targets.indices where !quarantined[t] {
            if targetShadows[t] != shadow {
                out.append(MirrorViolation("target \(targets[t].name) holds \(targetShadows[t]), the engine \(shadow)"))
            }
            do {
                if let runs = try targets[t].readBack(), runs != expected {
                    out.append(MirrorViolation("target \(targets[t].name) reads back \(runs), the engine holds \(expected)"))
                }
            } catch {
                out.append(MirrorViolation("target \(targets[t].name): \(error)"))
            }
        }
        if case .pageTable(let format, let root) = mode {
            // Leaf by leaf (the engine walks runs), malformed entries skipped as the engine does.
            var leaves: [GuestTranslation] = []
            var fault: PageTableFault?
            do {
                try visitGuestTable(format, memory: memory, root: root, range: configuration.space, perLeaf: true,
                                    fault: { _ in }) { leaves.append($0) }
            } catch {
                fault = error
            }
            var guest: [MirrorExtent] = []
            if fault == nil {
                for leaf in leaves {
                    let granted = leaf.permissions.intersection(.readWrite)
                    guard !granted.isEmpty, checkIOVA(leaf.iova) == nil, case .success = hostPermissions(granted) else { continue }
                    var pieces: [MirrorExtent] = []
                    if appendPieces(leaf.iova, leaf.output, granted, unit: MirrorUnit(rawValue: 0), into: &pieces) == nil {
                        guest.append(contentsOf: pieces)
                    }
                }
            }
            let guestRuns = MirrorRun.runs(guest)
            if guestRuns != expected {
                out.append(MirrorViolation("the guest's table translates \(guestRuns)\(fault.map { " (fault: \($0))" } ?? ""), the targets \(expected)"))
            }
        }
        return out
    }
}
