#!/bin/sh
# Runs `nimbus` under `perf record` with DWARF call graphs; give it to the harness as
#   cargo run --release -p nimbus-bench -- --nimbus-bin bench/tools/perf-nimbus.sh ...
# perf follows the server's children, so environments are in the profile too. The profile is
# written to $NIMBUS_PERF_DATA (default /tmp/nimbus-perf.data); $NIMBUS_BIN overrides the binary.
# Needs `perf` (Debian: apt-get install linux-perf). See docs/benchmarks.md, "Profiling".
here=$(cd "$(dirname "$0")" && pwd)
exec perf record -F 1999 --call-graph dwarf,32768 \
    -o "${NIMBUS_PERF_DATA:-/tmp/nimbus-perf.data}" \
    -- "${NIMBUS_BIN:-$here/../../target/release/nimbus}" "$@"
