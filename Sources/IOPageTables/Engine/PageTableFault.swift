/// A malformed or hostile table entry, with where it was found.
public struct PageTableFault: Error, Hashable, Sendable, CustomStringConvertible {
    /// Why the walk stopped at (or skipped) an entry.
    public enum Reason: Hashable, Sendable {
        /// A table is not wholly inside guest memory (refused before any of its entries is read).
        case outsideGuestMemory
        /// Bits the format reserves (must be zero) are set.
        case reservedBitsSet
        /// An output or next-table address uses bits at or above the format's output width.
        case outputBeyondWidth
        /// A table address is not aligned to the table's size.
        case misalignedTable
        /// A leaf's output address is not aligned to the leaf's size.
        case misalignedOutput
        /// A table entry points to a table whose bytes overlap a table on the current path
        /// (itself, an ancestor, or the middle of one).
        case loop
        /// The walk read more entries or tables than its ``WalkBudget`` allows; the fault's
        /// ``PageTableFault/statistics`` say how far it got.
        case budgetExceeded
        /// The input address is above the format's width or not canonical.
        case inputOutsideSpace
        /// A next-level field names a level that is not below the current one.
        case invalidNextLevel
        /// A leaf (block) where the format allows none, or a table pointer at the last level.
        case leafNotAllowedAtLevel
        /// A page-size encoding the format does not define (AMD NL=7, Svnapot).
        case invalidPageSizeEncoding
        /// The items of a contiguous/replicated leaf disagree; the fault names the bad item (see
        /// ``PageTableWalker`` for which one that is).
        case inconsistentContiguousRun
    }

    public var reason: Reason
    /// Level of the offending entry (0 = leaf-most table).
    public var level: Int
    /// Guest-physical address of the table holding the entry.
    public var table: GuestPhysicalAddress
    /// Index of the entry in that table.
    public var index: Int
    /// The raw entry value (0 when it could not be read).
    public var entry: UInt64
    /// The first input address the entry translates (canonical form for sign-extended formats):
    /// where the fault sits in the input space. For a table refused whole, that of the first
    /// entry the walk would have read.
    public var input: IOVA
    /// For ``Reason/budgetExceeded``: what the walk had done when the budget stopped it;
    /// `nil` for every other fault.
    public var statistics: WalkStatistics?

    public init(reason: Reason, level: Int, table: GuestPhysicalAddress, index: Int, entry: UInt64, input: IOVA,
                statistics: WalkStatistics? = nil) {
        self.reason = reason
        self.level = level
        self.table = table
        self.index = index
        self.entry = entry
        self.input = input
        self.statistics = statistics
    }

    public var description: String {
        "\(reason) for input \(input) at level \(level) table \(table) index \(index) entry 0x\(String(entry, radix: 16))"
            + (statistics.map { " after \($0)" } ?? "")
    }
}
