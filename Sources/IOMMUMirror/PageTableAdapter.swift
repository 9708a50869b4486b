// The one place this module uses IOPageTables' walker and builder, so a change of their API
// (a visitor that can throw or stop early) is a change of this file only.

public import IOMMUAddresses
public import IOPageTables
import Synchronization

/// One translation of the guest's table as the engine sees it: a leaf, or a maximal run of
/// leaves whose inputs and outputs continue with equal rights.
struct GuestTranslation {
    var iova: IOVARange
    var output: GuestPhysicalAddress
    var permissions: Permissions
}

/// Visits the translations of the guest's table at `root` that intersect `range`, in IOVA
/// order, huge leaves whole: maximal runs (one call per run, the walker's fast path), or each
/// leaf when `perLeaf`. A malformed entry goes to `fault` and is skipped: nothing it would
/// translate is visited, and the walk goes on after it.
///
/// The walk is specialized for each of IOPageTables' formats (a walk through the existential
/// would make a witness call per entry, about 5x slower on a dense table); any other format
/// walks generically.
/// - Throws: the ``PageTableFault`` of an exhausted budget (what came before was visited).
func visitGuestTable(_ format: any PageTableFormat, memory: GuestRAM, root: GuestPhysicalAddress, range: IOVARange,
                     perLeaf: Bool, fault: (PageTableFault) -> Void, visit: (GuestTranslation) -> Void) throws(PageTableFault) {
    switch format {
    case let f as VTdSecondStage: try visitTranslations(f, memory, root, range, perLeaf, fault, visit)
    case let f as X86FirstStage: try visitTranslations(f, memory, root, range, perLeaf, fault, visit)
    case let f as AMDv1: try visitTranslations(f, memory, root, range, perLeaf, fault, visit)
    case let f as ArmVMSAv8: try visitTranslations(f, memory, root, range, perLeaf, fault, visit)
    case let f as ArmV7Short: try visitTranslations(f, memory, root, range, perLeaf, fault, visit)
    case let f as RISCVPageTable: try visitTranslations(f, memory, root, range, perLeaf, fault, visit)
    default: try visitTranslations(format, memory, root, range, perLeaf, fault, visit)
    }
}

@inline(__always)
func visitTranslations(_ format: some PageTableFormat, _ memory: GuestRAM, _ root: GuestPhysicalAddress, _ range: IOVARange,
                       _ perLeaf: Bool, _ fault: (PageTableFault) -> Void, _ visit: (GuestTranslation) -> Void) throws(PageTableFault) {
    let walker = PageTableWalker(format: format, memory: memory, root: root)
    do {
        if perLeaf {
            try walker.visitLeaves(range, skippingFaults: { (f: PageTableFault) throws(Never) -> WalkControl in
                fault(f)
                return .continue
            }) { (leaf: LeafExtent) throws(Never) -> WalkControl in
                visit(GuestTranslation(iova: leaf.input, output: leaf.output, permissions: leaf.permissions))
                return .continue
            }
        } else {
            try walker.visitRuns(range, skippingFaults: { (f: PageTableFault) throws(Never) -> WalkControl in
                fault(f)
                return .continue
            }) { (run: TranslationRun) throws(Never) -> WalkControl in
                visit(GuestTranslation(iova: run.input, output: run.output, permissions: run.permissions))
                return .continue
            }
        }
    } catch {
        switch error {
        case .fault(let f): throw f
        case .visitor(let never): switch never {}
        }
    }
}

/// The input addresses a skipped malformed entry leaves untranslated: the entry's span, or for
/// a table refused whole (not guest memory), the span of that table.
func untranslatedSpan(of fault: PageTableFault, in format: some PageTableFormat) -> IOVARange {
    var shift = format.itemShift(level: fault.level)
    if fault.reason == .outsideGuestMemory { shift += format.indexBits(level: fault.level) }
    guard shift < 64 else { return .all }
    let mask = (UInt64(1) << UInt64(shift)) &- 1
    let first = fault.input.rawValue & ~mask
    return try! IOVARange(first: IOVA(first), last: IOVA(first | mask))
}

// MARK: Host page table target

