#!/usr/bin/env python3
"""Static cost model for aarch64 hot loops (driven by scripts/arm-cost.sh).

Given assembly files (ours from rustc, llama.cpp's from clang or gcc), this finds, for
each kernel in K, the loop that performs one block step, writes that loop body as a
straight-line snippet, runs llvm-mca on it for each core, and prints a markdown table of
cycles per 32-weight block dot (one weight row x one token x 32 weights).

How a loop is found (no source markers, so codegen is exactly the shipped one):
  * the function is located by symbol (Rust legacy mangling: `<len><name>17h<hash>E`);
  * its basic blocks and branch edges are rebuilt from the text (named labels, and the
    numeric `1:` / `1b` / `1f` labels of inline asm);
  * natural loops come from dominators; each simple path once around an innermost loop
    is a candidate pass, accepted when it holds exactly the "work" instructions that
    one iteration of the source loop must contain (K below: f32 `fmla`s for our x8
    tiles, which pin the token count T, plus `sdot`; `sdot` / `smull` / `smmla` for the
    others), or a whole multiple of them where the source does several blocks a pass;
  * `.inst` words (llama.cpp's hand-encoded inline asm) are decoded with llvm-mc, and a
    local helper the compiler did not inline (`bl f`) has its body spliced in;
  * where LLVM kept a constant-trip inner loop (e.g. `for q in 0..4`) un-unrolled, a
    path through the outer loop is accepted only if the inner loop's trip count can be
    read off the code (`mov R, xzr|#i` ... `add R, R, #s` ... `cmp R, #n`) and the
    expanded count matches; the inner body is then repeated that many times;
  * several paths through one loop (data-dependent branches in the body, e.g. a software
    f16->f32 conversion) are all measured (the shortest and longest if more than 16)
    and reported as a min-max range;
  * anything else is reported as not found: no number is made up.

llvm-mca assumes every load hits L1 and every branch is predicted; it measures the core's
issue and dependency limits only. Numbers compare instruction streams, not memory.
"""

import argparse
import json
import os
import re
import subprocess

# ---------------------------------------------------------------- parsing

BRANCH_COND = re.compile(r"^b\.?(eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le|al|nv)$")
NORETURN = re.compile(r"panic|_fail|unwrap_failed|abort|__stack_chk_fail|assert")
LABEL_RE = re.compile(r"^\s*([A-Za-z_.$][\w.$@]*|\d+):(.*)$")


def strip_comment(line):
    # AArch64 assembly comments: `//` (LLVM, GCC) and `;` is a separator only on Darwin.
    i = line.find("//")
    return line if i < 0 else line[:i]


def read_functions(path):
    """{symbol: [raw lines]} for every function in an assembly file (label .. .cfi_endproc)."""
    funcs, cur, name = {}, None, None
    with open(path, errors="replace") as f:
        for raw in f:
            line = raw.rstrip("\n")
            m = re.match(r"^([A-Za-z_$][\w.$]*):", line)
            if m and cur is None and not m.group(1).startswith(".L"):
                name, cur = m.group(1), []
                continue
            if cur is not None:
                if ".cfi_endproc" in line or re.match(r"^\.Lfunc_end\d+:", line):
                    funcs[name] = cur
                    cur = None
                    continue
                cur.append(line)
    return funcs


def items_of(lines):
    """[('label', name) | ('insn', mnemonic, operands, text)] with numeric labels made unique."""
    items = []
    for raw in lines:
        s = strip_comment(raw).strip()
        m = LABEL_RE.match(s)
        while m:
            items.append(("label", m.group(1)))
            s = m.group(2).strip()
            m = LABEL_RE.match(s)
        m = re.match(r"\.inst\s+(0x[0-9a-fA-F]+)", s)
        if m:  # hand-encoded instruction (llama.cpp's inline asm): decoded later
            items.append(("insn", ".inst", m.group(1), s))
            continue
        if not s or s.startswith("."):
            continue
        parts = s.split(None, 1)
        mn = parts[0].lower()
        ops = parts[1].strip() if len(parts) > 1 else ""
        items.append(("insn", mn, ops, s))
    # Unique names for numeric labels; rewrite `Nb` / `Nf` references.
    defs = {}
    for i, it in enumerate(items):
        if it[0] == "label" and it[1].isdigit():
            defs.setdefault(it[1], []).append(i)
    out = []
    for i, it in enumerate(items):
        if it[0] == "label" and it[1].isdigit():
            out.append(("label", f"{it[1]}@{i}"))
            continue
        if it[0] == "insn":
            t = branch_target(it[1], it[2])
            if t and re.fullmatch(r"\d+[bf]", t):
                n, d = t[:-1], t[-1]
                cands = [j for j in defs.get(n, []) if (j < i if d == "b" else j > i)]
                if cands:
                    j = max(cands) if d == "b" else min(cands)
                    ops = it[2][: it[2].rfind(t)] + f"{n}@{j}"
                    it = ("insn", it[1], ops, it[3])
        out.append(it)
    return out


