#!/usr/bin/env bash
# The whole H200 check of a merged tree, for the `device` tool (run from the repo root
# there): conformance, hybrid, kv_evict, `harness oracle --backend opencl`, then decode
# and prefill figures side by side with llama.cpp CUDA, built there in the background
# from the llama-cpp-python sdist's vendor/llama.cpp while the tests run.
#
# Prepare here (x86-64, then carry ["gpu-bin", "llama-src"]):
#   cargo build --release -p harness
#   cargo test --release -p antigravity-core --features opencl --test conformance --test hybrid --test kv_evict --no-run
#   mkdir -p gpu-bin && cp target/release/harness gpu-bin/ && cp the three test executables
#     to gpu-bin/{conformance,hybrid,kv_evict} && strip gpu-bin/*
#   (cd .../vendor/llama.cpp && tar --exclude=ggml/src/ggml-{vulkan,sycl,hexagon,metal,opencl,et} \
#     --exclude=tools/{server,ui} -cJf $REPO/llama-src/llama.tar.xz CMakeLists.txt cmake ggml src \
#     include common tools vendor licenses LICENSE)     # ~4 MB; llama-src/ in .git/info/exclude
#   Optional in gpu-bin/: harness-prev (an earlier harness, raced at 2 000 tokens) and
#   opencl_profiles (`cargo bench … --features opencl --bench opencl_profiles --no-run`:
#   the block kernel's stage timers in the q40 step).
# Run:  bash scripts/h200-final.sh tests [pp] race q40 [ab] [grid]     (results: $OUT/results.tgz)
#   (GPU_BIN: another folder of binaries than gpu-bin/; pp: the 1B prefill profile under
#   each of PP_VARIANTS)
#   (CONF_FILTER: a test-name filter for the conformance binary, e.g. block_kernel)
#   (steps run in the order tests, ab, pp, race, q40, grid; RACE_ROUNDS, RACE_MODELS,
#   D2000_MODELS and RACE_KV_TYPES trim the race to fit one call; RACE_VARIANTS: settings
#   ours runs under, as AB's; KEEP_LLAMA=1 keeps llama-bench in $OUT/llama-bin.tgz — but
#   with CUDA's libraries that is 33.6 MB, which the device tool did not bring back on
#   2026-12-05: so far every race builds llama.cpp, ~140 s)
set -u
G=${GPU_BIN:-$PWD/gpu-bin}
mkdir -p /etc/OpenCL/vendors && echo libnvidia-opencl.so.1 > /etc/OpenCL/vendors/nvidia.icd
export ANTIGRAVITY_OPENCL_REQUIRED=1 ANTIGRAVITY_OPENCL_DEVICE=nvidia ANTIGRAVITY_HOME=/tmp/aghome
mkdir -p /work /tmp/aghome && [ -e /work/main ] || ln -s "$PWD" /work/main
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > $OUT/gpu.txt 2>&1
STEPS=" $* "
t0=$(date +%s)
log() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a $OUT/steps.txt; }
if [[ $STEPS == *" race "* ]] && [ -f llama-bin/llama-bin.tgz ]; then
  # llama-bench kept by an earlier call (KEEP_LLAMA=1), carried as llama-bin/
  mkdir -p /tmp/ls/b && tar xzf llama-bin/llama-bin.tgz -C /tmp/ls/b && echo prebuilt > /tmp/ls/DONE
elif [[ $STEPS == *" race "* ]] && [ -f llama-src/llama.tar.xz ]; then
  ( mkdir -p /tmp/ls && tar xJf llama-src/llama.tar.xz -C /tmp/ls && cd /tmp/ls &&
    cmake -S . -B b -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_FA=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
      -DGGML_NATIVE=OFF -DCMAKE_BUILD_TYPE=Release > $OUT/llama-cmake.log 2>&1 &&
    nice cmake --build b --target llama-bench -j 15 > $OUT/llama-build.log 2>&1; echo $? > /tmp/ls/DONE ) &
