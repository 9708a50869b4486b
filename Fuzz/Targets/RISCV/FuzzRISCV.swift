import FuzzHarness
import IOPageTables

/// libFuzzer entry: the first byte picks a configuration of the format.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    let s = Int(bytes[0])
    fuzzWalk(try! RISCVPageTable(mode: [.sv39, .sv48, .sv57][s % 3], stage: s & 4 == 0 ? .first : .second, svnapot: s & 8 == 0, svpbmt: s & 16 == 0, hardwareAccessedDirty: s & 32 != 0), UnsafeRawBufferPointer(rebasing: bytes[1...]))
    return 0
}
