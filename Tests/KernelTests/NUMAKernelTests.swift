import NUMA
import Testing

/// The VM has two NUMA nodes, one CPU each: placement read back from the kernel.
@Suite(.enabled(if: KernelTier.enabled, "needs the test VM"))
struct NUMAKernelTests {
    @Test func twoNodesOneCPUEach() throws {
        #expect(NUMANode.isAvailable)
        #expect(NUMANode.all == [NUMANode(0), NUMANode(1)])
        #expect(NUMANode(0).cpus == [0] && NUMANode(1).cpus == [1])
    }

    @Test func pinnedThreadAndItsMemoryAreOnNodeOne() throws {
        let one = NUMANode(1)
        try one.pinCurrentThread()
        defer { try? NUMANode(0).pinCurrentThread(); try? NUMANode(1).pinCurrentThread() }
        #expect(NUMANode.current.cpu == 1 && NUMANode.current.node == one)
        let buffer = try NUMABuffer(count: 1 << 20, on: one)
        buffer.touch()
        #expect(NUMANode.of(memory: buffer.base) == one)
        #expect(NUMANode.of(memory: buffer.base + (1 << 20) - 4096) == one)
        let zero = try NUMABuffer(count: 1 << 16, on: NUMANode(0))
        zero.touch()
        #expect(NUMANode.of(memory: zero.base) == NUMANode(0))
        print("pinned to CPU \(NUMANode.current.cpu) on \(NUMANode.current.node); buffers on \(NUMANode.of(memory: buffer.base).map(String.init(describing:)) ?? "?") and \(NUMANode.of(memory: zero.base).map(String.init(describing:)) ?? "?")")
    }

    @Test func placeMovesTouchedPagesToTheNode() throws {
        try NUMANode(0).pinCurrentThread()
        defer { try? NUMANode(1).pinCurrentThread() }
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 4096)
        defer { bytes.deallocate() }
        bytes.initializeMemory(as: UInt8.self, repeating: 7)
        // malloc may hand back pages first touched on either node: place them one way, then back.
        #expect(NUMANode(0).place(UnsafeRawBufferPointer(bytes)) == NUMANode(0))
        #expect(NUMANode.of(memory: bytes.baseAddress! + (60 << 10)) == NUMANode(0))
        #expect(NUMANode(1).place(UnsafeRawBufferPointer(bytes)) == NUMANode(1))
        #expect(NUMANode.of(memory: bytes.baseAddress! + (60 << 10)) == NUMANode(1))
        #expect(bytes.allSatisfy { $0 == 7 }, "moving pages keeps their bytes")
    }
}