fi
log "models"
for m in "smollm2-135m q4_0 smol-q4_0" "smollm2-135m q4_1 smol-q4_1" "smollm2-135m q4_k_m smol-q4_k_m" \
         "llama3.2-1b q4_0 l1b-q4_0" "llama3.2-1b q4_k_m l1b-q4_k_m"; do
  set -- $m; $G/harness synth --shape $1 --type $2 --out /tmp/$3.gguf > /dev/null 2>&1 || log "synth $3 failed"
done
if [[ $STEPS == *" tests "* ]]; then
  log "conformance"; timeout ${CONF_TIMEOUT:-300} $G/conformance ${CONF_FILTER:-} --test-threads 2 > $OUT/conformance.log 2>&1; log "rc $?"; grep "test result" $OUT/conformance.log | tee -a $OUT/steps.txt
  for t in hybrid kv_evict opencl_model_copies; do [ -x $G/$t ] || continue; log "$t"; timeout 120 $G/$t --test-threads 2 > $OUT/$t.log 2>&1; log "rc $?"; grep "test result" $OUT/$t.log | tee -a $OUT/steps.txt; done
  log "oracle"; $G/harness oracle --backend opencl > $OUT/oracle.log 2>&1; log "rc $?"; tail -3 $OUT/oracle.log | tee -a $OUT/steps.txt
fi
if [[ $STEPS == *" ab "* ]]; then
  # A/B of builds and settings, interleaved: AB is a list of `VAR=value` settings for
  # gpu-bin/harness (several joined by `+`), or PREV for gpu-bin/harness-prev (e.g. AB="PREV ANTIGRAVITY_OPENCL_BLOCK_WIDE=0
  # X=1"; `~` stands for a space inside a value, e.g.
  # ANTIGRAVITY_OPENCL_BLOCK_DEFINES=-DAG_Q4B~-DBUNR=4); each runs pp512 (a 512-token prompt), 256 tokens after 3 and 128 after 2 000;
  # then, for gpu-bin/harness's settings, the 1B decode stage profile at PROFILE_CONTEXTS.
  log "ab"; ids512=$(seq -s, 1 512); ids2000=$(seq -s, 1 2000)
  for r in 1 2; do for v in ${AB:-X=1}; do for m in ${AB_MODELS:-l1b-q4_0 smol-q4_0}; do
    H=$G/harness; IFS=+ read -ra e <<< "$v"; e=("${e[@]//\~/ }"); [ "$v" = PREV ] && { H=$G/harness-prev; e=(X=1); }; [ -x $H ] || continue
    row() { sed "s/^/{\"who\":\"$1 $v\",\"m\":\"$m\",\"r\":$r,\"row\":/; s/\$/}/" >> $OUT/ab.jsonl; }
    env "${e[@]}" $H generate --backend opencl --model /tmp/$m.gguf --prompt-ids $ids512 --max-tokens 1 --ctx 514 --json 2>/dev/null | tail -1 | row ab-pp512
    env "${e[@]}" $H generate --backend opencl --model /tmp/$m.gguf --prompt-ids 1,2,3 --max-tokens 256 --ignore-eos --json 2>/dev/null | tail -1 | row ab-tg
    env "${e[@]}" $H generate --backend opencl --model /tmp/$m.gguf --prompt-ids $ids2000 --max-tokens 128 --ignore-eos --ctx 2200 --json 2>/dev/null | tail -1 | row ab-d2000
  done; done; done
  [ -x $G/opencl_profiles ] && for v in ${AB:-X=1}; do [ "$v" = PREV ] && continue; for n in ${PROFILE_CONTEXTS:-34 2000}; do
    IFS=+ read -ra e <<< "$v"; e=("${e[@]//\~/ }")
    env "${e[@]}" ANTIGRAVITY_PROFILE_SHAPE=llama3.2-1b ANTIGRAVITY_PROFILE_CONTEXT=$n ANTIGRAVITY_PROFILE_MODES=pipelined \
      timeout 120 $G/opencl_profiles decode_profile > "$OUT/profile-1b-c$n-${v//[^A-Za-z0-9]/_}.txt" 2>&1
  done; done
  log "ab done"
