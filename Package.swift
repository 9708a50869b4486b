// swift-tools-version: 6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "swift-iommufd",
    products: [
        .library(name: "IOMMUFD", targets: ["IOMMUFD"]),
        .library(name: "IOPageTables", targets: ["IOPageTables"]),
        .library(name: "IOMMUCapabilities", targets: ["IOMMUCapabilities"]),
        .library(name: "IOMMUFDModel", targets: ["IOMMUFDModel"]),
        .library(name: "NUMA", targets: ["NUMA"]),
        .library(name: "IOMMUMirror", targets: ["IOMMUMirror"]),
        .executable(name: "iommuctl", targets: ["iommuctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // The kernel ABI: the project's own declarations of the iommufd and VFIO uAPI.
        .target(name: "CIOMMUFD", path: "CShims", exclude: ["numa"]),
        // libnuma, through a module map and forwarding shims only.
        .systemLibrary(name: "CNUMA", path: "CShims/numa", providers: [.apt(["libnuma-dev"])]),
        // Address types shared by every layer: IOVA, host and guest-physical addresses.
        .target(name: "IOMMUAddresses", swiftSettings: strict),
        // The one syscall choke point: every system call of the package goes through the
        // KernelInterface protocol (LinuxKernel, or a model), and LinuxKernel through Syscalls.
        .target(
            name: "SystemCalls",
            dependencies: ["CIOMMUFD", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strict),
        // The typed kernel layer: /dev/iommu, IOAS, HWPT, VFIO devices.
        .target(
            name: "IOMMUFD",
            dependencies: ["CIOMMUFD", "IOMMUAddresses", "SystemCalls", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strict),
        // IO page-table formats: one walk/map/unmap algorithm, a description per format.
        .target(name: "IOPageTables", dependencies: ["IOMMUAddresses", "SystemCalls"], swiftSettings: strict),
        // Decoded hardware capabilities (from IOMMU_GET_HW_INFO) and a guest platform's requirements
        // checked against them.
        .target(name: "IOMMUCapabilities", dependencies: ["IOMMUFD", "IOPageTables"], swiftSettings: strict),
        // A model of /dev/iommu's IOAS semantics behind KernelInterface, for tests and benchmarks.
        .target(name: "IOMMUFDModel", dependencies: ["IOMMUFD", "CIOMMUFD"], swiftSettings: strict),
        // NUMA placement: nodes, their CPUs, pinning the calling thread, memory bound to a node.
        .target(
            name: "NUMA", dependencies: ["CNUMA", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strict),
        // The mirror engine: a guest's IO address space kept equal in iommufd IOAS and host page tables.
        .target(
            name: "IOMMUMirror",
            dependencies: ["IOMMUFD", "IOPageTables", "NUMA", .product(name: "Histogram", package: "hdrhistogram-swift")],
            swiftSettings: strict),
        // Drivers for QEMU's emulated test devices (the DMA device of the test VM).
        .target(name: "QEMUDevices", dependencies: ["IOMMUFD"], swiftSettings: strict),

        // iommuctl: the command-line tool (probe, bind/unbind, check, and mirror: the main job,
        // device, IOMMU, requirement check and software mirroring with real DMA); its parsing,
        // formatting and sysfs logic live in IOMMUCtlKit so tests can reach them.
        .target(name: "IOMMUCtlKit", dependencies: ["IOMMUCapabilities", "IOMMUMirror", "IOPageTables", "QEMUDevices", .product(name: "Histogram", package: "hdrhistogram-swift")], swiftSettings: strict),
        .executableTarget(
            name: "iommuctl",
            dependencies: ["IOMMUCtlKit", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict),

        // What several test targets share (a seeded generator, a mirror target that sabotages).
        .target(name: "TestSupport", dependencies: ["IOMMUMirror", "IOPageTables"], path: "Tests/TestSupport", swiftSettings: strict),
        .testTarget(name: "ABITests", dependencies: ["CIOMMUFD"], swiftSettings: strict),
        .testTarget(name: "IOMMUFDTests", dependencies: ["IOMMUFD", "IOMMUFDModel", "SystemCalls", "TestSupport"], swiftSettings: strict),
        .testTarget(
            name: "KernelTests",
            dependencies: [
                "CIOMMUFD", "IOMMUFD", "NUMA", "IOMMUCapabilities", "IOMMUFDModel", "IOMMUMirror", "IOPageTables", "QEMUDevices",
                "TestSupport", "IOMMUCtlKit",
            ],
            swiftSettings: strict),
        .testTarget(name: "IOPageTableTests", dependencies: ["IOPageTables", "TestSupport"], swiftSettings: strict),
        .testTarget(
            name: "MirrorTests",
            dependencies: [
                "IOMMUMirror", "IOMMUFD", "IOMMUFDModel", "IOPageTables", "NUMA", "TestSupport",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: strict),
        .testTarget(name: "CapabilityTests", dependencies: ["IOMMUCapabilities"], swiftSettings: strict),
        .testTarget(name: "NUMATests", dependencies: ["NUMA"], swiftSettings: strict),
        .testTarget(name: "IOMMUCtlTests", dependencies: ["IOMMUCtlKit"], swiftSettings: strict),
        // Imports every library product in one file: the public names must compose.
        .testTarget(
            name: "AllProductsTests",
            dependencies: ["IOMMUFD", "IOMMUFDModel", "IOMMUCapabilities", "IOMMUMirror", "IOPageTables", "NUMA"],
            swiftSettings: strict),
    ],
    swiftLanguageModes: [.v6]
)
