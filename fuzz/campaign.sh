#!/usr/bin/env bash
# Runs every fuzz target at once with libFuzzer's fork mode, each target on its share of
# the machine's cores, for SECONDS seconds; keeps going after a crash (the reproducer is
# written to WORK/<target>/artifacts/) and records, per target, libFuzzer's log and the
# CPU time its processes used (`times` of the subshell that waited for them).
#
#   fuzz/campaign.sh BIN_DIR WORK_DIR SECONDS [JOBS_PER_TARGET]
#
# BIN_DIR holds the fuzz binaries (`cargo +nightly fuzz build -O`, in
# fuzz/target/x86_64-unknown-linux-gnu/release/); WORK_DIR/<target>/corpus starts from
# fuzz/seeds/<target> (plus fuzz/corpus/<target>) the first time and grows in place, so
# a second run continues the first. This is how the campaigns in docs/testing.md ran.
set -u
bin=$1 work=$2 secs=$3
targets="gguf hf_dir gguf_vocab tokenizer_json chat_template sampling"
n_targets=6
jobs=${4:-$(( ($(nproc) + n_targets - 1) / n_targets ))}
here=$(cd "$(dirname "$0")" && pwd)
declare -A max_len=([gguf]=32768 [hf_dir]=32768 [gguf_vocab]=4096 [tokenizer_json]=8192 [chat_template]=4096 [sampling]=4096)
for t in $targets; do
  mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
  if [ -z "$(ls -A "$work/$t/corpus")" ]; then
    cp "$here/seeds/$t/"* "$work/$t/corpus/"
    [ -d "$here/corpus/$t" ] && cp "$here/corpus/$t/"* "$work/$t/corpus/" 2>/dev/null
  fi
  (
    cd "$work/$t" || exit 1
    "$bin/$t" -fork="$jobs" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
      -max_total_time="$secs" -timeout=20 -rss_limit_mb=4096 -malloc_limit_mb=2048 \
      -max_len="${max_len[$t]}" -artifact_prefix="$work/$t/artifacts/" -print_final_stats=1 \
      corpus >"$work/$t/log.$(date +%s)" 2>&1
    echo "cpu_times $t (user sys of the fuzzer, then of its children):"
    times
  ) >"$work/$t/times.$(date +%s)" 2>&1 &
done
wait
for t in $targets; do
  echo "== $t: $(ls "$work/$t/corpus" | wc -l) corpus files, $(ls "$work/$t/artifacts" | wc -l) artifacts"
  tail -n 3 "$(ls -t "$work/$t"/log.* | head -1)"
  cat "$(ls -t "$work/$t"/times.* | head -1)"
done
