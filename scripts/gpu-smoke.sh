#!/usr/bin/env bash
# The GPU smoke test (tests/gpu.rs): trains, checkpoints, resumes, evaluates and predicts on
# `--backend wgpu` and checks every figure against the CPU kernels.
#
# On a machine without a GPU it runs on Mesa's software Vulkan (lavapipe, Debian's
# mesa-vulkan-drivers), installed here when no Vulkan driver is present. Too long for every
# push on 2 cores (the `--features wgpu` release build alone takes 20-35 minutes), so it runs
# apart from .ci/run (docs/gpu.md): before merging changes to
# the GPU path.
#
#   scripts/gpu-smoke.sh            # build (target/wgpu) and run
#   CARGO_TARGET_DIR=DIR scripts/gpu-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1 && command -v apt-get >/dev/null; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y mesa-vulkan-drivers
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/wgpu}"
start=$(date +%s)
cargo test --release --features wgpu --test gpu --no-run
built=$(date +%s)
# One test at a time: both share the device, and the log reads in order.
cargo test --release --features wgpu --test gpu -- --nocapture --test-threads 1
echo "gpu-smoke: build $((built - start)) s, tests $(($(date +%s) - built)) s"
