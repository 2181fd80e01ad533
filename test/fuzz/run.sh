#!/usr/bin/env bash
# Runs one libFuzzer target for a while and says what it did:
#
#   test/fuzz/run.sh TARGET SECONDS [BUILD_DIR]
#
# TARGET is a name of test/fuzz/meson.build (http, wire, safetensors,
# config, chat, tokenizer), BUILD_DIR a build configured with -Dfuzz=enabled
# (default build-fuzz).  The seed corpus of the tree (test/fuzz/corpus/
# TARGET) is read, never written: what the run finds goes to a working
# corpus in WORK_DIR (default a fresh temporary directory, removed after
# a clean run).  A crash, leak, timeout or out-of-memory input is saved
# there as crash-*, leak-*, timeout-* or oom-*; the last line says
# "TARGET: ok" or "TARGET: FINDING <file>" and the exit status is 0 or 1.
#
# The tokenizer target fuzzes the real Qwen3 and Llama 3 tokenizers of
# the text tests when TB_NPM_CACHE (or the source tree's build/npm-cache)
# holds them, else the small one in test/fuzz/corpus/tokenizer-files/.
#
# Limits: 10 s per input, 2 GiB of memory, and no single allocation above
# 256 MiB: the inputs are small, so a larger allocation is a size taken
# from the input and not checked against it.  Extra libFuzzer flags go in
# FUZZ_FLAGS.
set -uo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 TARGET SECONDS [BUILD_DIR]" >&2
  exit 2
fi
target=$1
seconds=$2
src=$(cd "$(dirname "$0")" && pwd)
build=${3:-$src/../../build-fuzz}
exe=$build/test/fuzz/fuzz_$target
if [ ! -x "$exe" ]; then
  echo "$0: no $exe: configure with -Dfuzz=enabled and run ninja -C $build fuzz" >&2
  exit 2
fi

keep=${WORK_DIR:+1}
work=${WORK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/tb-fuzz-$target.XXXXXX")}
mkdir -p "$work/corpus"
log=$work/fuzz.log
dict=()
[ -f "$src/$target.dict" ] && dict=(-dict="$src/$target.dict")

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# shellcheck disable=SC2086
"$exe" "$work/corpus" "$src/corpus/$target" "${dict[@]}" \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256 \
  -print_final_stats=1 -artifact_prefix="$work/" ${FUZZ_FLAGS:-} >"$log" 2>&1
rc=$?

# The last status line of libFuzzer: "#N DONE cov: C ft: F corp: K/SIZE ...".
last=$(grep -aE '^#[0-9]+' "$log" | tail -1)
execs=$(grep -aE '^stat::number_of_executed_units' "$log" | awk '{print $2}')
rate=$(grep -aE '^stat::average_exec_per_sec' "$log" | awk '{print $2}')
cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
corp=$(sed -nE 's/.* corp: ([0-9]+\/[0-9a-zA-Z]+).*/\1/p' <<<"$last")
echo "$target: ${execs:-?} execs in ${seconds} s, ${rate:-?} exec/s, cov: ${cov:-?} ft: ${ft:-?}, corpus ${corp:-?} (inputs/bytes)"

finding=$(find "$work" -maxdepth 1 \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
                                     -o -name 'oom-*' -o -name 'slow-unit-*' \) -print -quit)
if [ $rc -ne 0 ] || [ -n "$finding" ]; then
  grep -aE 'ERROR|SUMMARY|runtime error|fuzz property|#[0-9]+ 0x' "$log" | head -40
  echo "log: $log"
  echo "$target: FINDING ${finding:-"(libFuzzer exit status $rc)"}"
  exit 1
fi
[ -z "$keep" ] && rm -rf "$work"
echo "$target: ok"
