extension StringProtocol {
    /// The text without leading and trailing whitespace: a sysfs attribute without its newline,
    /// a line of a file without its indentation. For the package's own readers (not API).
    package var trimmed: String {
        var s = Substring(self)
        while let c = s.first, c.isWhitespace { s.removeFirst() }
        while let c = s.last, c.isWhitespace { s.removeLast() }
        return String(s)
    }
}
