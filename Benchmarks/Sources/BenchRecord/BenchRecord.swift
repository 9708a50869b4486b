// One measurement as a JSON line, for the benchmark report (Benchmarks/report.sh): when the
// environment variable BENCH_JSON names a file, every `record` appends one object to it.
import Foundation

/// Where the benchmark runs: `vm` inside the harness's VM (HIL_VM is set there), else `host`.
public let benchWhere = ProcessInfo.processInfo.environment["HIL_VM"] == nil ? "host" : "vm"

private let sink: FileHandle? = {
    guard let path = ProcessInfo.processInfo.environment["BENCH_JSON"], !path.isEmpty else { return nil }
    if !FileManager.default.fileExists(atPath: path) { FileManager.default.createFile(atPath: path, contents: nil) }
    guard let h = FileHandle(forWritingAtPath: path) else { return nil }
    h.seekToEndOfFile()
    return h
}()

/// Appends one record: `value` in `unit` for `suite`/`case`, with its baseline (name and
/// value, same unit) when there is one; the ratio is value / baselineValue.
public func record(suite: String, case name: String, value: Double, unit: String,
                   baseline: String? = nil, baselineValue: Double? = nil) {
    guard let sink else { return }
    var object: [String: Any] = ["suite": suite, "case": name, "value": value, "unit": unit, "where": benchWhere,
                                 "baseline": baseline ?? NSNull(), "baselineValue": baselineValue ?? NSNull(),
                                 "ratio": NSNull()]
    if let b = baselineValue, b != 0 { object["ratio"] = value / b }
    guard var data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) else { return }
    data.append(0x0A)
    sink.write(data)
}
