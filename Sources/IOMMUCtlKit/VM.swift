#if canImport(Glibc)
import Glibc
#endif

/// Finding and driving the bundled test VM for `--vm`.
public enum VMHarness {
    /// The runner, relative to the repository root.
    public static let runner = "Harness/run-in-vm.sh"

    /// The repository's `Harness/run-in-vm.sh`: `$IOMMUCTL_HARNESS` (the Harness directory) when
    /// set (`override`, when given, replaces the environment), else the first directory above the executable, then above the working directory,
    /// that holds it.
    /// - Throws: ``ToolError`` (unavailable) naming every place searched.
    public static func locate(
        executable: String, workingDirectory: String, override: String?? = nil, isExecutable: ((String) -> Bool)? = nil
    ) throws(ToolError) -> String {
        let isExecutable: (String) -> Bool = isExecutable ?? { access($0, X_OK) == 0 }
        if let override = override ?? ProcessInfoEnvironment.value("IOMMUCTL_HARNESS") {
            let path = override.hasSuffix("/run-in-vm.sh") ? override : override + "/run-in-vm.sh"
            if isExecutable(path) { return path }
            throw ToolError("IOMMUCTL_HARNESS=\(override), but \(path) is not an executable file", status: .unavailable)
        }
        for start in [directory(of: executable), workingDirectory] {
            var dir = start
            while true {
                let candidate = (dir == "/" ? "" : dir) + "/" + runner
                if isExecutable(candidate) { return candidate }
                if dir == "/" || dir.isEmpty { break }
                dir = directory(of: dir)
            }
        }
        throw ToolError("--vm: cannot find \(runner) in any directory above \(directory(of: executable)) (the executable) "
                        + "or \(workingDirectory) (the working directory)",
                        hints: ["run iommuctl from inside a swift-iommufd checkout, or set IOMMUCTL_HARNESS to its Harness directory"],
                        status: .unavailable)
    }

    /// The command-line arguments to run inside the VM: these, without `--vm` and `--vm-timeout`.
    public static func forwardedArguments(_ arguments: [String]) -> [String] {
        var out: [String] = []
        var skipNext = false
        for a in arguments {
            if skipNext { skipNext = false; continue }
            if a == "--vm" || a.hasPrefix("--vm-timeout=") { continue }
            if a == "--vm-timeout" { skipNext = true; continue }
            out.append(a)
        }
        return out
    }

    /// Arguments naming files under `/tmp`, which the VM does not see (it has its own `/tmp`;
    /// only a working directory there is carried over): each such file is handed to `stage`,
    /// which copies it into the VM's work share and returns its path inside the VM.
    public static func stagingTemporaryFiles(
        _ arguments: [String], workingDirectory: String, isFile: (String) -> Bool, stage: (String) throws -> String
    ) rethrows -> [String] {
        try arguments.map { a in
            let path = normalized(a.hasPrefix("/") ? a : workingDirectory + "/" + a)
            let underTmp = path.hasPrefix("/tmp/")
            let carried = workingDirectory.hasPrefix("/tmp/") && path.hasPrefix(workingDirectory + "/")
            return underTmp && !carried && isFile(path) ? try stage(path) : a
        }
    }

    /// Whether this process runs inside the test VM already (its init exports `HIL_VM=1`).
    public static var insideVM: Bool { ProcessInfoEnvironment.value("HIL_VM") == "1" }

    /// The path of the running executable (`/proc/self/exe`).
    public static func currentExecutable() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        return n > 0 ? String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
    }

    /// An absolute path without `.`, `..` and empty components.
    static func normalized(_ path: String) -> String {
        var parts: [Substring] = []
        for c in path.split(separator: "/") {
            if c == "." { continue }
            if c == ".." { _ = parts.popLast() } else { parts.append(c) }
        }
        return "/" + parts.joined(separator: "/")
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let d = String(path[..<slash])
        return d.isEmpty ? "/" : d
    }
}
