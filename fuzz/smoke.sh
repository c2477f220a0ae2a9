#!/usr/bin/env bash
# Short run of every cargo-fuzz target from its seed corpus (CI's fuzz step; see README.md
# beside this file). Exits non-zero when a target crashes, panics, hangs or runs out of
# memory; the reproducer is left in fuzz/artifacts/<target>/.
#
#   fuzz/smoke.sh [seconds per target]     (default 10, or $FUZZ_SECONDS)
#
# The build is unoptimised without AddressSanitizer (--dev --sanitizer none): the stint
# crate forbids unsafe code, so what a short run can find is a panic, a hang or unbounded
# memory, and a debug build compiles in a fraction of the instrumented release build's time.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-${FUZZ_SECONDS:-10}}"
flags=(--dev --sanitizer none)
export RUSTC_BOOTSTRAP=1 # cargo-fuzz needs nightly flags; the stable toolchain allows them so

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# cargo-fuzz has no --locked: fetch with it first, which refuses a stale fuzz/Cargo.lock.
cargo fetch --locked --target "$(rustc -vV | sed -n "s/^host: //p")" >/dev/null

start=$SECONDS
cargo fuzz build "${flags[@]}"
echo "fuzz build: $((SECONDS - start)) s"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=()
for target in $(cargo fuzz list); do
    mkdir -p "$work/$target" "corpus/$target"
    # New inputs go to the scratch dir (first), the committed seeds are only read.
    if ! cargo fuzz run "${flags[@]}" "$target" "$work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
        -print_final_stats=1 2>"$work/$target.log"; then
        tail -n 40 "$work/$target.log" >&2
        failed+=("$target")
    else
        grep -E "^(stat::number_of_executed_units|Done )" "$work/$target.log" | sed "s/^/$target: /" || true
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz targets that failed: ${failed[*]}" >&2
    echo "reproduce: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${flags[*]} <target> artifacts/<target>/<file>" >&2
    exit 1
fi
echo "fuzz: all targets ran ${seconds} s each without a crash ($((SECONDS - start)) s with the build)"
