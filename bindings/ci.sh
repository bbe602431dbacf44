#!/usr/bin/env bash
# CI for the mobile bindings, on a fresh machine of this kind (Rust, Java 17, Maven 3.8,
# Python 3.11 preinstalled; pytest is installed here if missing):
#   1. build libdoorstep_bindings and uniffi-bindgen ONCE: with `cargo test --workspace
#      --all-targets --no-run`, i.e. the very build (profile, features, target/ dir) that
#      scripts/test.sh makes. A narrower `cargo build -p doorstep-bindings` would resolve
#      other features (the core without `http-client`, tokio, serde_json...) and compile the
#      core a second time.
#      (bindings/tests/generator.rs makes cargo test build the uniffi-bindgen binary.)
#      The same build makes target/debug/doorstep-server (the server's integration tests
#      need the binary), which the sync tests start as a real process.
#   2. generate the Kotlin, Swift and Python bindings from that library,
#   3. run the JUnit suite (Maven, local repo ~/.m2) and the pytest suite against it, with
#      that server binary (-Ddoorstep.server.bin= for Maven, DOORSTEP_SERVER_BIN for pytest).
# Exits non-zero on the first failure. .ci/run calls it: `bash bindings/ci.sh`.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
started=$SECONDS
step() { echo "== bindings/ci.sh: $* (at $((SECONDS - started)) s)"; }

for tool in cargo java mvn python3; do
    command -v "$tool" >/dev/null || { echo "bindings/ci.sh: $tool is not installed" >&2; exit 1; }
done
if ! python3 -m pytest --version >/dev/null 2>&1; then
    step "installing pytest"
    python3 -m pip install --quiet pytest || python3 -m pip install --quiet --break-system-packages pytest
fi

step "build: cargo test --workspace --all-targets --no-run (the build scripts/test.sh uses)"
(cd "$root" && cargo test --workspace --all-targets --no-run)

server_bin="${CARGO_TARGET_DIR:-$root/target}/debug/doorstep-server"
[ -x "$server_bin" ] || { echo "bindings/ci.sh: $server_bin was not built" >&2; exit 1; }
export DOORSTEP_SERVER_BIN="$server_bin"

step "generate Kotlin, Swift, Python from that library"
"$here/generate.sh" --no-build debug
lib_dir="$here/generated/lib/debug"   # the library the bindings were generated from

step "Kotlin: mvn test (JUnit on the JVM, real library from $lib_dir)"
reports="$here/kotlin/target/surefire-reports"
rm -rf "$reports"
kotlin_status=0
(cd "$here/kotlin" && mvn -B -q -Dstyle.color=never test -Ddoorstep.lib.dir="$lib_dir" \
    -Ddoorstep.server.bin="$server_bin") || kotlin_status=$?
# -q hides Surefire's summary; count from its reports.
python3 - "$reports" <<'PY'
import sys, glob, xml.etree.ElementTree as ET
t = f = 0
for path in glob.glob(sys.argv[1] + "/TEST-*.xml"):
    s = ET.parse(path).getroot()
    n = int(s.get("tests", 0)); bad = int(s.get("failures", 0)) + int(s.get("errors", 0))
    t += n - bad - int(s.get("skipped", 0)); f += bad
print(f"kotlin: {t} passed, {f} failed")
PY
[ "$kotlin_status" -eq 0 ] || { echo "bindings/ci.sh: Kotlin tests failed" >&2; exit "$kotlin_status"; }

step "Python: pytest (server: \$DOORSTEP_SERVER_BIN)"
(cd "$here/python" && python3 -m pytest -q -p no:cacheprovider tests)

step "done"
