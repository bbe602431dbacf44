#!/usr/bin/env bash
# macOS + Xcode only: build DoorstepFFI.xcframework (static libraries for iOS devices and
# simulators, with headers and module map) and the generated Swift for Package.swift.
# Not run on the Linux machines where it was written (no Apple toolchain there).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
profile=release-mobile
cd "$root"

# 1. Swift sources and C header, generated from the unstripped host library.
"$root/bindings/generate.sh" "$profile"

# 2. The static library for each iOS slice (no generator code: --no-default-features).
targets=(aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios)
rustup target add "${targets[@]}"
for t in "${targets[@]}"; do
    IPHONEOS_DEPLOYMENT_TARGET=15.0 \
        cargo build -p doorstep-bindings --lib --no-default-features --profile "$profile" --target "$t"
done

# 3. One fat simulator library (Apple silicon + Intel Macs).
mkdir -p "$target_dir/ios-sim/$profile"
lipo -create \
    "$target_dir/aarch64-apple-ios-sim/$profile/libdoorstep_bindings.a" \
    "$target_dir/x86_64-apple-ios/$profile/libdoorstep_bindings.a" \
    -output "$target_dir/ios-sim/$profile/libdoorstep_bindings.a"

# 4. Headers: the C interface and a module map named module.modulemap.
headers="$target_dir/ios-headers"
rm -rf "$headers" && mkdir -p "$headers"
cp "$root/bindings/generated/swift/doorstepFFI.h" "$headers/"
cp "$root/bindings/generated/swift/doorstepFFI.modulemap" "$headers/module.modulemap"

# 5. The XCFramework Package.swift points at.
rm -rf "$here/DoorstepFFI.xcframework"
xcodebuild -create-xcframework \
    -library "$target_dir/aarch64-apple-ios/$profile/libdoorstep_bindings.a" -headers "$headers" \
    -library "$target_dir/ios-sim/$profile/libdoorstep_bindings.a" -headers "$headers" \
    -output "$here/DoorstepFFI.xcframework"
echo "built $here/DoorstepFFI.xcframework; add the package at $here to the app"
