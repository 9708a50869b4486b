public import IOMMUCapabilities
import SystemCalls

/// One problem in a requirements file: where (`file:line`, or the file as a whole) and what.
public struct RequirementsFileIssue: Hashable, Sendable, CustomStringConvertible {
    public var file: String
    /// 1-based; `nil` for a problem of the whole file (a missing key).
    public var line: Int?
    public var message: String

    public init(file: String, line: Int?, message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    /// `requirements.conf:3: unknown key 'pasdi' (did you mean 'pasid'?)`.
    public var description: String { line.map { "\(file):\($0): \(message)" } ?? "\(file): \(message)" }
}

/// Every problem found in a requirements file, in line order.
public struct RequirementsFileError: Error, Hashable, Sendable, CustomStringConvertible {
    public var issues: [RequirementsFileIssue]
    public var description: String { issues.map(\.description).joined(separator: "\n") }
}

/// A guest platform's requirements read from a small `key = value` file.
///
/// The format (see ``formatDescription``): one `key = value` a line, `#` starts a comment,
/// blank lines are ignored, each key at most once. `viommu` is required; the other keys override
/// the defaults of that vIOMMU's preset (the `GuestRequirements` factory of the same name).
public struct RequirementsFile: Hashable, Sendable {
    public var requirements: GuestRequirements
    /// How `check` groups devices whose host IOMMUs differ.
    public var mixing: DevicePlanner.MixingPolicy
    /// The line each key was set on.
    public var lines: [String: Int]

    /// Every key the format knows, in the order the documentation lists them.
    public static let keys = [
        "viommu", "format", "levels", "granule", "address-bits", "guest-physical-bits", "page-sizes", "pasid",
        "pri", "ats", "coherent-walks", "nesting", "dirty-tracking", "mixing",
    ]

    static let viommus = ["none", "intel-vtd", "arm-smmuv3", "amd", "virtio"]
    static let formats = ["vtd-second-stage", "x86-64", "arm-stage1", "amd-v1"]

    /// The format, as README text.
    public static let formatDescription = """
        One `key = value` per line; `#` starts a comment; blank lines are ignored; each key at most once.
        `viommu` is required, every other key is optional and overrides the default of that vIOMMU.

        | key | values | default |
        | --- | --- | --- |
        | `viommu` | `none`, `intel-vtd`, `arm-smmuv3`, `amd`, `virtio` | (required) |
        | `format` | guest IO page-table format: `vtd-second-stage` or `x86-64` (intel-vtd), `arm-stage1` (arm-smmuv3), `x86-64` or `amd-v1` (amd); not for none or virtio | intel-vtd: `vtd-second-stage`, arm-smmuv3: `arm-stage1`, amd: `x86-64` |
        | `levels` | table levels: 3-5 (vtd-second-stage), 4-5 (x86-64), 1-6 (amd-v1) | 4 |
        | `granule` | `4K`, `16K`, `64K` (arm-stage1 only) | `4K` |
        | `address-bits` | guest IOVA width, 1-64 (not for none) | 12 + 9 × levels; arm-smmuv3 48, virtio 48 |
        | `guest-physical-bits` | guest-physical address width, 1-64 | intel-vtd 39, arm-smmuv3 44, amd 48, virtio 48; required for none |
        | `page-sizes` | page sizes the guest may use, e.g. `4K, 2M, 1G` (K, M, G, T; powers of two) | those of the format |
        | `pasid` | PASID width shown to the guest, 0-20 | 0 |
        | `pri`, `ats`, `coherent-walks`, `dirty-tracking` | `yes`/`no` (also `true`/`false`, `on`/`off`, `1`/`0`) | `no` (`coherent-walks`: yes for arm-smmuv3) |
        | `nesting` | `required`, `preferred`, `forbidden` (not for none or virtio) | `preferred` |
        | `mixing` | devices behind different host IOMMUs: `separate-groups` or `refuse` | `separate-groups` |

        Errors name the line: `guest.conf:3: unknown key 'pasdi' (did you mean 'pasid'?)`.
        """

    /// Parses and validates `text`; `file` names it in messages.
    ///
    /// Reads every line before giving up, so one run reports every problem.
    /// - Throws: ``RequirementsFileError`` with each problem and its line.
    public static func parse(_ text: String, file: String = "requirements") throws(RequirementsFileError) -> RequirementsFile {
        var parser = Parser(file: file)
        parser.read(text)
        guard let result = parser.build(), parser.issues.isEmpty else {
            throw RequirementsFileError(issues: parser.issues.sorted { ($0.line ?? 0) < ($1.line ?? 0) })
        }
        return result
    }
}

/// The parser's state: the entries read so far and the problems found.
private struct Parser {
    let file: String
    var entries: [String: (value: String, line: Int)] = [:]
    var issues: [RequirementsFileIssue] = []

    init(file: String) { self.file = file }

