/// A run of input addresses translated to contiguous output with one set of permissions:
/// adjacent leaves merged, for comparing tables that chose different leaf sizes.
public struct TranslationRun: Hashable, Sendable, CustomStringConvertible {
    public var input: IOVARange
    public var output: GuestPhysicalAddress
    public var permissions: Permissions

    public init(input: IOVARange, output: GuestPhysicalAddress, permissions: Permissions) {
        self.input = input
        self.output = output
        self.permissions = permissions
    }

    public var description: String { "\(input) -> \(output) \(permissions)" }

    /// Merges extents given in input order where input and output both continue and
    /// permissions match. Allocates the result array.
    public static func coalescing(_ extents: some Sequence<LeafExtent>) -> [TranslationRun] {
        var out: [TranslationRun] = []
        for e in extents {
            if var last = out.last, last.permissions == e.permissions,
               let nextInput = last.input.end, nextInput == e.input.first,
               e.output.rawValue &- last.output.rawValue == e.input.first.rawValue &- last.input.first.rawValue,
               e.output > last.output {
                last.input = try! IOVARange(first: last.input.first, last: e.input.last)
                out[out.count - 1] = last
            } else {
                out.append(TranslationRun(input: e.input, output: e.output, permissions: e.permissions))
            }
        }
        return out
    }
}