/// A host IO page table of any IOPageTables format, built and kept by the engine: the guest's
/// translations (guest-physical outputs) in the host IOMMU's format, for hardware nesting.
///
/// The table lives in memory this target owns, at table addresses starting at ``tableBase``;
/// tables emptied by unmaps stay allocated for reuse (the builder never frees).
public final class PageTableTarget<Format: PageTableFormat>: MirrorTarget, @unchecked Sendable {
    public let name: String
    public let format: Format
    public let usableRanges: [IOVARange]
    public let alignment: UInt64
    /// Where the table's own pages sit in the address space the host IOMMU reads them from.
    public let tableBase: GuestPhysicalAddress
    /// The root table's address.
    public let root: GuestPhysicalAddress
    private let buffer: UnsafeMutableRawBufferPointer
    private let builder: Mutex<PageTableBuilder<Format, MutableGuestMemoryBuffer, BumpTableAllocator>>

    /// An empty table of `format` in `tableBytes` of owned memory placed at `tableBase`.
    /// - Throws: ``MirrorTargetError`` when the root cannot be allocated.
    public init(name: String, format: Format, tableBase: GuestPhysicalAddress = GuestPhysicalAddress(0),
                tableBytes: Int = 8 << 20) throws(MirrorTargetError) {
        self.name = name
        self.format = format
        self.usableRanges = format.inputRanges
        self.alignment = format.allLeafSizes.smallest?.bytes ?? 4096
        self.tableBase = tableBase
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: tableBytes, alignment: 4096)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        self.buffer = buffer
        let memory = MutableGuestMemoryBuffer(base: tableBase, buffer: buffer)
        let allocator = BumpTableAllocator(range: try! GuestPhysicalRange(base: tableBase, length: UInt64(tableBytes)))
        do {
            let b = try PageTableBuilder(format: format, memory: memory, allocator: allocator)
            self.root = b.root
            self.builder = Mutex(b)
        } catch {
            buffer.deallocate()
            throw MirrorTargetError(target: name, operation: .map, range: .all, errno: nil, detail: "root table: \(error)")
        }
    }

    deinit { buffer.deallocate() }

    /// The table's memory, for walking it back (valid while this target lives).
    public var memory: MutableGuestMemoryBuffer { MutableGuestMemoryBuffer(base: tableBase, buffer: buffer) }

    public func canExpress(_ permissions: Permissions) -> Bool { format.canExpress(permissions) }

    /// Installs the largest leaves the alignment allows for `mapping`.
    public func map(_ m: MirrorMapping) throws(MirrorTargetError) {
        let r: Result<Void, PageTableBuildError> = builder.withLock { b in
            do throws(PageTableBuildError) {
                try b.map(m.iova, to: m.guestPhysical, permissions: m.permissions)
                return .success(())
            } catch { return .failure(error) }
        }
        if case .failure(let e) = r {
            throw MirrorTargetError(target: name, operation: .map, range: m.iova, errno: nil, detail: "\(e)")
        }
    }

    public func unmap(_ range: IOVARange, expectedBytes: UInt64) throws(MirrorTargetError) -> UInt64 {
        let r: Result<UInt64, PageTableBuildError> = builder.withLock { b in
            do throws(PageTableBuildError) { return .success(try b.unmap(range)) } catch { return .failure(error) }
        }
        switch r {
        case .success(let n): return n
        case .failure(let e): throw MirrorTargetError(target: name, operation: .unmap, range: range, errno: nil, detail: "\(e)")
        }
    }

    public func unmapIfPresent(_ area: IOVARange) throws(MirrorTargetError) -> Bool {
        try unmap(area, expectedBytes: 0) != 0
    }

    /// Walks the table back into translation runs.
    public func readBack() throws(MirrorTargetError) -> [MirrorRun]? {
        var runs: [MirrorRun] = []
        let memory = self.memory
        do {
            try PageTableWalker(format: format, memory: memory, root: root).walk { leaf in
                let p = leaf.permissions.intersection(.readWrite)
                if let last = runs.last, last.permissions == p, last.iova.end == leaf.input.first,
                   last.guestPhysical.rawValue &- last.iova.first.rawValue == leaf.output.rawValue &- leaf.input.first.rawValue {
                    runs[runs.count - 1].iova = try! IOVARange(first: last.iova.first, last: leaf.input.last)
                } else {
                    runs.append(MirrorRun(iova: leaf.input, guestPhysical: leaf.output, permissions: p))
                }
            }
        } catch {
            throw MirrorTargetError(target: name, operation: .readBack, range: .all, errno: nil, detail: "\(error)")
        }
        return runs
    }
}