    mutating func issue(_ line: Int?, _ message: String) {
        issues.append(RequirementsFileIssue(file: file, line: line, message: message))
    }

    /// First pass: syntax, known keys, duplicates.
    mutating func read(_ text: String) {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        for (index, raw) in lines.enumerated() {
            let number = index + 1
            let content = (raw.firstIndex(of: "#").map { raw[..<$0] } ?? raw[...]).trimmed
            if content.isEmpty { continue }
            guard let eq = content.firstIndex(of: "=") else {
                issue(number, "expected 'key = value', got '\(content)'")
                continue
            }
            let key = content[..<eq].trimmed
            let value = content[content.index(after: eq)...].trimmed
            if key.isEmpty {
                issue(number, "missing key before '='")
                continue
            }
            guard RequirementsFile.keys.contains(key) else {
                issue(number, "unknown key '\(key)'" + suggestion(key, RequirementsFile.keys))
                continue
            }
            if value.isEmpty {
                issue(number, "'\(key)' has no value")
                continue
            }
            if let earlier = entries[key] {
                issue(number, "'\(key)' is already set on line \(earlier.line)")
                continue
            }
            entries[key] = (value, number)
        }
    }

    func line(_ key: String) -> Int? { entries[key]?.line }

    mutating func choice(_ key: String, _ allowed: [String]) -> String? {
        guard let (value, line) = entries[key] else { return nil }
        if allowed.contains(value) { return value }
        issue(line, "'\(key)' cannot be '\(value)'" + suggestion(value, allowed, orList: true))
        return nil
    }

    mutating func integer(_ key: String, _ range: ClosedRange<Int>) -> Int? {
        guard let (value, line) = entries[key] else { return nil }
        guard let n = Int(value) else {
            issue(line, "'\(key)' must be a whole number, got '\(value)'")
            return nil
        }
        guard range.contains(n) else {
            issue(line, "'\(key)' must be within \(range.lowerBound)...\(range.upperBound), got \(n)")
            return nil
        }
        return n
    }

    mutating func boolean(_ key: String) -> Bool? {
        guard let (value, line) = entries[key] else { return nil }
        switch value.lowercased() {
        case "yes", "true", "on", "1": return true
        case "no", "false", "off", "0": return false
        default:
            issue(line, "'\(key)' must be yes or no, got '\(value)'")
            return nil
        }
    }

    mutating func pageSizes(_ key: String) -> PageSizeSet? {
        guard let (value, line) = entries[key] else { return nil }
        var set = PageSizeSet()
        for item in value.split(whereSeparator: { $0 == "," || $0 == " " || $0 == "\t" }) {
            guard let size = parsePageSize(String(item)) else {
                issue(line, "'\(item)' is not a page size (a power of two such as 4K, 2M or 1G)")
                return nil
            }
            set.insert(PageSizeSet([size]))
        }
        return set
    }

    /// Refuses `key` when set: it does not apply to `context`.
    mutating func notApplicable(_ key: String, _ context: String) {
        if let line = line(key) { issue(line, "'\(key)' does not apply to \(context)") }
    }

