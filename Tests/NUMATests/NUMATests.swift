import NUMA
import Testing

/// NUMA placement on whatever this machine has (often one node); the kernel tier checks two
/// nodes in the VM.
@Suite struct NUMATests {
    @Test func nodesCoverEveryCPU() throws {
        let nodes = NUMANode.all
        #expect(!nodes.isEmpty && nodes == nodes.sorted())
        let cpus = nodes.flatMap(\.cpus).sorted()
        #expect(!cpus.isEmpty && Set(cpus).count == cpus.count, "\(cpus)")
        for node in nodes {
            for cpu in node.cpus { #expect(NUMANode.of(cpu: cpu) == node) }
        }
        #expect(NUMANode.of(cpu: 1 << 20) == nil)
    }

    @Test func pinningKeepsTheThreadOnTheNode() throws {
        let node = try #require(NUMANode.all.last)
        try node.pinCurrentThread()
        let here = NUMANode.current
        #expect(node.cpus.contains(here.cpu), "CPU \(here.cpu) is not on \(node)")
        #expect(here.node == node)
        if NUMANode.isAvailable {
            #expect(throws: NUMAError.self) { try NUMANode(4000).pinCurrentThread() }
        }
        for n in NUMANode.all.reversed() { try n.pinCurrentThread() }
    }

    @Test func buffersLandOnTheirNode() throws {
        let node = try #require(NUMANode.all.first)
        let buffer = try NUMABuffer(count: 64 << 10, on: node)
        buffer.touch()
        #expect(buffer.base.load(fromByteOffset: 4096, as: UInt8.self) == 0)
        if NUMANode.isAvailable {
            #expect(NUMANode.of(memory: buffer.base) == node)
            #expect(NUMANode.of(memory: buffer.base + 32 << 10) == node)
        }
    }
}
