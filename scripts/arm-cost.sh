#!/usr/bin/env bash
# Static cost-model evidence for our aarch64 hot loops against llama.cpp's NEON ones,
# for when no ARM machine is at hand: both sides are compiled to assembly, the loop that
# does one block step is cut out of each (scripts/arm_cost.py says how), and llvm-mca
# estimates its cycles per iteration on several cores. Output: a markdown table of
# cycles per 32-weight block dot (one weight row x one token x 32 weights), also written
# to target/arm-cost/table.md, with every extracted loop under target/arm-cost/loops/.
#
# Needs: rustup target aarch64-unknown-linux-gnu, python3 with pip (only to fetch the
# llama.cpp sources once), llvm-mca (Debian `llvm`; `llvm-19` is better: LLVM 14 has no
# Neoverse V2), clang (Debian `clang`) for llama.cpp's C/C++; without clang the C file
# is compiled with aarch64-linux-gnu-gcc and the C++ one needs g++-aarch64-linux-gnu.
#
#   scripts/arm-cost.sh                 # everything
#   ARM_COST_MCA=llvm-mca-19 scripts/arm-cost.sh
#   LLAMA_CPP_DIR=/path/to/llama.cpp scripts/arm-cost.sh   # use an unpacked tree
#
# Nothing here changes a kernel: our assembly is the release build as shipped. The
# aarch64 release artifacts of antigravity-core in the target dir are rebuilt each run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$TARGET_DIR/arm-cost
LLAMA_VERSION=0.3.36
CORES=${ARM_COST_CORES:-"cortex-a55 cortex-a76 neoverse-n1 neoverse-v2"}
rm -rf "$OUT/asm" "$OUT/loops"
mkdir -p "$OUT/asm"

say() { printf '%s\n' "$*" >&2; }
die() { say "arm-cost: $*"; exit 1; }

