// swift-tools-version: 6.1
// Walk-rate benchmark for IOPageTables, with this machine's memory bandwidth beside it.
// A plain executable timed with clock_gettime: it builds in seconds with no dependencies,
// where ordo-one/package-benchmark pulls jemalloc and several packages for metrics this
// measurement does not need. Run: swift run -c release WalkBenchmark
import PackageDescription

// A path dependency's identity is its directory's name (the checkout may not be called swift-iommufd).
let rootPackage = String(#filePath.split(separator: "/").dropLast(2).last ?? "swift-iommufd").lowercased()

let package = Package(
    name: "IOPageTablesBenchmarks",
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        // Mallocs per iteration (its malloc interposer) for the host benchmarks of the engine.
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // Measurements as JSON lines for the report (BENCH_JSON).
        .target(name: "BenchRecord"),
        // The synthetic guest tables the engine's benchmarks sync.
        .target(name: "BenchGuests", dependencies: [.product(name: "IOMMUMirror", package: rootPackage),
                                                    .product(name: "IOPageTables", package: rootPackage)]),
        .executableTarget(
            name: "WalkBenchmark",
            dependencies: ["BenchRecord", .product(name: "IOPageTables", package: rootPackage)]),
        // Allocations and instructions per map/unmap call, with a C floor: see call-cost.sh.
        .target(name: "CallCostFloor", dependencies: [.product(name: "IOMMUFD", package: rootPackage)]),
        .executableTarget(
            name: "CallCost",
            dependencies: ["BenchRecord", "CallCostFloor", .product(name: "IOMMUFD", package: rootPackage),
                           .product(name: "IOMMUFDModel", package: rootPackage)]),
        // The mirror engine per change, against the null target, the model and the real kernel.
        .executableTarget(
            name: "MirrorBenchmark",
            dependencies: ["BenchGuests", "BenchRecord", "CallCostFloor", .product(name: "IOMMUFD", package: rootPackage),
                           .product(name: "IOMMUFDModel", package: rootPackage),
                           .product(name: "IOMMUMirror", package: rootPackage),
                           .product(name: "IOPageTables", package: rootPackage),
                           .product(name: "Histogram", package: "hdrhistogram-swift")]),
        // ordo-one/benchmark's layout: the sources of a suite live under Benchmarks/<name>.
        .executableTarget(
            name: "EngineHost",
            dependencies: ["BenchGuests", .product(name: "Benchmark", package: "benchmark"),
                           .product(name: "IOMMUFD", package: rootPackage), .product(name: "IOMMUFDModel", package: rootPackage),
                           .product(name: "IOMMUMirror", package: rootPackage), .product(name: "IOPageTables", package: rootPackage)],
            path: "Benchmarks/EngineHost",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]),
    ],
    swiftLanguageModes: [.v6]
)
