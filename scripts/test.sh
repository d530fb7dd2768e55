#!/usr/bin/env bash
# The test suite: what the README's test command runs, and what CI gates on.
#   1. the default model (fetched on first use) — the oracle and end-to-end tests use it —
#      and llama.cpp's tokenizer test vectors (scripts/fetch-vocab-vectors.sh);
#   2. unit, property, op, oracle and end-to-end tests on x86-64;
#   3. the no_std build of the core for a bare-metal target;
#   4. `harness quantize` block for block against the Python gguf package;
#   5. the same test suite for aarch64 under qemu (when the cross toolchain is present).
# x86-64 builds use the default (dev) profile, as the README's `cargo run -p harness --
# bench` does, so after that command nothing is built twice (Cargo.toml says why the dev
# profile is optimized). Each stage says what it is about to do before a long, quiet step.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
T0=$SECONDS
stage() { echo "== $* (at $((SECONDS - T0)) s) =="; }
note() { echo "-- $* (at $((SECONDS - T0)) s)"; }

stage "1/5 default model"
note "building harness (first build on 2 cores: several minutes; later runs: seconds) and checking the model"
cargo run -q -p harness -- fetch
HARNESS="${CARGO_TARGET_DIR:-target}/debug/harness"
note "llama.cpp's tokenizer test vectors (the llama-cpp-python 0.3.36 sdist, 77 MB, on first use)"
if VOCAB_DIR=$(bash scripts/fetch-vocab-vectors.sh); then
    export ANTIGRAVITY_VOCAB_DIR="$VOCAB_DIR"
else
    echo "note: could not fetch the tokenizer test vectors; core/tests/vocab_vectors.rs will skip"
fi

stage "2/5 x86-64 tests"
note "building the test binaries (quiet for a few minutes on a first build), then running them"
note "the OpenCL end-to-end tests on PoCL are the longest quiet stretch (minutes on 2 cores)"
cargo test --workspace

stage "3/5 no_std build (aarch64-unknown-none)"
if rustup target list --installed 2>/dev/null | grep -q aarch64-unknown-none; then
    note "building antigravity-core without std"
    cargo build -p antigravity-core --no-default-features --target aarch64-unknown-none
else
    echo "SKIP: rustup target aarch64-unknown-none not installed (rustup target add aarch64-unknown-none)"
fi

stage "4/5 harness quantize vs the Python gguf package (block for block)"
VENV="${ANTIGRAVITY_PY_VENV:-target/py-venv}"
if [ ! -x "$VENV/bin/python" ]; then
    note "creating a Python venv with gguf and numpy in $VENV"
    python3 -m venv "$VENV" && "$VENV/bin/pip" install -q "gguf==0.19.0" "numpy<3" \
        || echo "note: could not create a Python venv with gguf"
fi
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import gguf" 2>/dev/null; then
    QDIR=$(mktemp -d)
    for model in tiny-tied tiny-untied; do
        for t in q4_0 q4_1 q5_0 q5_1 q8_0 f16; do
            "$HARNESS" quantize --model "oracle/models/$model" --out "$QDIR/$model-$t.gguf" --type "$t" 2>/dev/null
            "$VENV/bin/python" scripts/check_quantize.py "oracle/models/$model" "$QDIR/$model-$t.gguf" "$t"
        done
    done
    "$HARNESS" quantize --model oracle/models/tiny-tied --out "$QDIR/pure.gguf" --type q4_0 --pure 2>/dev/null
    "$VENV/bin/python" scripts/check_quantize.py oracle/models/tiny-tied "$QDIR/pure.gguf" q4_0 --pure
    rm -rf "$QDIR"
else
    echo "SKIP: Python venv with gguf unavailable; quantize cross-check not run"
fi

stage "5/5 aarch64 tests under qemu"
if command -v qemu-aarch64 >/dev/null && command -v aarch64-linux-gnu-gcc >/dev/null \
    && rustup target list --installed 2>/dev/null | grep -q aarch64-unknown-linux-gnu; then
    # A separate target, so a separate build whatever the profile; --release (opt-level 3,
    # no debug assertions) keeps the emulated runs short.
    note "cross-building the aarch64 tests (quiet for a few minutes), then running them under qemu -cpu max"
    cargo test --release -p antigravity-core --target aarch64-unknown-linux-gnu
    note "again on a plain-NEON CPU (qemu -cpu cortex-a53: no dotprod/i8mm): kernels, ops, oracle"
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu cortex-a53" \
        cargo test --release -p antigravity-core --target aarch64-unknown-linux-gnu --lib --test oracle --test conformance
else
    echo "SKIP: aarch64 cross toolchain or qemu-aarch64 missing (see docs/build.md)"
fi
if rustup target list --installed 2>/dev/null | grep -q aarch64-linux-android; then
    # The core library with the OpenCL backend (dlopen2, its libOpenCL loader, is patched
    # for Android: third_party/dlopen2/PATCHED.md) and the harness binary. No NDK here, so
    # no link; docs/build.md has the phone build.
    note "Android: compile check of antigravity-core with OpenCL and of the harness (no NDK here, so no link)"
    cargo check --release -p antigravity-core --features opencl --target aarch64-linux-android
    cargo check --release -p harness --target aarch64-linux-android
fi
stage "all test stages done"