def branch_target(mn, ops):
    if mn in ("b", "bl") or BRANCH_COND.match(mn) or mn in ("cbz", "cbnz", "tbz", "tbnz"):
        return ops.split(",")[-1].strip()
    return None


def is_terminator(mn, ops):
    if mn in ("b", "br", "ret", "brk", "udf", "hlt"):
        return True
    if mn == "bl" and NORETURN.search(ops):
        return True
    return False


class Cfg:
    """Basic blocks (lists of insn items) with successor edges."""

    def __init__(self, items):
        self.blocks, self.succ, label_block = [], [], {}
        self.label_block = label_block
        cur, pending = [], []
        used = {branch_target(it[1], it[2]) for it in items if it[0] == "insn"}
        items = [it for it in items if it[0] == "insn" or it[1] in used]  # drop debug labels

        def close():
            nonlocal cur, pending
            if cur or pending:
                b = len(self.blocks)
                for l in pending:
                    label_block[l] = b
                self.blocks.append(cur)
                cur, pending = [], []

        for it in items:
            if it[0] == "label":
                if cur:
                    close()
                pending.append(it[1])
                continue
            cur.append(it)
            mn = it[1]
            if branch_target(mn, it[2]) and mn != "bl" or is_terminator(mn, it[2]):
                close()
        close()
        n = len(self.blocks)
        for b, insns in enumerate(self.blocks):
            s = []
            last = insns[-1] if insns else None
            if last is not None:
                t = branch_target(last[1], last[2])
                if t is not None and last[1] != "bl" and t in label_block:
                    s.append(label_block[t])
            if (last is None or not is_terminator(last[1], last[2])) and b + 1 < n:
                s.append(b + 1)
            self.succ.append(sorted(set(s)))

    def loops(self):
        """Natural loops {header: body set}, from back-edges u -> h where h dominates u."""
        n = len(self.blocks)
        preds = [[] for _ in range(n)]
        for u in range(n):
            for v in self.succ[u]:
                preds[v].append(u)
        reach, todo = {0}, [0]
        while todo:
            for v in self.succ[todo.pop()]:
                if v not in reach:
                    reach.add(v)
                    todo.append(v)
        dom = {b: set(reach) for b in reach}
        dom[0] = {0}
        changed = True
        while changed:
            changed = False
            for b in sorted(reach - {0}):
                ps = [dom[p] for p in preds[b] if p in reach]
                d = set.intersection(*ps) | {b} if ps else {b}
                if d != dom[b]:
                    dom[b], changed = d, True
        loops = {}
        for u in reach:
            for h in self.succ[u]:
                if h in dom[u]:
                    body, todo = loops.setdefault(h, {h}), [u]
                    while todo:
                        x = todo.pop()
                        if x not in body:
                            body.add(x)
                            todo += [p for p in preds[x] if p in reach]
        return loops

    def paths(self, header, body, limit=4096):
        """Simple cycles from `header` that stay inside `body` (one pass of the loop each)."""
        out, stack = [], [(header, [header])]
        while stack and len(out) < limit:
            v, path = stack.pop()
            for w in self.succ[v]:
                if w == header:
                    out.append(path)
                elif w in body and w not in path:
                    stack.append((w, path + [w]))
        return out


def decode_inst(items, mc_bin):
    """Replace `.inst 0x...` words by their disassembly (llvm-mc), so llvm-mca sees them."""
    words = [it[2] for it in items if it[0] == "insn" and it[1] == ".inst"]
    if not words:
        return items
    text = "".join(" ".join(f"0x{(int(w, 16) >> (8 * i)) & 0xff:02x}" for i in range(4)) + "\n" for w in words)
    p = subprocess.run([mc_bin, "--disassemble", "-triple=aarch64", "-mattr=+dotprod,+i8mm,+fullfp16"],
                       input=text, capture_output=True, text=True)
    dec = [l.strip() for l in p.stdout.splitlines() if l.strip() and not l.strip().startswith(".")]
    if p.returncode != 0 or len(dec) != len(words):
        raise SystemExit(f"llvm-mc could not decode the .inst words: {p.stderr[:200]}")
    out, i = [], 0
    for it in items:
        if it[0] == "insn" and it[1] == ".inst":
            parts = dec[i].split(None, 1)
            i += 1
            it = ("insn", parts[0], parts[1] if len(parts) > 1 else "", dec[i - 1])
        out.append(it)
    return out


