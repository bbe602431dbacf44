#!/usr/bin/env bash
# Build libdoorstep_bindings and generate the Kotlin, Swift and Python bindings from it.
#
#   bindings/generate.sh [--no-build] [PROFILE]    PROFILE: debug (default), release, release-mobile
#
# One cargo target dir: the workspace's target/ (or $CARGO_TARGET_DIR). Writes
#   bindings/generated/kotlin/app/doorstep/ffi/doorstep.kt
#   bindings/generated/swift/{Doorstep.swift,doorstepFFI.h,doorstepFFI.modulemap}
#   bindings/generated/python/{doorstep.py,libdoorstep_bindings.so}
#   bindings/generated/lib/PROFILE/libdoorstep_bindings.so   the library the bindings belong to
#   bindings/swift/Sources/Doorstep/Doorstep.swift           (copy for the Swift package)
# (.dylib instead of .so on macOS). For release profiles generated/lib/PROFILE/ holds the copy
# that ships: debug info and local symbols stripped (`strip --strip-unneeded`, as Android's
# Gradle plugin does; exported symbols stay, so JNA and Python still load it). Bindings are
# always generated from the unstripped library: uniffi-bindgen reads UniFFI's metadata
# through the full symbol table ("No UniFFI metadata found" on a stripped one).
#
# --no-build: use what is already in target/ (bindings/ci.sh builds it with `cargo test
# --workspace --all-targets --no-run`, the build .ci/run's tests use, so nothing is compiled
# twice; that build leaves the cdylib in target/debug/deps/, which is looked at too).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
build=yes
if [ "${1:-}" = --no-build ]; then build=no; shift; fi
profile="${1:-${PROFILE:-debug}}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
gen="$here/generated"
cd "$root"

case "$(uname -s)" in
    Darwin) lib_name=libdoorstep_bindings.dylib; strip_cmd=(strip -x -o) ;;
    *) lib_name=libdoorstep_bindings.so; strip_cmd=(strip --strip-unneeded -o) ;;
esac

if [ "$build" = yes ]; then
    # The generator (debug, `cli` feature, on by default). Building it also builds the
    # debug library, so for the debug profile this one command is the whole build.
    cargo build -p doorstep-bindings --lib --bin uniffi-bindgen
    if [ "$profile" != debug ]; then
        # Phone-sized library: no generator code compiled in (--no-default-features).
        cargo build -p doorstep-bindings --lib --no-default-features --profile "$profile"
    fi
fi
bindgen="$target_dir/debug/uniffi-bindgen"
# The newest of target/PROFILE/lib… (cargo build) and target/PROFILE/deps/lib… (cargo test).
lib="$(ls -t "$target_dir/$profile/$lib_name" "$target_dir/$profile/deps/$lib_name" 2>/dev/null | head -n 1 || true)"
for built in "$lib" "$bindgen"; do
    [ -n "$built" ] && [ -f "$built" ] || {
        echo "generate.sh: ${built:-$target_dir/$profile/$lib_name} was not built" >&2
        exit 1
    }
done

rm -rf "$gen/kotlin" "$gen/swift" "$gen/python" "$gen/lib/$profile"
for language in kotlin swift python; do
    # --no-format: ktlint and swift-format are not installed here; output is the same code.
    "$bindgen" generate --library "$lib" --language "$language" --out-dir "$gen/$language" --no-format
done

# A hard link where possible: a debug library is ~170 MB.
place() { ln -f "$1" "$2" 2>/dev/null || cp -f "$1" "$2"; }
mkdir -p "$gen/lib/$profile"
if [ "$profile" = debug ]; then
    place "$lib" "$gen/lib/$profile/$lib_name"
else
    "${strip_cmd[@]}" "$gen/lib/$profile/$lib_name" "$lib"
    echo "library ($profile): $(wc -c <"$lib") bytes unstripped," \
        "$(wc -c <"$gen/lib/$profile/$lib_name") bytes stripped -> $gen/lib/$profile/$lib_name"
fi
# Python loads the library from the module's own directory.
place "$gen/lib/$profile/$lib_name" "$gen/python/$lib_name"
# The Swift package compiles the generated Swift next to its hand-written extension.
mkdir -p "$here/swift/Sources/Doorstep"
cp -f "$gen/swift/Doorstep.swift" "$here/swift/Sources/Doorstep/Doorstep.swift"

echo "bindings generated from $lib into $gen"
