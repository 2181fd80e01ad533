#!/usr/bin/env bash
# `tinkerbell bench`: the list, a bad selection, and quick runs of the
# base-model training benchmark and of sampling through the server that
# end in the table.
# usage: cli_bench.sh TINKERBELL_EXE
exe=${1:?usage: $0 TINKERBELL_EXE}
pass=0 fail=0
check() {  # check NAME COMMAND-STATUS-OK
  if [ "$2" = 0 ]; then pass=$((pass + 1)); echo "ok - $1"; else fail=$((fail + 1)); echo "not ok - $1"; fi
}

out=$("$exe" bench --list)
echo "$out" | grep -q '^train-base ' && echo "$out" | grep -q '^http ' && echo "$out" | grep -q '^sample '
check "list names the benchmarks" $?

"$exe" bench --only nope >/dev/null 2>/tmp/tb-cli-bench-err.$$
[ $? = 2 ] && grep -q "unknown benchmark 'nope'" /tmp/tb-cli-bench-err.$$
check "an unknown benchmark is a usage error" $?
rm -f /tmp/tb-cli-bench-err.$$

out=$("$exe" bench --quick --only train-base 2>&1)
status=$?
[ $status = 0 ] && echo "$out" | grep -qE '^training step, base model +\| [0-9.]+ ms/step'
check "a quick run prints its row of the table" $?
[ $status = 0 ] || echo "$out" | tail -20

out=$("$exe" bench --quick --only serve-sample,serve-client 2>&1)
status=$?
[ $status = 0 ] && echo "$out" | grep -qE '^64 sample requests at once through the server +\| [0-9.]+ tokens/s' &&
  echo "$out" | grep -qE '^client loop, 400 sample requests in flight +\| [0-9.]+ us CPU/request'
check "a quick run through the server prints its rows" $?
[ $status = 0 ] || echo "$out" | tail -20

echo "$pass passed, $fail failed"
[ $fail = 0 ]
