// swift-tools-version: 6.1
// Fuzz targets for the IOPageTables walker, one executable per format, and one for the mirror
// engine on the kernel model (FuzzMirror). Build and run them with
// ./run.sh [seconds-per-format]; it passes --sanitize fuzzer --sanitize address.
import PackageDescription

// A path dependency's identity is its directory's name (the checkout may not be called swift-iommufd).
let rootPackage = String(#filePath.split(separator: "/").dropLast(2).last ?? "swift-iommufd").lowercased()

let formats = ["VTdSecondStage", "X86FirstStage", "AMDv1", "Arm4K", "Arm16K", "Arm64K", "ArmStage2", "ArmV7Short", "RISCV"]

let package = Package(
    name: "IOPageTablesFuzz",
    dependencies: [.package(path: "..")],
    targets: [
        .target(name: "FuzzHarness", dependencies: [.product(name: "IOPageTables", package: rootPackage)]),
    ] + formats.map { name in
        .executableTarget(
            name: "Fuzz\(name)",
            dependencies: ["FuzzHarness", .product(name: "IOPageTables", package: rootPackage)],
            path: "Targets/\(name)",
            swiftSettings: [.unsafeFlags(["-parse-as-library"])])
    } + [
        // The mirror engine on the kernel model, with hostile guest tables and failing ioctls.
        .executableTarget(
            name: "FuzzMirror",
            dependencies: [
                "FuzzHarness",
                .product(name: "IOMMUMirror", package: rootPackage), .product(name: "IOMMUFDModel", package: rootPackage),
                .product(name: "IOMMUFD", package: rootPackage), .product(name: "IOPageTables", package: rootPackage),
            ],
            path: "Targets/Mirror",
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
    ],
    swiftLanguageModes: [.v6]
)
