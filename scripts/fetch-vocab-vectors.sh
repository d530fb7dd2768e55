#!/usr/bin/env bash
# Fetches llama.cpp's tokenizer test vectors: the vocabulary-only GGUFs
# `ggml-vocab-*.gguf` with their `.inp` texts and `.out` ids (made with Hugging Face
# tokenizers; llama.cpp is MIT-licensed, its LICENSE is extracted beside them). They ship
# in the PyPI sdist of llama-cpp-python 0.3.36 (vendor/llama.cpp/models/), downloaded with
# pip and checked against its sha256. Prints the folder they are in.
#   usage: scripts/fetch-vocab-vectors.sh [DIR]   (default $ANTIGRAVITY_HOME/ggml-vocab,
#          ANTIGRAVITY_HOME defaulting to ~/.cache/antigravity)
# core/tests/vocab_vectors.rs reads the folder named by $ANTIGRAVITY_VOCAB_DIR (same default).
set -euo pipefail
PKG="llama-cpp-python==0.3.36"
SDIST="llama_cpp_python-0.3.36.tar.gz"
SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
DIR="${1:-${ANTIGRAVITY_VOCAB_DIR:-${ANTIGRAVITY_HOME:-$HOME/.cache/antigravity}/ggml-vocab}}"
if [ -f "$DIR/ggml-vocab-llama-spm.gguf.out" ] && [ -f "$DIR/LICENSE" ]; then
    echo "$DIR"
    exit 0
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# (--no-binary names the package alone: `:all:` would also build pip's metadata step's
# own tools — cmake among them — from source, tens of minutes on two cores)
python3 -m pip download -q --no-binary llama-cpp-python --no-deps "$PKG" -d "$TMP" >&2
echo "$SHA256  $TMP/$SDIST" | sha256sum -c --quiet - >&2
mkdir -p "$DIR.tmp"
tar -xzf "$TMP/$SDIST" -C "$TMP" --wildcards \
    'llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-*' \
    'llama_cpp_python-0.3.36/vendor/llama.cpp/LICENSE'
mv "$TMP"/llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-* "$DIR.tmp/"
mv "$TMP"/llama_cpp_python-0.3.36/vendor/llama.cpp/LICENSE "$DIR.tmp/LICENSE"
rm -rf "$DIR"
mv "$DIR.tmp" "$DIR"
echo "$DIR"
