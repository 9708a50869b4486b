import FuzzHarness
import IOPageTables

/// libFuzzer entry: the first byte picks a configuration of the format.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    let s = Int(bytes[0])
    fuzzWalk(try! ArmVMSAv8(stage: s & 1 == 0 ? .stage1 : .stage2, granule: .size64K, inputBits: [42, 48, 52][s / 2 % 3], outputBits: [48, 52][s / 8 % 2]), UnsafeRawBufferPointer(rebasing: bytes[1...]))
    return 0
}
