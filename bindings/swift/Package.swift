// swift-tools-version:5.9
//
// Doorstep for iOS: the UniFFI-generated Swift (Sources/Doorstep/Doorstep.swift, copied here
// by ../generate.sh) over the Rust core, linked statically from DoorstepFFI.xcframework (built
// on macOS by ./build-xcframework.sh), plus two hand-written files in Sources/Doorstep:
// DoorstepError+LocalizedError.swift and URLSessionTransport.swift (the HTTP transport that
// `sync` posts through). NOT compiled on the Linux machines that wrote it: no
// Swift toolchain there. See ../README.md.
import PackageDescription

let package = Package(
    name: "Doorstep",
    platforms: [.iOS(.v15)],
    products: [
        .library(name: "Doorstep", targets: ["Doorstep"]),
    ],
    targets: [
        // libdoorstep_bindings.a for iOS devices and simulators, with the C header
        // doorstepFFI.h and a module map declaring the Clang module `doorstepFFI`, which
        // Doorstep.swift imports.
        .binaryTarget(name: "DoorstepFFI", path: "DoorstepFFI.xcframework"),
        .target(
            name: "Doorstep",
            dependencies: ["DoorstepFFI"],
            path: "Sources/Doorstep"
        ),
    ]
)