fi
if [[ $STEPS == *" pp "* ]] && [ -x $G/opencl_profiles ]; then
  # The 1B shape's 512-token prefill, per kernel (opencl_profiles prefill_profile), under
  # each of PP_VARIANTS (settings as AB's), while llama.cpp builds.
  log "prefill profiles"
  for v in ${PP_VARIANTS:-X=1}; do
    IFS=+ read -ra e <<< "$v"; e=("${e[@]//\~/ }")
    env "${e[@]}" ANTIGRAVITY_PROFILE_SHAPE=llama3.2-1b timeout 120 $G/opencl_profiles prefill_profile \
      > "$OUT/pp-1b-${v//[^A-Za-z0-9]/_}.txt" 2>&1
    grep "prefill 512 tok" "$OUT/pp-1b-${v//[^A-Za-z0-9]/_}.txt" | sed "s/^/$v: /" | tee -a $OUT/steps.txt
  done
fi
if [[ $STEPS == *" race "* ]]; then
  log "waiting for llama.cpp"; while [ ! -f /tmp/ls/DONE ] && [ $(( $(date +%s) - t0 )) -lt 380 ]; do sleep 5; done
  LB=/tmp/ls/b/bin/llama-bench; [ -x $LB ] || log "no llama-bench ($(cat /tmp/ls/DONE 2>/dev/null))"
  ids512=$(seq -s, 1 512); ids2000=$(seq -s, 1 2000)
  # ours under each of RACE_VARIANTS (settings as AB's; default: as built), right after
  # llama.cpp's run of the same model
  ours() { local who=$1 v; shift; for v in ${RACE_VARIANTS:-X=1}; do
    IFS=+ read -ra e <<< "$v"; e=("${e[@]//\~/ }")
    env "${e[@]}" $G/harness generate --backend opencl --model $M "$@" --json 2>/dev/null | tail -1 |
      sed "s/^/{\"who\":\"$who\",\"v\":\"$v\",\"m\":\"$m\",\"r\":${r:-0},\"row\":/; s/\$/}/" >> $OUT/race.jsonl
  done; }
  for r in $(seq 1 ${RACE_ROUNDS:-2}); do for m in ${RACE_MODELS:-smol-q4_0 smol-q4_1 smol-q4_k_m l1b-q4_0 l1b-q4_k_m}; do
    M=/tmp/$m.gguf
    [ -x $LB ] && $LB -m $M -ngl 99 -fa 0 -p 512 -n 128 -r 3 -o jsonl 2>/dev/null | sed "s/^/{\"who\":\"llama\",\"m\":\"$m\",\"r\":$r,\"row\":/; s/\$/}/" >> $OUT/race.jsonl
    ours ours-pp512 --prompt-ids $ids512 --max-tokens 1 --ctx 514
    ours ours-tg --prompt-ids 1,2,3 --max-tokens 256 --ignore-eos
  done; done
  r=0
  for m in ${D2000_MODELS:-smol-q4_0 l1b-q4_0 l1b-q4_k_m}; do
    M=/tmp/$m.gguf
    [ -x $LB ] && $LB -m $M -ngl 99 -fa 0 -d 2000 -p 0 -n 128 -r 2 -o jsonl 2>/dev/null | sed "s/^/{\"who\":\"llama-d2000\",\"m\":\"$m\",\"row\":/; s/\$/}/" >> $OUT/race.jsonl
    ours ours-d2000 --prompt-ids $ids2000 --max-tokens 128 --ignore-eos --ctx 2200
  done
  [ -x $G/harness-prev ] && for m in l1b-q4_0 smol-q4_0; do
    $G/harness-prev generate --backend opencl --model /tmp/$m.gguf --prompt-ids $ids2000 --max-tokens 128 --ignore-eos --ctx 2200 --json 2>/dev/null | tail -1 | sed "s/^/{\"who\":\"prev-d2000\",\"m\":\"$m\",\"row\":/; s/\$/}/" >> $OUT/race.jsonl
  done
  m=l1b-q4_0; M=/tmp/$m.gguf
  for kt in ${RACE_KV_TYPES-f16 q8_0}; do ours ours-d2000-$kt --prompt-ids $ids2000 --max-tokens 128 --ignore-eos --ctx 2200 --kv-type $kt; done
  # llama-bench and its libraries, to carry into a later call (saves the build)
  [ -n "${KEEP_LLAMA:-}" ] && [ -x $LB ] && tar czf $OUT/llama-bin.tgz -C /tmp/ls/b bin/llama-bench $(cd /tmp/ls/b && find . -name "*.so*" | sed 's|^\./||')
  log "race done"
