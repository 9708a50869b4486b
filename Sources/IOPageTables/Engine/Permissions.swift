/// What a leaf lets a device do, normalized across formats.
///
/// Formats that cannot express a permission simply never report it (VT-d second stage has no
/// `user`, AMD v1 has no `execute`). ``execute`` means "executable at every privilege level the
/// entry grants"; a format with separate privileged/unprivileged execute-never bits reports
/// `execute` only when neither is set.
public struct Permissions: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let read = Permissions(rawValue: 1 << 0)
    public static let write = Permissions(rawValue: 1 << 1)
    public static let execute = Permissions(rawValue: 1 << 2)
    /// Accessible to unprivileged (user / EL0 / U-mode) requests.
    public static let user = Permissions(rawValue: 1 << 3)

    public static let readWrite: Permissions = [.read, .write]
    public static let all: Permissions = [.read, .write, .execute, .user]

    public var description: String {
        var s = ""
        s += contains(.read) ? "r" : "-"
        s += contains(.write) ? "w" : "-"
        s += contains(.execute) ? "x" : "-"
        s += contains(.user) ? "u" : "-"
        return s
    }
}
