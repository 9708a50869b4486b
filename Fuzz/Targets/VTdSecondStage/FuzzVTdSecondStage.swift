import FuzzHarness
import IOPageTables

/// libFuzzer entry: the first byte picks a configuration of the format.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    let s = Int(bytes[0])
    fuzzWalk(try! VTdSecondStage(levels: 3 + s % 3, outputBits: [39, 48, 52][s / 3 % 3], supports1G: s & 16 == 0, snoopControl: s & 32 != 0), UnsafeRawBufferPointer(rebasing: bytes[1...]))
    return 0
}
