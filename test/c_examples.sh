#!/usr/bin/env bash
# The C examples (examples/c/) against `tinkerbell serve` on a free port:
# each must exit 0 and print what its guide example prints.
# The README's C program is examples/c/readme.c, checked word for word.
# usage: c_examples.sh TINKERBELL_EXE EXAMPLES_DIR SOURCE_ROOT
exe=${1:?usage: $0 TINKERBELL_EXE EXAMPLES_DIR SOURCE_ROOT}
dir=${2:?usage: $0 TINKERBELL_EXE EXAMPLES_DIR SOURCE_ROOT}
src=${3:?usage: $0 TINKERBELL_EXE EXAMPLES_DIR SOURCE_ROOT}
tmp=$(mktemp -d /tmp/tb-c-examples-XXXXXX)
. "$(dirname "$0")/serve_lib.sh"
start_serve "$exe" "$tmp/serve.out" --data-dir "$tmp/data"
trap 'kill $serve_pid 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
[ -n "$url" ] || { cat "$tmp/serve.out"; echo "0 passed, 1 failed"; exit 1; }
pass=0 fail=0
run() {  # run NAME EXPECTED-LINE
  out=$("$dir/$1" "$url" 2>&1)
  status=$?
  if [ $status = 0 ] && echo "$out" | grep -q "$2"; then
    pass=$((pass + 1)); echo "ok - $1"
  else
    fail=$((fail + 1)); echo "not ok - $1 (status $status)"; echo "$out" | tail -15
  fi
}
run sync_training '^Done!$'
run async_training '^Done!$'
run multi_user '^All users trained!$'
run parallel_create '^Done!$'
out=$(TINKER_BASE_URL=$url "$dir/readme" 2>&1)
if [ $? = 0 ] && echo "$out" | grep -q '^step 5: loss:sum'; then
  pass=$((pass + 1)); echo "ok - readme"
else
  fail=$((fail + 1)); echo "not ok - readme"; echo "$out" | tail -10
fi
if python3 - "$src/README.md" "$src/examples/c/readme.c" <<'PY'
import sys
readme = open(sys.argv[1]).read()
start = readme.index("```c\n") + 5
block = readme[start:readme.index("```", start)]
sys.exit(0 if block == open(sys.argv[2]).read() else 1)
PY
then
  pass=$((pass + 1)); echo "ok - the README's program is examples/c/readme.c"
else
  fail=$((fail + 1)); echo "not ok - the README's program differs from examples/c/readme.c"
fi
echo "$pass passed, $fail failed"
[ $fail = 0 ]
