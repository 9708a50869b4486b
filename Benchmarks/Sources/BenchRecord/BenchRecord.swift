// One measurement as a JSON line, for the benchmark report (Benchmarks/report.sh): when the
// environment variable BENCH_JSON names a file, every `record` appends one object to it.
// Written by hand (no Foundation), so a benchmark that counts allocations links nothing more.
#if canImport(Glibc)
import Glibc
#endif

/// Where the benchmark runs: `vm` inside the test VM (its init exports HIL_VM=1), else `host`.
public let benchWhere = getenv("HIL_VM").map { String(cString: $0) } == "1" ? "vm" : "host"

func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        default: out += u.value < 0x20 ? "\\u00" + (u.value < 0x10 ? "0" : "") + String(u.value, radix: 16) : String(u)
        }
    }
    return out + "\""
}

func jsonNumber(_ v: Double?) -> String {
    guard let v, v.isFinite else { return "null" }
    return "\(v)"
}

/// Appends one record: `value` in `unit` for `suite`/`case`, with its baseline (name and
/// value, same unit) when there is one; `ratio` defaults to value / baselineValue.
/// Stops the program when BENCH_JSON names a file it cannot open.
public func record(suite: String, case name: String, value: Double, unit: String,
                   baseline: String? = nil, baselineValue: Double? = nil, ratio: Double? = nil) {
    guard let path = getenv("BENCH_JSON").map({ String(cString: $0) }), !path.isEmpty else { return }
    let r = ratio ?? baselineValue.flatMap { $0 != 0 ? value / $0 : nil }
    let line = "{\"suite\": \(jsonString(suite)), \"case\": \(jsonString(name)), \"value\": \(jsonNumber(value)), "
        + "\"unit\": \(jsonString(unit)), \"baseline\": \(baseline.map(jsonString) ?? "null"), "
        + "\"baselineValue\": \(jsonNumber(baselineValue)), \"ratio\": \(jsonNumber(r)), \"where\": \(jsonString(benchWhere))}\n"
    guard let f = fopen(path, "a") else {
        fatalError("BENCH_JSON=\(path): cannot open it for appending (errno \(errno))")
    }
    fputs(line, f)
    fclose(f)
}
