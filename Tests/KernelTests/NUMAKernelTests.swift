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
}
