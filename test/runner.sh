#!/usr/bin/env bash
# The test runner's verdicts: a skipped test is printed and counted as
# skipped, never as passed, and a failure still fails the executable.
# usage: runner.sh RUNNER_SELFTEST_EXE
exe=${1:?usage: $0 RUNNER_SELFTEST_EXE}
pass=0 fail=0
check() {  # check NAME COMMAND...
  if "${@:2}"; then pass=$((pass + 1)); echo "ok - $1"
  else fail=$((fail + 1)); echo "not ok - $1"; fi
}
out=$("$exe" 2>&1); status=$?
check "exit status 0 with a skip" [ $status = 0 ]
check "skip line" grep -qx 'skip 2 - skips ([0-9]* ms)' <<<"$out"
check "reason printed" grep -qx '# skipped: nothing to run on here' <<<"$out"
check "skips counted apart" grep -qx '1 skipped' <<<"$out"
check "summary" grep -qx '2 passed, 0 failed' <<<"$out"
out=$(TB_SELFTEST_FAIL=1 "$exe" 2>&1); status=$?
check "a failure fails" [ $status = 1 ]
check "failure summary" grep -qx '1 passed, 1 failed' <<<"$out"
out=$("$exe" skips 2>&1); status=$?
check "one skipped test in-process exits 77" [ $status = 77 ]
echo "$pass passed, $fail failed"
[ $fail = 0 ]
