/// A format description that no hardware could use (levels, widths or granule combination).
public struct FormatConfigurationError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
