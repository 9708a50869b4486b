public import IOMMUMirror
public import IOPageTables

/// A target that holds nothing and runs `action` on its `at`-th map: placed first, it changes
/// the world (the model or the kernel) under the targets after it in the middle of a batch.
public final class Saboteur: MirrorTarget, @unchecked Sendable {
    public let name = "saboteur"
    public let usableRanges: [IOVARange] = [.all]
    public let alignment: UInt64 = 1
    let at: Int
    let action: () -> Void
    var maps = 0

    public init(onMap at: Int, _ action: @escaping () -> Void) {
        self.at = at
        self.action = action
    }

    public func canExpress(_ permissions: Permissions) -> Bool { !permissions.isEmpty }
    public func map(_ mapping: MirrorMapping) {
        maps += 1
        if maps == at { action() }
    }
    public func unmap(_ range: IOVARange, expectedBytes: UInt64) -> UInt64 { expectedBytes }
    public func unmapIfPresent(_ area: IOVARange) -> Bool { true }
    public func readBack() -> [MirrorRun]? { nil }
}
