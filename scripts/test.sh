#!/usr/bin/env bash
# The test suite: what the README's test command runs, and what CI gates on.
#   1. the default model (fetched on first use) — the oracle and end-to-end tests use it;
#   2. unit, property, op, oracle and end-to-end tests on x86-64 (release build);
#   3. the no_std build of the core for a bare-metal target;
#   4. the same test suite for aarch64 under qemu (when the cross toolchain is present).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

echo "== 1/5 default model =="
cargo run --release -q -p harness -- fetch

echo "== 2/5 x86-64 tests =="
cargo test --release --workspace

echo "== 3/5 no_std build (aarch64-unknown-none) =="
if rustup target list --installed 2>/dev/null | grep -q aarch64-unknown-none; then
    cargo build --release -p antigravity-core --no-default-features --target aarch64-unknown-none
else
    echo "SKIP: rustup target aarch64-unknown-none not installed (rustup target add aarch64-unknown-none)"
fi

echo "== 4/5 harness quantize vs the Python gguf package (block for block) =="
VENV="${ANTIGRAVITY_PY_VENV:-target/py-venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" && "$VENV/bin/pip" install -q "gguf==0.19.0" "numpy<3" \
        || echo "note: could not create a Python venv with gguf"
fi
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import gguf" 2>/dev/null; then
    QDIR=$(mktemp -d)
    for model in tiny-tied tiny-untied; do
        for t in q4_0 q4_1 q8_0 f16; do
            ./target/release/harness quantize --model "oracle/models/$model" --out "$QDIR/$model-$t.gguf" --type "$t" 2>/dev/null
            "$VENV/bin/python" scripts/check_quantize.py "oracle/models/$model" "$QDIR/$model-$t.gguf" "$t"
        done
    done
    ./target/release/harness quantize --model oracle/models/tiny-tied --out "$QDIR/pure.gguf" --type q4_0 --pure 2>/dev/null
    "$VENV/bin/python" scripts/check_quantize.py oracle/models/tiny-tied "$QDIR/pure.gguf" q4_0 --pure
    rm -rf "$QDIR"
else
    echo "SKIP: Python venv with gguf unavailable; quantize cross-check not run"
fi

echo "== 5/5 aarch64 tests under qemu =="
if command -v qemu-aarch64 >/dev/null && command -v aarch64-linux-gnu-gcc >/dev/null \
    && rustup target list --installed 2>/dev/null | grep -q aarch64-unknown-linux-gnu; then
    cargo test --release -p antigravity-core --target aarch64-unknown-linux-gnu
else
    echo "SKIP: aarch64 cross toolchain or qemu-aarch64 missing (see docs/build.md)"
fi
echo "== all test stages done =="