fi
if [[ $STEPS == *" q40 "* ]]; then
  # block.cl builds by weight type (ANTIGRAVITY_OPENCL_BLOCK_CORE=0: the full build for
  # every model, as before) and the K-quant arms out of line; short and long contexts.
  log "block.cl variants"
  for r in $(seq 1 ${VROUNDS:-2}); do for v in "" "ANTIGRAVITY_OPENCL_BLOCK_CORE=0" "ANTIGRAVITY_OPENCL_BLOCK_DEFINES=-DAG_KQ_NOINLINE"; do
    for m in l1b-q4_0 l1b-q4_k_m; do
      env $v $G/harness generate --backend opencl --model /tmp/$m.gguf --prompt-ids 1,2,3 --max-tokens 256 --ignore-eos --json 2>/dev/null | tail -1 | sed "s/^/{\"who\":\"variant $v\",\"m\":\"$m\",\"r\":$r,\"row\":/; s/\$/}/" >> $OUT/variants.jsonl
    done; done; done
  ids2000=$(seq -s, 1 2000)
  for ch in ${CHS:-32 64 128}; do
    ANTIGRAVITY_OPENCL_BLOCK_CH=$ch $G/harness generate --backend opencl --model /tmp/l1b-q4_0.gguf --prompt-ids $ids2000 --max-tokens 128 --ignore-eos --ctx 2200 --json 2>/dev/null | tail -1 | sed "s/^/{\"who\":\"ch$ch-d2000\",\"m\":\"l1b-q4_0\",\"row\":/; s/\$/}/" >> $OUT/variants.jsonl
  done
  # the block kernel's stage timers at 2 000 tokens of context (gpu-bin/opencl_profiles:
  # `cargo bench -p antigravity-core --features opencl --bench opencl_profiles --no-run`)
  [ -x $G/opencl_profiles ] && for n in ${PROFILE_CONTEXTS:-34 2000}; do
    ANTIGRAVITY_PROFILE_SHAPE=llama3.2-1b ANTIGRAVITY_PROFILE_CONTEXT=$n ANTIGRAVITY_PROFILE_MODES=pipelined \
      timeout 120 $G/opencl_profiles decode_profile > $OUT/profile-1b-c$n.txt 2>&1
  done
fi
if [[ $STEPS == *" grid "* ]]; then
  log "grid"; REPS=${REPS:-3} START=1 CROSSOVER=1 bash scripts/hybrid-grid.sh $G/harness /tmp/smol-q4_0.gguf $OUT/grid > $OUT/grid.log 2>&1; log "grid done"
fi
log "end"
# One archive: the device tool brings back only so many files.
( cd $OUT && tar czf /tmp/results.tgz --exclude=./llama-bin.tgz . && find . -mindepth 1 -maxdepth 1 ! -name llama-bin.tgz -exec rm -rf {} + && mv /tmp/results.tgz . )
