import FuzzHarness
import IOPageTables

/// libFuzzer entry: the first byte picks a configuration of the format.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    let s = Int(bytes[0])
    fuzzWalk(try! ArmVMSAv8(stage: .stage1, granule: .size16K, inputBits: [36, 47, 48, 52][s % 4], outputBits: s % 4 == 3 ? 52 : [44, 48, 52][s / 4 % 3], upperHalf: s & 16 != 0), UnsafeRawBufferPointer(rebasing: bytes[1...]))
    return 0
}
