import FuzzHarness
import IOMMUFD
import IOMMUFDModel
import IOMMUMirror
import IOPageTables
#if canImport(Glibc)
import Glibc
#endif

/// Guest RAM shared by every input: region 0 (256 KiB at guest-physical 0, whose first 64 KiB
/// the input overwrites: the guest's tables, hostile by construction) and region 1 (64 KiB at
/// 1 MiB). Regions the input adds point into region 1's memory, so every read stays in memory.
nonisolated(unsafe) let region0 = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 << 10, alignment: 4096)
nonisolated(unsafe) let region1 = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 4096)
let page: UInt64 = 4096
let space = try! IOVARange(first: IOVA(0), last: IOVA((1 << 32) - 1))

func region(_ k: Int) -> MirrorMemoryRegion {
    k == 0
        ? try! MirrorMemoryRegion(guestPhysical: GuestPhysicalAddress(0), length: UInt64(region0.count), host: HostAddress(region0.baseAddress!))
        : try! MirrorMemoryRegion(guestPhysical: GuestPhysicalAddress(1 << 20), length: UInt64(region1.count), host: HostAddress(region1.baseAddress!))
}

/// An address: near the interesting ones mostly, anything sometimes.
func address(_ c: inout InputCursor) -> UInt64 {
    switch c.next() % 8 {
    case 0: return c.next64()
    case 1: return (1 << 20) + UInt64(c.next()) * page
    case 2: return UInt64(c.next() % 64) * page + UInt64(c.next() % 2) * 0x800   // sometimes misaligned
    default: return UInt64(c.next()) * page
    }
}

func length(_ c: inout InputCursor) -> UInt64 {
    switch c.next() % 8 {
    case 0: return c.next64()
    case 1: return 0
    default: return UInt64(1 + c.next() % 16) * page
    }
}

/// The model's areas of `ioas` as IOVA ranges, for comparing with what the engine says.
func areas(_ model: IOMMUFDModel, _ ioas: IOASID, _ fd: CInt) -> [IOVARange] {
    (model.areas(of: ioas, in: fd) ?? []).map(\.iova)
}

