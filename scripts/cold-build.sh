#!/usr/bin/env bash
# What a newcomer's first build costs: a fresh clone of this repository, an empty cargo home
# (every crate downloaded), then `cargo build --release --timings` (or another cargo command
# given as arguments, such as `test --no-run`), timed. Prints the wall time and the heaviest
# crates from cargo's timing report. Run it alone on the machine: anything beside it doubles
# the figures.
#
#   scripts/cold-build.sh                  # cargo build --release
#   scripts/cold-build.sh test --no-run    # the test build
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git clone --quiet "$repo" "$work/clone"
export CARGO_HOME="$work/cargo-home"
# The toolchain stays where rustup put it; only the registry and its caches start empty.
export RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
cd "$work/clone"
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(build --release)
start=$(date +%s)
cargo "${args[@]}" --timings >"$work/cargo.log" 2>&1 || { tail -20 "$work/cargo.log"; exit 1; }
end=$(date +%s)
echo "cargo ${args[*]}: $((end - start)) s wall, cold, on $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p'))"
# cargo's report embeds each unit's name, version and duration as JSON in UNIT_DATA.
python3 - "$work/clone/target/cargo-timings/cargo-timing.html" <<'PY'
import json, re, sys
from collections import defaultdict
html = open(sys.argv[1]).read()
units = json.loads(re.search(r"const UNIT_DATA = (\[.*?\]);\n", html, re.S).group(1))
by_crate = defaultdict(float)
for u in units:
    by_crate[u["name"]] += u["duration"]
total = sum(by_crate.values())
print(f"sum of unit times: {total:.0f} s over {len(by_crate)} crates")
print("| crate | unit time s | share |")
print("|---|---|---|")
for name, secs in sorted(by_crate.items(), key=lambda kv: -kv[1])[:15]:
    print(f"| {name} | {secs:.0f} | {100 * secs / total:.0f}% |")
PY
