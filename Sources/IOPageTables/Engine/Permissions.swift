/// What a leaf lets a device do, normalized across formats.
///
/// Formats that cannot express a permission simply never report it (VT-d second stage has no
/// `user`, AMD v1 has no `execute`). ``execute`` means "executable at every privilege level the
/// entry grants"; a format with separate privileged/unprivileged execute-never bits reports
/// `execute` only when neither is set.
public struct Permissions: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }

    @inlinable public static var read: Permissions { Permissions(rawValue: 1 << 0) }
    @inlinable public static var write: Permissions { Permissions(rawValue: 1 << 1) }
    @inlinable public static var execute: Permissions { Permissions(rawValue: 1 << 2) }
    /// Accessible to unprivileged (user / EL0 / U-mode) requests.
    @inlinable public static var user: Permissions { Permissions(rawValue: 1 << 3) }

    @inlinable public static var readWrite: Permissions { [.read, .write] }
    @inlinable public static var all: Permissions { [.read, .write, .execute, .user] }

    public var description: String {
        var s = ""
        s += contains(.read) ? "r" : "-"
        s += contains(.write) ? "w" : "-"
        s += contains(.execute) ? "x" : "-"
        s += contains(.user) ? "u" : "-"
        return s
    }
}
