#!/usr/bin/env bash
# Side by side: run the sync bench on the full district with each given server build in
# turn, A B A B ..., ROUNDS times (default 3), and print one line per run: pushes per
# second, the server's CPU for the burst, the writer thread's, p50/p99, peak RSS. Builds
# to compare are copies of target/release/doorstep-server made at each commit. The bench
# is built once; nothing else should run meanwhile (2 cores). Full tables go to
# $OUT (default target/side-by-side/<label>-<round>.md).
#
#   scripts/bench-side-by-side.sh /tmp/before/doorstep-server /tmp/after/doorstep-server
#   ROUNDS=5 DOORSTEP_BENCH_REPLICA=1 scripts/bench-side-by-side.sh A B C
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 SERVER_BINARY..." >&2; exit 2; }
for server in "$@"; do [ -x "$server" ] || { echo "not an executable: $server" >&2; exit 2; }; done
bench=$(cargo bench -p doorstep-server --bench sync_compare --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "sync_compare" and m.get("executable"):
        print(m["executable"])')
out=${OUT:-target/side-by-side}
mkdir -p "$out"
for round in $(seq 1 "${ROUNDS:-3}"); do
    for server in "$@"; do
        label=$(basename "$(dirname "$server")")-$(basename "$server")
        table="$out/$label-$round.md"
        DOORSTEP_BENCH_SERVER="$server" DOORSTEP_BENCH_REPLICA="${DOORSTEP_BENCH_REPLICA:-0}" \
            "$bench" --bench > "$table" 2> "$out/$label-$round.log"
        printf '%s round %s: %s; %s; %s; %s\n' "$server" "$round" \
            "$(grep -o 'accepted changes / s | [0-9]*/s' "$table" | grep -o '[0-9]*/s')" \
            "$(grep -o 'server [0-9.]* [mµ]*s (writer thread [0-9.]* [mµ]*s' "$table" | tr -d '(')" \
            "$(grep -o 'p50 [^,]*, p99 [^,]*' "$table")" \
            "$(grep -o '[0-9]* MB during the pushes' "$table")"
    done
done
