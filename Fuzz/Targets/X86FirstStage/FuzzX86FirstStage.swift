import FuzzHarness
import IOPageTables

/// libFuzzer entry: the first byte picks a configuration of the format.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    let s = Int(bytes[0])
    fuzzWalk(try! X86FirstStage(levels: 4 + s % 2, outputBits: [46, 52][s / 2 % 2], signExtended: s & 4 == 0, supports1G: s & 8 == 0), UnsafeRawBufferPointer(rebasing: bytes[1...]))
    return 0
}
