#!/usr/bin/env bash
# `tinkerbell train` and `tinkerbell sample` as a user runs them: the Quick
# start's command on a shortened dataset (the loss falls, metrics.jsonl,
# loss.svg, the sampler weights and their PEFT export are written), sampling
# from those weights, training against a running `tinkerbell serve` with
# --base-url, Ctrl-C, and bad data stopping the run before anything trains.
# usage: cli_train.sh TINKERBELL_EXE DATA.jsonl
. "$(dirname "$0")/serve_lib.sh"
exe=${1:?usage: $0 TINKERBELL_EXE DATA.jsonl}
data=${2:?usage: $0 TINKERBELL_EXE DATA.jsonl}
tmp=$(mktemp -d /tmp/tb-cli-train-XXXXXX)
serve_pid=
cleanup() { [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
pass=0 fail=0
check() {  # check NAME STATUS
  if [ "$2" = 0 ]; then pass=$((pass + 1)); echo "ok - $1"; else fail=$((fail + 1)); echo "not ok - $1"; fi
}
# first_last FILE: the first and the last step loss of a metrics.jsonl
first_last() {
  python3 - "$1" <<'PY'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
print(steps[0]["loss"], steps[-1]["loss"], len(steps))
PY
}

head -n 64 "$data" >"$tmp/short.jsonl"
cd "$tmp" || exit 1

# --- the embedded server (the Quick start) ---
out=$("$exe" train short.jsonl --epochs 4 --data-dir "$tmp/data" 2>&1)
status=$?
echo "$out" | tail -12
[ $status = 0 ]
check "train on the embedded server exits 0" $?
model_dir=$(ls -d "$tmp"/data/sess-*:train:0 2>/dev/null | head -1)
[ -n "$model_dir" ] && [ -s "$model_dir/metrics.jsonl" ] && [ -s "$model_dir/loss.svg" ]
check "metrics.jsonl and loss.svg beside the checkpoints" $?
read -r first last n < <(first_last "$model_dir/metrics.jsonl" 2>/dev/null)
echo "loss $first -> $last over $n steps"
python3 -c "import sys; sys.exit(0 if float('$last') < float('$first') / 2 else 1)" 2>/dev/null
check "the loss falls (below half its start)" $?
grep -q '^<svg ' "$model_dir/loss.svg" && grep -q 'polyline' "$model_dir/loss.svg"
check "loss.svg is a chart" $?
sampler=$(echo "$out" | sed -n 's/^sampler weights: //p')
peft=$(echo "$out" | sed -n 's/^PEFT export: \([^ ]*\).*/\1/p')
[ -n "$sampler" ] && [ -s "$peft" ] && [ -s "$(dirname "$peft")/adapter_config.json" ]
check "the sampler weights and their PEFT export exist" $?
echo "$out" | grep -q '^before: ' && echo "$out" | grep -q '^after: '
check "a reply sampled before and after training" $?

# --- tinkerbell sample from those weights, on a new embedded server ---
one=$("$exe" sample --data-dir "$tmp/data" --model-path "$sampler" --temperature 0 "Who are you?" 2>&1)
status=$?
two=$("$exe" sample --data-dir "$tmp/data" --model-path "$sampler" --temperature 0 "Who are you?" 2>&1)
[ $status = 0 ] && [ -n "$one" ] && [ "$one" = "$two" ]
check "sample from the trained weights (greedy twice, the same text)" $?
start=$(date +%s%N)
out=$("$exe" sample --data-dir "$tmp/data" --num-samples 2 --seed 7 --max-tokens 8 "Hello" 2>&1)
status=$?
ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ $status = 0 ] && [ "$(echo "$out" | grep -c '^--- sample')" = 2 ]
check "sample from the base model, two samples" $?
# Closing the clients does not wait for an idle timer (it took 5 s).
echo "sample took $ms ms"
[ $ms -lt 3000 ]
check "sample exits once it has its reply" $?
out=$("$exe" sample --data-dir "$tmp/data" --model-path "tinker://nobody:train:0/sampler_weights/x" "hi" 2>&1)
[ $? = 1 ] && echo "$out" | grep -q "no such checkpoint"
check "sample from missing weights fails with the server's reason" $?
"$exe" sample --data-dir "$tmp/data" >/dev/null 2>&1
[ $? = 2 ]
check "sample without a prompt is a usage error" $?

# --- against a running server, with --base-url ---
start_serve "$exe" "$tmp/serve.out" --data-dir "$tmp/served"
out=$("$exe" train short.jsonl --epochs 1 --base-url "$url" --out "$tmp/remote" 2>&1)
status=$?
[ $status = 0 ] && [ -s "$tmp/remote/metrics.jsonl" ] && echo "$out" | grep -q "^sampler weights: tinker://"
check "train with --base-url against tinkerbell serve" $?
[ $status = 0 ] || echo "$out" | tail -20
kill "$serve_pid"; wait "$serve_pid" 2>/dev/null; serve_pid=

# --- over HTTPS: serve with a certificate, train verifying it with --ca-file ---
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=tinkerbell -addext subjectAltName=IP:127.0.0.1 \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" >/dev/null 2>&1
start_serve "$exe" "$tmp/tls.out" --data-dir "$tmp/tls" --tls-cert "$tmp/cert.pem" \
  --tls-key "$tmp/key.pem"
out=$("$exe" train short.jsonl --epochs 1 --base-url "$url" --ca-file "$tmp/cert.pem" --out "$tmp/tls-out" 2>&1)
status=$?
[ $status = 0 ] && echo "$out" | grep -q "^sampler weights: tinker://"
check "train over HTTPS, verified with --ca-file" $?
[ $status = 0 ] || echo "$out" | tail -10
out=$("$exe" sample --base-url "$url" --max-tokens 4 "hi" 2>&1)
[ $? = 1 ] && echo "$out" | grep -qi "TLS\|certificate"
check "without --ca-file the self-signed certificate is refused" $?
kill "$serve_pid"; wait "$serve_pid" 2>/dev/null; serve_pid=

# --- Ctrl-C: the step under way finishes, a checkpoint is saved, status 130 ---
"$exe" train short.jsonl --epochs 1000 --data-dir "$tmp/int" --out "$tmp/int-out" >"$tmp/int.log" 2>&1 &
train_pid=$!
for _ in $(seq 600); do
  [ "$(grep -c '"loss"' "$tmp/int-out/metrics.jsonl" 2>/dev/null)" -ge 2 ] && break
  sleep 0.1
done
kill -INT "$train_pid"
wait "$train_pid"
status=$?
[ $status = 130 ] && grep -q 'weights/interrupted-step-[1-9]' "$tmp/int.log" && [ -s "$tmp/int-out/loss.svg" ]
check "Ctrl-C saves a checkpoint and exits with 130" $?
[ $status = 130 ] || tail -20 "$tmp/int.log"

# --- bad input ---
{ head -n 2 "$data"; echo '{"messages": [{"role": "robot", "content": "x"}]}'; } >bad.jsonl
out=$("$exe" train bad.jsonl --data-dir "$tmp/bad-data" 2>&1)
status=$?
[ $status = 2 ] && echo "$out" | grep -q 'bad.jsonl:3: messages\[0\].role' && [ ! -e "$tmp/bad-data" ]
check "a bad line stops the run before training, naming its line" $?
"$exe" train >/dev/null 2>&1
[ $? = 2 ]
check "no data file is a usage error" $?
"$exe" train --help | grep -q -- '--learning-rate'
check "--help lists the options" $?

echo "$pass passed, $fail failed"
[ $fail = 0 ]
