// swift-tools-version:6.0
// haste: HASTE diffusion-transformer training and sampling in Swift. See README.md and ../shared/STYLE.md.
import PackageDescription

/// Library targets are optimised across modules in release builds (STYLE §4.3: set on the callee).
let libraryFlags: [SwiftSetting] = [.unsafeFlags(["-cross-module-optimization"], .when(configuration: .release))]

let package = Package(
    name: "haste",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "haste", targets: ["haste"]),
        .library(name: "HasteTensor", targets: ["HasteTensor"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-numerics", from: "1.0.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
    ],
    targets: [
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CLAPACKE", pkgConfig: "lapacke", providers: [.apt(["liblapacke-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // NCCL's ncclUniqueId (a struct passed by value) for HasteCUDA's run-time-loaded NCCL: a header, nothing linked.
        .systemLibrary(name: "CNCCL"),
        // libjpeg and libpng report errors by longjmp and HDF5's type constants are macros: all need a little C.
        .target(name: "CJPEGShim", linkerSettings: [.linkedLibrary("jpeg")]),
        .target(name: "CPNGShim", linkerSettings: [.linkedLibrary("png16")]),
        .target(name: "CHDF5", cSettings: [.unsafeFlags(["-I/usr/include/hdf5/serial"])],
                linkerSettings: [.linkedLibrary("hdf5_serial")]),
        // Hot float32 loops with run-time-chosen AVX-512 / AVX2+FMA variants (Swift has no per-function target).
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O2", "-ffp-contract=off", "-fno-math-errno"])]),
        .target(name: "HasteTensor",
                dependencies: ["COpenBLAS", "CKernels", .product(name: "RealModule", package: "swift-numerics")],
                swiftSettings: libraryFlags),
        .target(name: "HasteNN", dependencies: ["HasteTensor"], swiftSettings: libraryFlags),
        // The CUDA backend: driver, NVRTC and cuBLAS loaded at run time (STYLE §2.5), never a build dependency;
        // HasteIO for the kernel cache (SHA-256 keys, atomic writes, the cache folder).
        // NCCL (libnccl.so.2, also loaded at run time) sums GPU ranks' gradients; its unique id travels over HasteDistributed.
        .target(name: "HasteCUDA", dependencies: ["HasteTensor", "HasteIO", "HasteDistributed", "CNCCL"], swiftSettings: libraryFlags),
        // Ranks of a data-parallel job: MPI (Open MPI's libmpi.so.40, loaded at run time) or one process.
        .target(name: "HasteDistributed", dependencies: ["HasteTensor"], swiftSettings: libraryFlags),
        .target(name: "HasteIO", dependencies: ["HasteTensor", "CPNGShim", "CZlib", "CJPEGShim", "CHDF5"], swiftSettings: libraryFlags),
        // The CLIP BPE tokenizer and the text cleaning (ftfy) it runs first.
        .target(name: "HasteText", dependencies: ["HasteTensor", "HasteIO"], swiftSettings: libraryFlags),
        .target(name: "HasteModels", dependencies: ["HasteTensor", "HasteNN"], swiftSettings: libraryFlags),
        .target(name: "HasteDiffusion", dependencies: ["HasteTensor"], swiftSettings: libraryFlags),
        .target(name: "HasteEval", dependencies: ["HasteTensor", "HasteIO", "HasteModels", "HasteDistributed", "COpenBLAS", "CLAPACKE"],
                swiftSettings: libraryFlags),
        .target(name: "HasteTraining",
                dependencies: ["HasteTensor", "HasteNN", "HasteIO", "HasteModels", "HasteDiffusion", "HasteEval", "HasteDistributed", "HasteText", "Yams"],
                swiftSettings: libraryFlags),
        // Conformance of any device against the CPU, inside the binary (`haste selftest`): never imports HasteCUDA.
        .target(name: "HasteSelftest",
                dependencies: ["HasteTensor", "HasteNN", "HasteModels", "HasteDiffusion", "HasteTraining"],
                swiftSettings: libraryFlags),
        .executableTarget(name: "haste",
                          dependencies: ["HasteTensor", "HasteNN", "HasteIO", "HasteModels", "HasteDiffusion", "HasteEval", "HasteTraining", "HasteDistributed", "HasteCUDA", "HasteText", "HasteSelftest", "COpenBLAS",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .testTarget(name: "HasteTests",
                    dependencies: ["HasteTensor", "HasteNN", "HasteIO", "HasteModels", "HasteDiffusion", "HasteEval", "HasteTraining", "HasteDistributed", "HasteCUDA", "HasteText", "HasteSelftest"],
                    resources: [.copy("Fixtures")]),
    ],
    swiftLanguageModes: [.v5]
)