/// libFuzzer entry: the input picks the mode (request, or a guest table of one of four formats
/// whose bytes come from the input), the failure policy and which model ioctls fail, then
/// drives batches of arbitrary changes, with guest-table edits between them, through the
/// engine into two IOAS of `IOMMUFDModel` (one filled by copy), a host AMD v1 table and a null
/// target. Traps when: a change has no answer; a failure has no target error; what the model
/// holds differs from what the engine says any IOAS target holds (quarantined ones too); the
/// engine's invariants break (the guest-table clause only after a fault-free resync, since the
/// view is legitimately behind un-invalidated guest edits).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 2 else { return 0 }
    var c = InputCursor(UnsafeRawBufferPointer(start: data, count: size))
    let setup = c.next()
    let formats: [any PageTableFormat] = [try! VTdSecondStage(levels: 4), try! X86FirstStage(levels: 4), try! AMDv1(levels: 3),
                                          try! ArmVMSAv8(stage: .stage2)]
    let format: (any PageTableFormat)? = setup % 5 == 0 ? nil : formats[Int(setup % 5) - 1]
    let policy: MirrorEngine.FailurePolicy = setup & 0x10 == 0 ? .rollback : .quarantine
    // The guest's tables: the input's bytes, repeated, over the first 64 KiB of region 0.
    region0.initializeMemory(as: UInt8.self, repeating: 0)
    let tables = UnsafeRawBufferPointer(start: data, count: size)
    for i in 0..<(64 << 10) { region0[i] = tables[i % size] }
    let root = GuestPhysicalAddress(UInt64(c.next() % 16) * page)

    let model = IOMMUFDModel(.init(pageSize: page, tracing: false))
    let shared = SharedIOMMUFDContext(try! IOMMUFDContext(kernel: model))
    let behaviour = try! KernelBehaviour.probe(shared.iommufd)
    let a = try! shared.iommufd.allocateIOAS(), b = try! shared.iommufd.allocateIOAS()
    let targets: [any MirrorTarget] = [
        try! IOASTarget(name: "a", context: shared, ioas: a, behaviour: behaviour),
        try! IOASTarget(name: "b", context: shared, ioas: b, behaviour: behaviour, fanOut: .copy),
        try! PageTableTarget(name: "amdv1", format: try! AMDv1(levels: 4)),
        NullTarget(),
    ]
    var ram = GuestRAM()
    try! ram.add(region(0))
    try! ram.add(region(1))
    var engine = try! MirrorEngine(mode: format.map { .pageTable($0, root: root) } ?? .requests, memory: ram, targets: targets,
                                   configuration: .init(space: space, failure: policy))
    let requests: [IoctlRequest] = [.ioasMap, .ioasUnmap, .ioasCopy, .ioasMapFile]
    var batch = MirrorBatch(), result = MirrorBatchResult()
    for _ in 0..<(1 + Int(c.next() % 8)) {
        let injections = c.next()
        if injections & 3 == 0 {
            model.injectFailure([.noMemory, .badAddress, .noSuchFileOrDirectory][Int(injections >> 2) % 3],
                                for: requests[Int(injections >> 4) % 4], count: 1 + Int(injections >> 6))
        }
        // Guest edits: bytes of the table area rewritten.
        for _ in 0..<Int(c.next() % 4) {
            let at = (Int(c.next()) << 8 | Int(c.next())) % (64 << 10)
            region0[at] = c.next()
        }
        batch.removeAll()
        for _ in 0..<(1 + Int(c.next() % 12)) {
            switch c.next() % 10 {
            case 0, 1, 2:
                let p = Permissions(rawValue: UInt8(c.next() % 8))
                batch.append(.map(iova: IOVA(address(&c)), length: length(&c), guestPhysical: GuestPhysicalAddress(address(&c)), permissions: p))
            case 3, 4: batch.append(.unmap(iova: IOVA(address(&c)), length: length(&c)))
            case 5, 6: batch.append(.invalidate(iova: IOVA(address(&c)), length: length(&c)))
            case 7: batch.append(c.next() % 2 == 0 ? .resync : .setRoot(GuestPhysicalAddress(address(&c))))
            case 8:
                if c.next() % 2 == 0 {
                    batch.append(.removeRegion(base: GuestPhysicalAddress(c.next() % 3 == 0 ? address(&c) : (c.next() % 2 == 0 ? 0 : 1 << 20))))
                } else if c.next() % 2 == 0 {
                    batch.append(.addRegion(region(1)))
                } else {
                    // A region at any address over region 1's memory.
                    let length = UInt64(1 + c.next() % 16) * page
                    if let r = try? MirrorMemoryRegion(guestPhysical: GuestPhysicalAddress(address(&c)), length: length,
                                                       host: HostAddress(region1.baseAddress!)) {
                        batch.append(.addRegion(r))
                    }
                }
            default:
                batch.append(.map(iova: IOVA(UInt64(c.next()) * page), length: UInt64(1 + c.next() % 4) * page,
                                  guestPhysical: GuestPhysicalAddress(UInt64(c.next() % 64) * page), permissions: .readWrite))
            }
        }
        engine.apply(batch, into: &result)
        check(engine, result, batch, model, shared, [a, b], strict: false)
    }
    // A resync without a target failure must bring every target in service to the guest's table.
    if format != nil {
        batch.removeAll()
        batch.append(.resync)
        engine.apply(batch, into: &result)
        check(engine, result, batch, model, shared, [a, b], strict: result.targets.allSatisfy { $0.failure == nil })
    }
    return 0
}

func check(_ engine: borrowing MirrorEngine, _ result: MirrorBatchResult, _ batch: MirrorBatch, _ model: IOMMUFDModel,
           _ shared: SharedIOMMUFDContext, _ ioas: [IOASID], strict: Bool) {
    precondition(result.changes.count == batch.count, "a change without an answer")
    let failed = result.changes.contains { $0.status == .failed }
    precondition(!failed || result.targets.contains { $0.failure != nil }, "a failed change with no target failure")
    for (k, o) in result.changes.enumerated() where o.status == .refused { precondition(o.refusal != nil, "change \(k) refused without a reason") }
    for t in 0..<2 {
        let held = areas(model, ioas[t], shared.iommufd.descriptor)
        let said = engine.targetShadows[t].map(\.iova)
        precondition(held == said, "IOAS target \(t) holds \(held), the engine says \(said)")
    }
    for v in engine.checkInvariants() where strict || !v.description.hasPrefix("the guest's table translates") {
        preconditionFailure("invariant: \(v)")
    }
}