    /// Second pass: values, the vIOMMU preset, and the overrides.
    mutating func build() -> RequirementsFile? {
        let viommu = choice("viommu", RequirementsFile.viommus)
        if entries["viommu"] == nil { issue(nil, "missing required key 'viommu' (one of \(RequirementsFile.viommus.joined(separator: ", ")))") }
        let format = choice("format", RequirementsFile.formats)
        let levels = integer("levels", 1...6)
        let granule = choice("granule", ["4K", "16K", "64K"]).flatMap(parsePageSize)
        let addressBits = integer("address-bits", 1...64)
        let guestPhysicalBits = integer("guest-physical-bits", 1...64)
        let sizes = pageSizes("page-sizes")
        let pasid = integer("pasid", 0...20)
        let pri = boolean("pri"), ats = boolean("ats"), coherent = boolean("coherent-walks")
        let dirty = boolean("dirty-tracking")
        let nesting = choice("nesting", ["required", "preferred", "forbidden"]).flatMap(NestingPolicy.init(rawValue:))
        let mixing = choice("mixing", ["separate-groups", "refuse"])
        guard let viommu else { return nil }

        var r: GuestRequirements
        let viommuLine = line("viommu")
        func levelsWithin(_ range: ClosedRange<Int>, _ name: String) -> Int {
            guard let levels else { return 4 }
            if !range.contains(levels) {
                issue(line("levels"), "\(name) tables have \(range.lowerBound)-\(range.upperBound) levels, not \(levels)")
            }
            return levels
        }
        let gpa = guestPhysicalBits
        switch viommu {
        case "none", "virtio":
            for key in ["format", "levels", "granule", "nesting"] { notApplicable(key, "viommu = \(viommu) (no guest page table)") }
            if viommu == "none" {
                notApplicable("address-bits", "viommu = none (devices use guest-physical addresses: set guest-physical-bits)")
                guard let gpa else {
                    issue(viommuLine, "viommu = none needs 'guest-physical-bits' (the width of the addresses devices use)")
                    return nil
                }
                r = .noIOMMU(guestPhysicalAddressBits: gpa)
            } else {
                r = .virtio(addressBits: addressBits ?? 48, guestPhysicalAddressBits: gpa ?? 48)
            }
        case "intel-vtd":
            notApplicable("granule", "\(format ?? "vtd-second-stage") tables (only arm-stage1 has a granule)")
            switch format ?? "vtd-second-stage" {
            case "vtd-second-stage":
                r = .intelVTdSecondStage(levels: levelsWithin(3...5, "vtd-second-stage"), guestPhysicalAddressBits: gpa ?? 39)
            case "x86-64":
                r = .intelVTdFirstStage(levels: levelsWithin(4...5, "x86-64"), guestPhysicalAddressBits: gpa ?? 39)
            default:
                issue(line("format"), "an intel-vtd guest uses vtd-second-stage or x86-64 tables, not \(format!)")
                return nil
            }
        case "arm-smmuv3":
            if let f = format, f != "arm-stage1" {
                issue(line("format"), "an arm-smmuv3 guest uses arm-stage1 tables, not \(f)")
                return nil
            }
            notApplicable("levels", "arm-stage1 tables (their levels follow the granule and address-bits)")
            r = .armSMMUv3(granule: granule ?? .size4K, guestPhysicalAddressBits: gpa ?? 44)
        default: // amd
            notApplicable("granule", "\(format ?? "x86-64") tables (only arm-stage1 has a granule)")
            switch format ?? "x86-64" {
            case "x86-64":
                r = .amdV2(levels: levelsWithin(4...5, "x86-64"), guestPhysicalAddressBits: gpa ?? 48)
            case "amd-v1":
                let l = levelsWithin(1...6, "amd-v1")
                r = GuestRequirements(viommu: .amd, format: .amdV1(levels: l), addressBits: min(64, 12 + 9 * l),
                                      guestPhysicalAddressBits: gpa ?? 48,
                                      pageSizes: PageSizeSet([.size4K, .size2M, .size1G]))
            default:
                issue(line("format"), "an amd guest uses x86-64 or amd-v1 tables, not \(format!)")
                return nil
            }
        }
        if let addressBits, viommu != "none" { r.addressBits = addressBits }
        if let sizes { r.pageSizes = sizes }
        if let pasid { r.pasidBits = pasid }
        if let pri { r.pri = pri }
        if let ats { r.ats = ats }
        if let coherent { r.coherentWalks = coherent }
        if let dirty { r.dirtyTracking = dirty }
        if let nesting, viommu != "none", viommu != "virtio" { r.nesting = nesting }
        // What the checks above did not already say (they explain it better, at the right line).
        if issues.isEmpty { for problem in r.inconsistencies { issue(line("format") ?? viommuLine, problem) } }
        return RequirementsFile(requirements: r, mixing: mixing == "refuse" ? .refuse : .separateGroups,
                                lines: entries.mapValues(\.line))
    }
}

/// `4K`, `2M`, `1G`, `16KiB`, `4096`: a power-of-two size.
func parsePageSize(_ text: String) -> PageSize? {
    var digits = Substring(text.uppercased())
    if digits.hasSuffix("IB") { digits = digits.dropLast(2) } else if digits.hasSuffix("B") { digits = digits.dropLast() }
    let shifts: [Character: UInt64] = ["K": 10, "M": 20, "G": 30, "T": 40]
    var shift: UInt64 = 0
    if let last = digits.last, let s = shifts[last] {
        shift = s
        digits = digits.dropLast()
    }
    guard let n = UInt64(digits), n > 0, n.leadingZeroBitCount > Int(shift) else { return nil }
    return PageSize(rawValue: n << shift)
}

/// ` (did you mean 'x'?)` for the closest candidate within a small edit distance, or, when
/// `orList`, the list of allowed values.
func suggestion(_ word: String, _ candidates: [String], orList: Bool = false) -> String {
    let limit = word.count <= 3 ? 1 : 2
    let best = candidates.map { ($0, editDistance(word.lowercased(), $0.lowercased())) }.min { $0.1 < $1.1 }
    if let (candidate, distance) = best, distance <= limit { return " (did you mean '\(candidate)'?)" }
    return orList ? " (one of \(candidates.joined(separator: ", ")))" : ""
}

/// Edit distance with adjacent transpositions (optimal string alignment).
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
    var d = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
    for i in 0...a.count { d[i][0] = i }
    for j in 0...b.count { d[0][j] = j }
    for i in 1...a.count {
        for j in 1...b.count {
            let cost = a[i - 1] == b[j - 1] ? 0 : 1
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] { d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1) }
        }
    }
    return d[a.count][b.count]
}
