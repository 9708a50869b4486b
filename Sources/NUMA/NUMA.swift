#if canImport(Glibc)
import Glibc
#endif
import CNUMA
public import SystemPackage

/// A NUMA node of this machine (libnuma's node number).
///
/// On a machine without NUMA (or a kernel without it) there is one node, 0, holding every CPU
/// and all memory; every call here then still works and places nothing.
public struct NUMANode: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }
    public init(_ rawValue: Int32) { self.rawValue = rawValue }

    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "node \(rawValue)" }

    /// Whether the kernel supports NUMA placement (`numa_available`); `false` means one node.
    public static let isAvailable: Bool = numa_available() >= 0

    /// The nodes this process may allocate on, ascending (`numa_get_mems_allowed`); `[0]`
    /// without NUMA.
    public static var all: [NUMANode] {
        guard isAvailable, let mask = numa_get_mems_allowed() else { return [NUMANode(0)] }
        defer { numa_bitmask_free(mask) }
        let nodes = (0...max(0, numa_max_node())).filter { numa_bitmask_isbitset(mask, UInt32($0)) != 0 }
        return nodes.isEmpty ? [NUMANode(0)] : nodes.map { NUMANode(Int32($0)) }
    }

    /// The CPUs of this node, ascending (`numa_node_to_cpus`); every CPU without NUMA.
    public var cpus: [Int] {
        let configured = Int(numa_num_configured_cpus())
        guard Self.isAvailable, let mask = numa_allocate_cpumask() else { return Array(0..<max(configured, 1)) }
        defer { numa_bitmask_free(mask) }
        guard numa_node_to_cpus(rawValue, mask) == 0 else { return [] }
        return (0..<configured).filter { numa_bitmask_isbitset(mask, UInt32($0)) != 0 }
    }

    /// The node of `cpu` (`numa_node_of_cpu`), or `nil` for a CPU that does not exist.
    public static func of(cpu: Int) -> NUMANode? {
        guard isAvailable else { return cpu >= 0 ? NUMANode(0) : nil }
        let n = numa_node_of_cpu(Int32(cpu))
        return n >= 0 ? NUMANode(n) : nil
    }

    /// The CPU the calling thread runs on now and its node, as the kernel reports them
    /// (`getcpu(2)`).
    public static var current: (cpu: Int, node: NUMANode) {
        var cpu: UInt32 = 0, node: UInt32 = 0
        guard cnuma_getcpu(&cpu, &node) == 0 else { return (0, NUMANode(0)) }
        return (Int(cpu), NUMANode(Int32(node)))
    }

    /// The node the page holding `address` is on now, as the kernel reports it (`move_pages`
    /// with no target nodes: a query). The page must be faulted in; `nil` when it is not, or
    /// without NUMA.
    public static func of(memory address: UnsafeRawPointer) -> NUMANode? {
        guard isAvailable else { return nil }
        var page: UnsafeMutableRawPointer? = UnsafeMutableRawPointer(mutating: address)
        var status: Int32 = -1
        guard numa_move_pages(0, 1, &page, nil, &status, 0) == 0, status >= 0 else { return nil }
        return NUMANode(status)
    }
}

extension NUMANode {
    /// Moves every page of `buffer` that is faulted in onto this node (`move_pages` with
    /// `MPOL_MF_MOVE`), for memory a thread touched before it was pinned or that `malloc` handed
    /// back from pages first touched elsewhere. Returns the node of the buffer's first page
    /// afterwards, as the kernel reports it; `nil` without NUMA.
    @discardableResult
    public func place(_ buffer: UnsafeRawBufferPointer) -> NUMANode? {
        guard Self.isAvailable, let base = buffer.baseAddress, buffer.count > 0 else { return nil }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let first = UInt(bitPattern: base) & ~UInt(page - 1)
        let last = (UInt(bitPattern: base) + UInt(buffer.count) - 1) & ~UInt(page - 1)
        var pages: [UnsafeMutableRawPointer?] = stride(from: first, through: last, by: page).map { UnsafeMutableRawPointer(bitPattern: $0) }
        var nodes = [Int32](repeating: rawValue, count: pages.count)
        var status = [Int32](repeating: 0, count: pages.count)
        _ = numa_move_pages(0, UInt(pages.count), &pages, &nodes, &status, 2 /* MPOL_MF_MOVE */)
        return Self.of(memory: base)
    }
}

/// A failure of a NUMA placement call, with the `errno` libnuma left.
public struct NUMAError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The call that failed (`numa_run_on_node`, `numa_alloc_onnode`).
    public let call: String
    public let node: NUMANode
    public let errno: Errno
    public var description: String { "\(call) on \(node) failed: \(errno) (errno \(errno.rawValue))" }
}

extension NUMANode {
    /// Restricts the calling thread to this node's CPUs (`numa_run_on_node`), so work and the
    /// memory it first touches stay on the node. Without NUMA it does nothing.
    /// - Throws: ``NUMAError`` (`EINVAL` for a node that does not exist).
    public func pinCurrentThread() throws(NUMAError) {
        guard Self.isAvailable else { return }
        guard numa_run_on_node(rawValue) == 0 else {
            throw NUMAError(call: "numa_run_on_node", node: self, errno: Errno(rawValue: Glibc.errno))
        }
    }
}

/// Memory bound to one NUMA node (`numa_alloc_onnode`), owned: freed (`numa_free`) when the owner
/// ends. Page-aligned and zero-filled; the pages are placed on the node as they are first
/// touched (``touch()`` does that now). Without NUMA it is plain anonymous memory.
public struct NUMABuffer: ~Copyable, @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let count: Int
    public let node: NUMANode

    /// - Throws: ``NUMAError`` with `ENOMEM` when the memory cannot be had.
    public init(count: Int, on node: NUMANode) throws(NUMAError) {
        precondition(count > 0, "a NUMA buffer needs at least one byte")
        let p = NUMANode.isAvailable ? numa_alloc_onnode(count, node.rawValue) : numa_alloc(count)
        guard let p else { throw NUMAError(call: "numa_alloc_onnode", node: node, errno: .noMemory) }
        self.base = p
        self.count = count
        self.node = node
    }

    deinit { numa_free(base, count) }

    /// Writes one byte of every page so each is allocated now, on the node.
    public func touch() {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        var offset = 0
        while offset < count {
            base.storeBytes(of: 0, toByteOffset: offset, as: UInt8.self)
            offset += page
        }
    }
}