# ---- tools -------------------------------------------------------------------------
newest() { # newest of `name`, `name-NN` on PATH
    local base=$1 best="" v bv=-1 p
    for p in $(compgen -c "$base" | grep -E "^$base(-[0-9]+)?$" | sort -u); do
        v=${p#"$base"}; v=${v#-}; v=${v:-0}
        [ "$v" = 0 ] && v=$("$p" --version 2>/dev/null | grep -oE 'version [0-9]+' | head -1 | grep -oE '[0-9]+' || echo 0)
        if [ "$v" -gt "$bv" ]; then best=$p; bv=$v; fi
    done
    echo "$best"
}
MCA=${ARM_COST_MCA:-$(newest llvm-mca)}
[ -n "$MCA" ] || die "llvm-mca not found (apt-get install llvm, or llvm-19 for Neoverse V2)"
CLANG=${ARM_COST_CLANG:-$(newest clang)}
[ "$CLANG" = none ] && CLANG="" # ARM_COST_CLANG=none: use aarch64-linux-gnu-gcc
CLANGXX=""
if [ -n "$CLANG" ]; then CLANGXX=${CLANG/clang/clang++}; command -v "$CLANGXX" >/dev/null || CLANGXX=""; fi
command -v aarch64-linux-gnu-gcc >/dev/null || [ -n "$CLANG" ] || die "need clang or aarch64-linux-gnu-gcc"
command -v python3 >/dev/null || die "python3 not found"
rustup target list --installed 2>/dev/null | grep -q aarch64-unknown-linux-gnu \
    || die "rustup target add aarch64-unknown-linux-gnu"
say "llvm-mca: $MCA ($("$MCA" --version | grep -oE 'LLVM version [0-9.]+'))"
if [ -n "$CLANG" ]; then say "llama.cpp compiler: $CLANG"; else
    say "clang not found: compiling llama.cpp's C with aarch64-linux-gnu-gcc (apt-get install clang to match llama.cpp's usual Android/Apple compiler)"; fi

# ---- ours: the release build, as assembly --------------------------------------------
RS_ASM=$OUT/asm/ours.s
rust_asm() {
    local deps=$TARGET_DIR/aarch64-unknown-linux-gnu/release/deps
    rm -f "$deps"/antigravity_core-*.s
    CARGO_TARGET_DIR=$TARGET_DIR cargo rustc -q --release -p antigravity-core \
        --target aarch64-unknown-linux-gnu --lib -- --emit=asm,link >&2
    ls "$deps"/antigravity_core-*.s >/dev/null 2>&1
}
say "building antigravity-core (release, aarch64) with --emit asm ..."
if ! rust_asm; then # fresh fingerprint, no .s left behind: rebuild only our crate
    cargo clean -q --release -p antigravity-core --target aarch64-unknown-linux-gnu --target-dir "$TARGET_DIR"
    rust_asm || die "rustc produced no assembly"
fi
cat "$TARGET_DIR"/aarch64-unknown-linux-gnu/release/deps/antigravity_core-*.s > "$RS_ASM"

# ---- llama.cpp sources (PyPI sdist of llama-cpp-python, vendored llama.cpp) ----------
LL=${LLAMA_CPP_DIR:-$OUT/llama_cpp_python-$LLAMA_VERSION/vendor/llama.cpp}
if [ ! -f "$LL/ggml/src/ggml-cpu/arch/arm/quants.c" ]; then
    [ -n "${LLAMA_CPP_DIR:-}" ] && die "no ggml/src/ggml-cpu/arch/arm/quants.c under $LLAMA_CPP_DIR"
    say "fetching llama-cpp-python==$LLAMA_VERSION sdist into $OUT ..."
    python3 -m pip download -q --no-binary llama-cpp-python --no-deps \
        "llama-cpp-python==$LLAMA_VERSION" -d "$OUT/dl" >&2 \
        || die "pip download llama-cpp-python==$LLAMA_VERSION failed"
    tar -xzf "$OUT/dl/llama_cpp_python-$LLAMA_VERSION.tar.gz" -C "$OUT"
fi
G=$LL/ggml
INC=(-I"$G/include" -I"$G/src" -I"$G/src/ggml-cpu")
CFLAGS=(-O3 -DNDEBUG "${INC[@]}") # llama.cpp's CMake Release flags

# compile SRC MARCH OUT LANG -> prints "" on success or why not
compile() {
    local src=$1 march=$2 out=$3 lang=$4
    local log=$OUT/asm/$(basename "$out").log
    if [ "$lang" = c ]; then
        if [ -n "$CLANG" ]; then
            "$CLANG" --target=aarch64-linux-gnu -march="$march" -std=gnu11 "${CFLAGS[@]}" -S "$src" -o "$out" 2>"$log" && return
        else
            aarch64-linux-gnu-gcc -march="$march" -std=gnu11 "${CFLAGS[@]}" -S "$src" -o "$out" 2>"$log" && return
        fi
    else
        if [ -n "$CLANGXX" ]; then
            "$CLANGXX" --target=aarch64-linux-gnu -march="$march" -std=gnu++17 "${CFLAGS[@]}" -S "$src" -o "$out" 2>"$log" && return
            # Debian ships the aarch64 libstdc++ headers only with g++-aarch64-linux-gnu;
            # the host's bits/c++config.h does for a -S of these kernels (no ABI involved).
            local host
            host=$(ls -d /usr/include/x86_64-linux-gnu/c++/* 2>/dev/null | sort -V | tail -1)
            if grep -q "c++config.h" "$log" && [ -n "$host" ]; then
                say "note: no aarch64 libstdc++ headers (g++-aarch64-linux-gnu); using $host/bits/c++config.h"
                "$CLANGXX" --target=aarch64-linux-gnu -march="$march" -std=gnu++17 "${CFLAGS[@]}" \
                    -isystem "$host" -S "$src" -o "$out" 2>"$log" && return
            fi
        elif command -v aarch64-linux-gnu-g++ >/dev/null; then
            aarch64-linux-gnu-g++ -march="$march" -std=gnu++17 "${CFLAGS[@]}" -S "$src" -o "$out" 2>"$log" && return
        else
            echo "no C++ compiler for aarch64 (apt-get install clang, or g++-aarch64-linux-gnu)" > "$log"
        fi
    fi
    rm -f "$out"
    say "arm-cost: could not compile $(basename "$src") for $march (see $log)"
}
ARM=$G/src/ggml-cpu/arch/arm
compile "$ARM/quants.c" armv8-a "$OUT/asm/ll_quants_neon.s" c
compile "$ARM/quants.c" armv8.2-a+dotprod "$OUT/asm/ll_quants_dot.s" c
compile "$ARM/repack.cpp" armv8.2-a+dotprod "$OUT/asm/ll_repack_dot.s" cxx
compile "$ARM/repack.cpp" armv8.2-a+dotprod+i8mm "$OUT/asm/ll_repack_i8mm.s" cxx
LLCC=${CLANG:-aarch64-linux-gnu-gcc}

# ---- cut out the loops, run llvm-mca, print the table ----------------------------------
python3 "$ROOT/scripts/arm_cost.py" \
    --out "$OUT" --mca "$MCA" --cores "$CORES" --iterations 100 \
    --rustc "$(rustc --version)" --cc "$("$LLCC" --version | head -1)" \
    --llama "$LL"
