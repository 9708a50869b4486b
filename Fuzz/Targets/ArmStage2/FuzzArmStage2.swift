import FuzzHarness
import IOPageTables

/// libFuzzer entry: the first byte picks a configuration of the format.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    let s = Int(bytes[0])
    let configs: [(ArmVMSAv8.Granule, Int, Int)] = [(.size4K, 40, 1), (.size4K, 42, 3), (.size4K, 48, 0), (.size16K, 40, 4), (.size16K, 36, 0), (.size64K, 42, 0)]
    let (g, bits, c) = configs[s % configs.count]
    fuzzWalk(try! ArmVMSAv8(stage: .stage2, granule: g, inputBits: bits, outputBits: 48, concatenatedRootsLog2: c), UnsafeRawBufferPointer(rebasing: bytes[1...]))
    return 0
}