def inline_calls(items, funcs):
    """Splice the body of each local callee (`bl f`, f in this file) in after the call,
    `ret` turned into a branch back, so a loop that calls a helper LLVM did not inline is
    modelled with the helper's instructions (the `bl` itself stays, as does its cost)."""
    out, n, called = [], 0, []
    for it in items:
        out.append(it)
        if it[0] != "insn" or it[1] != "bl" or it[2] not in funcs or NORETURN.search(it[2]):
            continue
        n += 1
        called.append(it[2])
        body = items_of(funcs[it[2]])
        local = {x[1] for x in body if x[0] == "label"}
        back = f"ret@{n}"
        for x in body:
            if x[0] == "label":
                out.append(("label", f"{x[1]}@c{n}"))
                continue
            t = branch_target(x[1], x[2])
            if x[1] == "ret":
                x = ("insn", "b", back, "b " + back)
            elif t in local:
                x = ("insn", x[1], x[2][: x[2].rfind(t)] + f"{t}@c{n}", x[3])
            out.append(x)
        out.append(("label", back))
    return out, called


# ---------------------------------------------------------------- loop selection


def count(insns, work):
    return sum(1 for it in insns if work.match(it[1]))


def passes(insns, work, max_unroll):
    """Blocks per pass if every (regex, per block) in `work` is met k times, else None."""
    k = None
    for w, per in work:
        c = count(insns, w)
        if not c or c % per or (k is not None and c // per != k):
            return None
        k = c // per
    return k if k <= max_unroll else None


def seq(cfg, cyc):
    return [it for b in cyc for it in cfg.blocks[b]]


def trip_count(cfg, outer, inner):
    """Constant trip count of `inner` (a cycle nested in `outer`), or None."""
    ins = seq(cfg, inner)
    # the last flag-setting instruction before the inner back-edge must be `cmp R, #n`
    setters = [it for it in ins if it[1] in ("cmp", "cmn", "subs", "adds", "tst", "ands")]
    for it in setters[-1:]:
        m = re.fullmatch(r"(x\d+|w\d+),\s*#(0x[0-9a-f]+|\d+)", it[2]) if it[1] == "cmp" else None
        if m:
            reg, limit = m.group(1), int(m.group(2), 0)
            step = None
            for jt in ins:
                mm = re.fullmatch(rf"{reg},\s*{reg},\s*#(0x[0-9a-f]+|\d+)", jt[2])
                if jt[1] == "add" and mm:
                    step = int(mm.group(1), 0)
            init = None
            for b in outer:
                if b in inner:
                    continue
                for jt in cfg.blocks[b]:
                    if jt[1] == "mov" and re.fullmatch(rf"{reg},\s*(xzr|wzr)", jt[2]):
                        init = 0
                    mm = re.fullmatch(rf"{reg},\s*#(0x[0-9a-f]+|\d+)", jt[2])
                    if jt[1] == "mov" and mm:
                        init = int(mm.group(1), 0)
            if step and init is not None and (limit - init) % step == 0 and limit > init:
                return (limit - init) // step
    return None


def expand(cfg, outer, inner, trips):
    """The outer path with the inner cycle repeated to `trips` total passes."""
    out = []
    entry = next(b for b in outer if b in inner)
    k = inner.index(entry)
    rot = inner[k:] + inner[:k]
    for b in outer:
        if b == entry:
            for _ in range(trips - 1):
                out += seq(cfg, rot)
        out += cfg.blocks[b]
    return out


GPR = re.compile(r"^[wx](\d+)$")
F16_NORMAL = 0x2E66  # a normal, nonzero f16 (about 0.1): what real block scales are


def constants(cfg):
    """Registers set exactly once in the function, by `mov R, #imm`: {number: value}."""
    defs = {}
    for b in cfg.blocks:
        for it in b:
            ops = [o.strip() for o in it[2].split(",")]
            m = GPR.match(ops[0]) if ops and it[1] not in ("cmp", "cmn", "tst", "cbz", "cbnz", "tbz", "tbnz") \
                and not it[1].startswith(("st", "b", "prfm")) else None
            if m:
                defs.setdefault(int(m.group(1)), []).append(it)
    out = {}
    for r, ds in defs.items():
        if len(ds) == 1 and ds[0][1] == "mov":
            mm = re.fullmatch(r"[wx]\d+,\s*#(-?(0x[0-9a-f]+|\d+))", ds[0][2])
            if mm:
                out[r] = int(mm.group(1), 0) & 0xFFFFFFFF
    return out


def normal_scales(cfg, path, consts):
    """False if this pass is impossible when every f16 scale is a normal nonzero number.

    A small evaluator: halfword loads (`ldrh`/`ldurh`, how the scales are read) give
    F16_NORMAL; `mov`/`and`/`orr`/`lsl`/`lsr` on known values are computed; `tst`,
    `ands`, `cmp` set Z; each conditional branch on Z (or `cbz`/`cbnz`) whose outcome
    is known must agree with the direction the path takes. Anything else is unknown,
    and unknown never rules a path out."""
    regs, z = dict(consts), None

    def val(o):
        o = o.strip()
        if o.startswith("#"):
            try:
                return int(o[1:], 0) & 0xFFFFFFFF
            except ValueError:
                return None
        if o in ("wzr", "xzr"):
            return 0
        m = GPR.match(o)
        return regs.get(int(m.group(1))) if m else None

    for i, b in enumerate(path):
        nxt = path[(i + 1) % len(path)]
        for it in cfg.blocks[b]:
            mn, ops = it[1], [o.strip() for o in it[2].split(",")]
            dst = GPR.match(ops[0]) if ops else None
            dst = int(dst.group(1)) if dst else None
            t = branch_target(mn, it[2])
            if t is not None and mn != "bl":
                tb = cfg.label_block.get(t)
                if tb is None or tb == b + 1 or nxt not in (tb, b + 1):
                    continue
                taken = nxt == tb
                cond = None
                if mn in ("b.eq", "beq") and z is not None:
                    cond = z
                elif mn in ("b.ne", "bne") and z is not None:
                    cond = not z
                elif mn in ("cbz", "cbnz") and val(ops[0]) is not None:
                    cond = (val(ops[0]) == 0) == (mn == "cbz")
                if cond is not None and cond != taken:
                    return False
                continue
            if mn in ("ldrh", "ldurh"):
                regs[dst] = F16_NORMAL
            elif mn == "mov" and len(ops) == 2 and dst is not None:
                v = val(ops[1])
                regs[dst] = v if v is not None else regs.pop(dst, None)
            elif mn in ("and", "ands", "orr", "lsl", "lsr") and len(ops) == 3 and dst is not None:
                a, c = val(ops[1]), val(ops[2])
                v = None
                if a is not None and c is not None:
                    v = {"and": a & c, "ands": a & c, "orr": a | c,
                         "lsl": (a << c) & 0xFFFFFFFF, "lsr": a >> c}[mn]
                if v is None:
                    regs.pop(dst, None)
                else:
                    regs[dst] = v
                if mn == "ands":
                    z = None if v is None else v == 0
            elif mn == "tst":
                a, c = val(ops[0]), val(ops[1]) if len(ops) == 2 else None
                z = None if a is None or c is None else (a & c) == 0
            elif mn == "cmp":
                a, c = val(ops[0]), val(ops[1]) if len(ops) == 2 else None
                z = None if a is None or c is None else a == c
            else:
                if mn in ("subs", "adds", "cmn", "ccmp", "ccmn", "fcmp", "negs", "bics"):
                    z = None
                if dst is not None and not mn.startswith(("st", "prfm")) and mn not in ("cbz", "cbnz", "tbz", "tbnz"):
                    regs.pop(dst, None)
                for o in ops[1:]:  # post/pre-indexed addressing writes the base
                    m = re.match(r"\[?([wx]\d+)", o)
                    if m and ("]!" in it[2] or re.search(r"\],\s*#", it[2])):
                        regs.pop(int(m.group(1)[1:]), None)
    return True


def find_loop(cfg, work, max_unroll):
    """Block-step bodies {loop header: [(blocks per pass, insns, note)]}, one per path."""
    loops = cfg.loops()
    kids = {h: [c for c in loops if c != h and c in b] for h, b in loops.items()}
    found, nested = {}, {}
    for h, body in loops.items():
        if len(kids[h]) == 1 and not kids[kids[h][0]]:
            # a loop around one innermost loop that the compiler did not unroll (e.g. a
            # constant `for q in 0..4`): accepted only with a trip count read off the code
            ih = kids[h][0]
            inner_paths = cfg.paths(ih, loops[ih], limit=17)
            outer_paths = cfg.paths(h, body, limit=257)
            if len(inner_paths) > 16 or len(outer_paths) > 256:
                continue  # branchy: not a plain constant-trip inner loop
            for p in outer_paths:
                if ih not in p:
                    continue
                for ip in inner_paths:
                    t = trip_count(cfg, p, ip)
                    if t is None or t < 2:
                        continue
                    nested[ih] = t  # a constant-trip loop is part of a block step, not one
                    ins = expand(cfg, p, ip, t)
                    if passes(ins, work, 1) == 1:
                        found.setdefault(h, []).append(
                            (1, ins, f"inner loop kept by the compiler, expanded x{t}", True))
    for h, body in loops.items():
        if not kids[h] and h not in nested:  # innermost loop: every path is one pass
            ps = cfg.paths(h, body)
            cap = f"path enumeration stopped at {len(ps)}" if len(ps) >= 4096 else ""
            consts = constants(cfg) if len(ps) > 1 else {}
            for p in ps:
                k = passes(seq(cfg, p), work, max_unroll)
                if k:
                    normal = normal_scales(cfg, p, consts) if len(ps) > 1 else True
                    found.setdefault(h, []).append((k, seq(cfg, p), cap, normal))
    return found


# ---------------------------------------------------------------- llvm-mca


def snippet(insns):
    lines = [".Lmca_top:"]
    for it in insns:
        t = branch_target(it[1], it[2])
        if t is not None:
            ops = it[2][: it[2].rfind(t)] + ".Lmca_top"
            lines.append(f"\t{it[1]}\t{ops}")
        else:
            lines.append(f"\t{it[1]}\t{it[2]}")
    return "\n".join(lines) + "\n"


def mca(mca_bin, cpu, mattr, text, iters):
    cmd = [mca_bin, "-mtriple=aarch64", f"-mcpu={cpu}", f"-iterations={iters}"]
    if mattr:
        cmd.append(f"-mattr={mattr}")
    p = subprocess.run(cmd, input=text, capture_output=True, text=True)
    if "not a recognized processor" in p.stderr:
        return None, f"llvm-mca does not know {cpu}"
    if p.returncode != 0:
        return None, "llvm-mca failed: " + p.stderr.strip().splitlines()[0][:120]
    m = re.search(r"Total Cycles:\s+(\d+)", p.stdout)
    return int(m.group(1)) / iters, p.stdout


# ---------------------------------------------------------------- what is measured


def rs(name):
    """Our functions, by exact identifier (Rust legacy mangling: <len><name>17h<hash>E)."""
    return rf"{len(name)}{name}17h[0-9a-f]{{16}}E(\.llvm\.\d+)?$"


SDOT, SMULL, SMMLA = r"sdot$", r"smull2?$", r"smmla$"


def C(name):
    """A C symbol, or its C++ mangling where a header did not say extern "C"."""
    return rf"^({name}$|_Z{len(name)}{name}[A-Za-z])"


# id: (asm, symbol regexes, work insn, work per source-loop iteration, rows, tokens,
#      max iterations the compiler/source folds into one loop pass, feature the core needs)
K = {}


def kern(kid, asm, syms, work, rows, tokens, unroll=1, needs=None, what=""):
    K[kid] = dict(id=kid, asm=asm, syms=syms, work=work, rows=rows,
                  tokens=tokens, unroll=unroll, needs=needs, what=what)


FMLA = r"fmla$"
for q in ("q4_0", "q4_1", "q8_0"):
    fma = 4 if q == "q4_1" else 2  # f32 FMAs per token per x8 block: acc[t][h] (+ mins)
    for isa in ("dot", "neon"):
        # One x8 block step: 8 rows x 32 weights x T tokens. Found by its float FMAs,
        # which the compiler cannot reassociate; sdot: 8 pieces x 2 halves per token.
        for t in (1, 4):
            work = [(FMLA, fma * t)] + ([(SDOT, 16 * t)] if isa == "dot" else [])
            kern(f"ours_{q}x8_{isa}_t{t}", "ours",
                 [rs(f"{q}x8_{isa}_impl"), rs(f"gemm_{q}x8_{isa}")], work, 8, t,
                 what=f"tile_{q}_{isa}::<{t}> block loop (inlined in the x8 driver)")
        work = [(SDOT, 2)] if isa == "dot" else [(SMULL, 4)]
        kern(f"ours_dot_{q}_{isa}", "ours", [rs(f"dot_{q}_{isa}")], work, 1, 1, unroll=4,
             what=f"dot_{q}_{isa} block loop")
kern("ours_gemv_q4_0_dot", "ours", [rs("gemv_q4_0_dot")], [(SDOT, 8)], 4, 1,
     what="gemv_q4_0_dot (plain layout, 4 rows/step) block loop")

VD = {"q4_0": "ggml_vec_dot_q4_0_q8_0", "q4_1": "ggml_vec_dot_q4_1_q8_1", "q8_0": "ggml_vec_dot_q8_0_q8_0"}
for q, fn in VD.items():
    kern(f"ll_dot_{q}_dot", "ll_quants_dot", [C(fn)], [(SDOT, 2)], 1, 1, unroll=4,
         what=f"{fn} (armv8.2-a+dotprod)")
    kern(f"ll_dot_{q}_neon", "ll_quants_neon", [C(fn)], [(SMULL, 4)], 1, 1, unroll=4,
         what=f"{fn} (armv8-a: ggml_vdotq_s32 emulated by smull)")
for q in ("q4_0", "q8_0"):
    g = f"ggml_gemv_{q}_4x4_q8_0"
    kern(f"ll_gemv_{q}_4x4", "ll_repack_dot", [C(g)], [(SDOT, 8)], 4, 1, what=g + " (dotprod)")
    g = f"ggml_gemv_{q}_4x8_q8_0"
    kern(f"ll_gemv_{q}_4x8", "ll_repack_i8mm", [C(g)], [(SDOT, 8)], 4, 1, needs="i8mm",
         what=g + " (llama.cpp picks it when i8mm is present)")
    g = f"ggml_gemm_{q}_4x4_q8_0"
    kern(f"ll_gemm_{q}_4x4_t4", "ll_repack_dot", [C(g)], [(SDOT, 32)], 4, 4, what=g + ", 4-token loop")
    g = f"ggml_gemm_{q}_4x8_q8_0"
    kern(f"ll_gemm_{q}_4x8_t4", "ll_repack_i8mm", [C(g)], [(SMMLA, 16)], 4, 4, needs="i8mm",
         what=g + " (smmla), 4-token loop")
kern("ll_gemm_q4_0_4x4_t16", "ll_repack_dot", [C("ggml_gemm_q4_0_4x4_q8_0")], [(SDOT, 128)], 4, 16,
     what="ggml_gemm_q4_0_4x4_q8_0 (inline asm), 16-token loop")
kern("ll_gemm_q4_0_4x8_t16", "ll_repack_i8mm", [C("ggml_gemm_q4_0_4x8_q8_0")], [(SMMLA, 64)], 4, 16,
     needs="i8mm", what="ggml_gemm_q4_0_4x8_q8_0 (inline asm, smmla), 16-token loop")

PAIRS = [
    # decode: one token
    ("decode Q4_0: x8 sdot T=1 vs gemv_q4_0_4x4", "ours_q4_0x8_dot_t1", "ll_gemv_q4_0_4x4"),
    ("decode Q4_0: x8 sdot T=1 vs gemv_q4_0_4x8 (i8mm cores)", "ours_q4_0x8_dot_t1", "ll_gemv_q4_0_4x8"),
    ("decode Q8_0: x8 sdot T=1 vs gemv_q8_0_4x4", "ours_q8_0x8_dot_t1", "ll_gemv_q8_0_4x4"),
    ("decode Q4_1: x8 sdot T=1 vs vec_dot_q4_1_q8_1 (no Q4_1 repack in llama.cpp)", "ours_q4_1x8_dot_t1", "ll_dot_q4_1_dot"),
    ("decode Q4_0, no dotprod: x8 NEON T=1 vs vec_dot_q4_0_q8_0 armv8-a", "ours_q4_0x8_neon_t1", "ll_dot_q4_0_neon"),
    ("decode Q4_1, no dotprod: x8 NEON T=1 vs vec_dot_q4_1_q8_1 armv8-a", "ours_q4_1x8_neon_t1", "ll_dot_q4_1_neon"),
    ("decode Q8_0, no dotprod: x8 NEON T=1 vs vec_dot_q8_0_q8_0 armv8-a", "ours_q8_0x8_neon_t1", "ll_dot_q8_0_neon"),
    # prefill: several tokens share each weight load
    ("prefill Q4_0: x8 sdot T=4 vs gemm_q4_0_4x4 (4 tok)", "ours_q4_0x8_dot_t4", "ll_gemm_q4_0_4x4_t4"),
    ("prefill Q4_0: x8 sdot T=4 vs gemm_q4_0_4x4 (16 tok)", "ours_q4_0x8_dot_t4", "ll_gemm_q4_0_4x4_t16"),
    ("prefill Q4_0: x8 sdot T=4 vs gemm_q4_0_4x8 smmla (16 tok, i8mm cores)", "ours_q4_0x8_dot_t4", "ll_gemm_q4_0_4x8_t16"),
    ("prefill Q8_0: x8 sdot T=4 vs gemm_q8_0_4x4 (4 tok)", "ours_q8_0x8_dot_t4", "ll_gemm_q8_0_4x4_t4"),
    ("prefill Q8_0: x8 sdot T=4 vs gemm_q8_0_4x8 smmla (4 tok, i8mm cores)", "ours_q8_0x8_dot_t4", "ll_gemm_q8_0_4x8_t4"),
    ("prefill Q4_0, no dotprod: x8 NEON T=4 vs vec_dot_q4_0_q8_0 armv8-a", "ours_q4_0x8_neon_t4", "ll_dot_q4_0_neon"),
    # plain (not repacked) layouts
    ("plain Q4_0 dot: dot_q4_0_dot vs vec_dot_q4_0_q8_0", "ours_dot_q4_0_dot", "ll_dot_q4_0_dot"),
    ("plain Q4_1 dot: dot_q4_1_dot vs vec_dot_q4_1_q8_1", "ours_dot_q4_1_dot", "ll_dot_q4_1_dot"),
    ("plain Q8_0 dot: dot_q8_0_dot vs vec_dot_q8_0_q8_0", "ours_dot_q8_0_dot", "ll_dot_q8_0_dot"),
    ("plain Q4_0 dot, no dotprod: dot_q4_0_neon vs vec_dot armv8-a", "ours_dot_q4_0_neon", "ll_dot_q4_0_neon"),
    ("plain Q4_1 dot, no dotprod: dot_q4_1_neon vs vec_dot armv8-a", "ours_dot_q4_1_neon", "ll_dot_q4_1_neon"),
    ("plain Q8_0 dot, no dotprod: dot_q8_0_neon vs vec_dot armv8-a", "ours_dot_q8_0_neon", "ll_dot_q8_0_neon"),
    ("plain Q4_0 4-row gemv: gemv_q4_0_dot vs gemv_q4_0_4x4", "ours_gemv_q4_0_dot", "ll_gemv_q4_0_4x4"),
]

# The features each modelled core has (llama.cpp picks its kernels by these).
CORE_FEATURES = {"cortex-a55": {"dotprod"}, "cortex-a76": {"dotprod"}, "neoverse-n1": {"dotprod"},
                 "neoverse-v2": {"dotprod", "i8mm"}}
MATTR = "+neon,+dotprod,+i8mm"
MC = "llvm-mc"  # lets llvm-mca parse every instruction on every core


# ---------------------------------------------------------------- driver


def sched_model(mca_bin, cpu):
    """Name of the scheduling model llvm-mca uses for `cpu` (from its resource names)."""
    p = subprocess.run([mca_bin, "-mtriple=aarch64", f"-mcpu={cpu}", "-iterations=1"],
                       input="add x0, x0, #1\n", capture_output=True, text=True)
    if "not a recognized processor" in p.stderr:
        return None
    m = re.search(r"\[\d+(\.\d+)?\]\s+-\s+([A-Za-z0-9]+?)Unit", p.stdout)
    return m.group(2) if m else "?"


def measure(k, asm_path, funcs, mca_bin, cores, iters, out_dir, log):
    names = [n for n in funcs if any(re.search(p, n) for p in k["syms"])]
    if not names:
        return {"error": "symbol not found" if os.path.exists(asm_path) else "not compiled"}
    work = [(re.compile(w), n) for w, n in k["work"]]
    found = {}
    for n in names:
        items, called = inline_calls(decode_inst(items_of(funcs[n]), MC), funcs)
        cfg = Cfg(items)
        for key, paths in find_loop(cfg, work, k["unroll"]).items():
            calls = sorted({demangle(it[2]) for p in paths for it in p[1] if it[1] == "bl" and it[2] in called})
            if calls:
                note = "calls " + ", ".join(calls) + " (not inlined by the compiler; its body is spliced in)"
                paths = [(a, b, (c + "; " if c else "") + note, d) for a, b, c, d in paths]
            found[(n, key)] = paths
    if not found:
        want = " + ".join(f"{n} {w.rstrip('$')}" for w, n in k["work"])
        return {"error": f"no loop with {want} per block"}
    if len(found) > 1 and k["unroll"] == 1:
        return {"error": f"{len(found)} loops match; ambiguous"}
    # plain dots: keep the loop that does the most blocks per pass (the main one)
    key = max(found, key=lambda b: max(x[0] for x in found[b]))
    paths = found[key]
    kmax = max(x[0] for x in paths)
    uniq = {}
    for x in paths:
        if x[0] == kmax:
            uniq.setdefault(tuple(it[3] for it in x[1]), x)
    paths = sorted(uniq.values(), key=lambda x: len(x[1]))
    npaths, note = len(paths), paths[0][2]
    normal = [x for x in paths if x[3]]
    if npaths > 1 and len(normal) == 1:
        note = (note + "; " if note else "") + "one path fits normal nonzero f16 scales"
    else:
        normal = []
    if npaths > 16:  # data-dependent branches: measure the shortest and the longest path
        paths = [paths[0], paths[-1]]
        note = (note + "; " if note else "") + f"shortest and longest of {npaths} paths measured"
    units = kmax * k["rows"] * k["tokens"]
    r = {"symbol": key[0], "paths": npaths, "unroll": kmax, "units": units,
         "note": note, "insns": sorted({len(p[1]) for p in paths}), "cores": {}}
    for pi, (_, ins, _, _) in enumerate(paths + normal):
        with open(os.path.join(out_dir, "loops", f"{k['id']}.{pi}.s"), "w") as f:
            f.write(snippet(ins))
    for cpu in cores:
        if k["needs"] and k["needs"] not in CORE_FEATURES.get(cpu, set()):
            r["cores"][cpu] = {"error": f"no {k['needs']}"}
            continue
        vals, err = [], None
        for pi, (_, ins, _, _) in enumerate(paths + normal):
            cyc, rep = mca(mca_bin, cpu, MATTR, snippet(ins), iters)
            if cyc is None:
                err = rep
                break
            vals.append(cyc)
            with open(os.path.join(out_dir, "loops", f"{k['id']}.{pi}.{cpu}.mca"), "w") as f:
                f.write(rep)
        if normal and not err:
            nv = vals.pop()
        r["cores"][cpu] = {"error": err} if err else {
            "iter": [min(vals), max(vals)], "per_block": [min(vals) / units, max(vals) / units]}
        if normal and not err:
            r["cores"][cpu]["normal"] = nv / units
            r["cores"][cpu]["normal_iter"] = nv
    print(f"{k['id']}: {key[0]} paths={len(paths)} blocks/pass={kmax} insns={r['insns']} {r['note']}", file=log)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--mca", required=True)
    ap.add_argument("--cores", required=True)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--rustc", default="")
    ap.add_argument("--cc", default="")
    ap.add_argument("--llama", default="")
    ap.add_argument("--mc", default="")
    a = ap.parse_args()
    global MC
    MC = a.mc or a.mca.replace("llvm-mca", "llvm-mc")
    os.makedirs(os.path.join(a.out, "loops"), exist_ok=True)
    cores = a.cores.split()
    models = {c: sched_model(a.mca, c) for c in cores}
    cache, results = {}, {}
    log = open(os.path.join(a.out, "loops.log"), "w", buffering=1)
    for k in K.values():
        path = os.path.join(a.out, "asm", k["asm"] + ".s")
        if path not in cache:
            cache[path] = read_functions(path) if os.path.exists(path) else {}
        results[k["id"]] = measure(k, path, cache[path], a.mca, cores, a.iterations, a.out, log)
    json.dump({"models": models, "results": results}, open(os.path.join(a.out, "results.json"), "w"), indent=1)
    ver = subprocess.run([a.mca, "--version"], capture_output=True, text=True).stdout
    ver = re.search(r"LLVM version [\d.]+", ver)
    head = [f"llvm-mca: {ver.group(0) if ver else a.mca}, -iterations={a.iterations}; ours: {a.rustc} "
            f"(release profile, target aarch64-unknown-linux-gnu, generic CPU); llama.cpp: {a.cc}, -O3, "
            f"sources {a.llama}",
            "scheduling models: " + ", ".join(
                f"{c} -> {m if m else 'UNKNOWN to this llvm-mca (no numbers)'}" for c, m in models.items()),
            ""]
    text = print_table(head, cores, models, results)
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(text + "\n")


def fmt(v):
    lo, hi = v
    return f"{lo:.2f}" if abs(hi - lo) < 0.005 else f"{lo:.2f}–{hi:.2f}"


def print_table(head, cores, models, results):
    out = list(head)
    out.append("cycles per block = llvm-mca cycles per loop pass / (rows x tokens x blocks per pass): "
               "one 32-weight block of one row against one token. Where a loop has data-dependent "
               "paths, the first number is the one path that normal nonzero f16 scales take, "
               "then the range over the paths.")
    out.append("")
    out.append("| pair | core | ours cyc/block | llama.cpp cyc/block | ratio ours/llama |")
    out.append("|---|---|---|---|---|")

    def cell(r, c):
        if "error" in r:
            return None, "n/a (" + r["error"] + ")"
        cr = r["cores"][c]
        if "error" in cr:
            return None, "n/a (" + cr["error"] + ")"
        if "normal" in cr:  # the path normal scales take, then the range over all paths
            return [cr["normal"]] * 2 + cr["per_block"], f"{cr['normal']:.2f} (paths {fmt(cr['per_block'])})"
        return cr["per_block"], fmt(cr["per_block"])

    for name, ours, theirs in PAIRS:
        for c in cores:
            if models[c] is None:
                out.append(f"| {name} | {c} | n/a (unknown core) | n/a (unknown core) | n/a |")
                continue
            va, sa = cell(results[ours], c)
            vb, sb = cell(results[theirs], c)
            ratio = "n/a"
            if va and vb:
                ratio = fmt([va[0] / vb[1], va[1] / vb[0]])
                if len(va) == 4:
                    ratio += f" (paths {fmt([va[2] / vb[1], va[3] / vb[0]])})"
            out.append(f"| {name} | {c} | {sa} | {sb} | {ratio} |")
    out.append("")
    out.append("What each loop is (divisor = rows x tokens x blocks per pass):")
    out.append("")
    out.append("| kernel | what | function | loop | divisor | insns/pass | cycles/pass (" + ", ".join(cores) + ") |")
    out.append("|---|---|---|---|---|---|---|")
    for kid, k in K.items():
        r = results[kid]
        if "error" in r:
            out.append(f"| {kid} | {k['what']} | | NOT FOUND: {r['error']} | | | |")
            continue
        cyc = ", ".join((f"{v['normal_iter']:.2f} ({fmt(v['iter'])})" if "normal_iter" in v else fmt(v["iter"]))
                        if "iter" in v else "n/a" for v in r["cores"].values())
        loop = f"{r['paths']} path(s)" + (f"; {r['note']}" if r["note"] else "")
        ins = "–".join(str(x) for x in (r["insns"][0], r["insns"][-1])) if len(r["insns"]) > 1 else str(r["insns"][0])
        out.append(f"| {kid} | {k['what']} | `{demangle(r['symbol'])}` | {loop} | "
                   f"{k['rows']}x{k['tokens']}x{r['unroll']} = {r['units']} | {ins} | {cyc} |")
    text = "\n".join(out)
    print(text)
    return text


def demangle(sym):
    m = re.match(r"_ZN(.*)17h[0-9a-f]{16}E(\.llvm\.\d+)?$", sym)
    if not m:
        return sym
    s, parts = m.group(1), []
    while s and s[0].isdigit():
        n = int(re.match(r"\d+", s).group(0))
        s = s[len(str(n)):]
        parts.append(s[:n])
        s = s[n:]
    return "::".join(parts[-2:])


if __name__ == "__main__":
    main()
