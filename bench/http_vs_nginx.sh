#!/usr/bin/env bash
# Requests per second of Tinkerbell's HTTP server against nginx (one worker)
# serving the same fixed response, both measured with wrk over loopback in
# the same run, with each server's CPU time per request (user + system, read
# from /proc).  With --retrieve TINKERBELL_EXE, also `tinkerbell serve`
# answering POST /api/v1/retrieve_future for a finished result, against the
# same nginx baseline and against the Python Tinkerbell server's Flask stack
# (2.1k req/s as measured for the reference, not run here).  Prints the
# figures and ratios, then one machine-readable line.  Needs the Debian
# packages wrk and nginx.
#
# usage: bench/http_vs_nginx.sh BUILD_DIR [SECONDS] [CONNECTIONS] [REPEATS]
#                               [--retrieve TINKERBELL_EXE]
set -euo pipefail

usage="usage: $0 BUILD_DIR [SECONDS] [CONNECTIONS] [REPEATS] [--retrieve TINKERBELL_EXE]"
build=${1:?$usage}
secs=${2:-5}
conns=${3:-50}
repeats=${4:-3}
tinkerbell_exe=
if [ $# -ge 5 ]; then
  [ "$5" = --retrieve ] && [ $# -ge 6 ] || { echo "$usage" >&2; exit 2; }
  tinkerbell_exe=$6
  [ -x "$tinkerbell_exe" ] || { echo "missing $tinkerbell_exe" >&2; exit 2; }
fi
FLASK_RPS=2100
# BUILD_DIR is a build tree, or the directory of the benchmark programs.
server_bin="$build/bench/bench_http_server"
[ -x "$server_bin" ] || server_bin="$build/bench_http_server"
[ -x "$server_bin" ] || { echo "missing $server_bin (build first)" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "nginx is not installed (apt-get install nginx)" >&2; exit 2; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

body='{"status":"ok"}'
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

ng_port=$(free_port)
mkdir -p "$tmp/nginx"
cat >"$tmp/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 100000000;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  server {
    listen 127.0.0.1:$ng_port;
    location / { default_type application/json; return 200 '$body'; }
  }
}
CONF
"$NGINX" -c "$tmp/nginx/nginx.conf" -p "$tmp/nginx" &
pids+=($!)

tb_port=$(free_port)
"$server_bin" --port "$tb_port" --body "$body" &
pids+=($!)

wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
wait_port "$ng_port"
wait_port "$tb_port"

# The nginx worker (the master only forks it) does the serving.
ng_worker=
for _ in $(seq 100); do
  ng_worker=$(pgrep -P "${pids[0]}" | head -1 || true)
  [ -n "$ng_worker" ] && break
  sleep 0.05
done
[ -n "$ng_worker" ] || ng_worker=${pids[0]}

rt_port=; rt_lua=
if [ -n "$tinkerbell_exe" ]; then
  rt_port=$(free_port)
  "$tinkerbell_exe" serve --port "$rt_port" --data-dir "$tmp/serve" --log-level warn >/dev/null &
  pids+=($!)
  wait_port "$rt_port"
  # A finished result to retrieve: a session and a created model.
  url="http://127.0.0.1:$rt_port/api/v1"
  post() { python3 -c 'import sys, urllib.request; r = urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), headers={"Content-Type": "application/json"})); print(r.read().decode())' "$@"; }
  field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$@"; }
  sid=$(field "$(post "$url/create_session" '{"tags":[],"user_metadata":{},"sdk_version":"bench","type":"create_session"}')" session_id)
  rid=$(field "$(post "$url/create_model" "{\"session_id\":\"$sid\",\"model_seq_id\":0,\"base_model\":\"base\",\"lora_config\":{\"rank\":8},\"type\":\"create_model\"}")" request_id)
  for _ in $(seq 100); do
    out=$(post "$url/retrieve_future" "{\"request_id\":\"$rid\"}")
    case "$out" in *model_id*) break ;; esac
    sleep 0.1
  done
  case "$out" in *model_id*) ;; *) echo "retrieve_future never finished: $out" >&2; exit 1 ;; esac
  rt_lua="$tmp/retrieve.lua"
  cat >"$rt_lua" <<LUA
wrk.method = "POST"
wrk.path = "/api/v1/retrieve_future"
wrk.body = '{"request_id":"$rid"}'
wrk.headers["Content-Type"] = "application/json"
LUA
fi

# CPU time (user + system) of a process in microseconds.
cpu_us() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) * 1e6 / hz}' "/proc/$1/stat"; }

# run_wrk PORT PID [LUA]: "<req/s> <cpu us per request>"
run_wrk() {
  local before after out rps total
  before=$(cpu_us "$2")
  if [ -n "${3:-}" ]; then
    out=$(wrk -t1 -c"$conns" -d"${secs}s" -s "$3" "http://127.0.0.1:$1/")
  else
    out=$(wrk -t1 -c"$conns" -d"${secs}s" "http://127.0.0.1:$1/")
  fi
  after=$(cpu_us "$2")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  total=$(echo "$out" | awk '/requests in/ {print $1}')
  if echo "$out" | grep -q 'Non-2xx'; then echo "wrk saw errors on port $1" >&2; exit 1; fi
  awk -v r="$rps" -v n="$total" -v b="$before" -v a="$after" 'BEGIN {printf "%s %.2f\n", r, (a - b) / n}'
}

tb_runs=(); ng_runs=(); rt_runs=(); tb_cpu=(); ng_cpu=(); rt_cpu=()
for i in $(seq "$repeats"); do
  read -r r c < <(run_wrk "$tb_port" "${pids[1]}"); tb_runs+=("$r"); tb_cpu+=("$c")
  read -r r c < <(run_wrk "$ng_port" "$ng_worker"); ng_runs+=("$r"); ng_cpu+=("$c")
  if [ -n "$rt_lua" ]; then
    read -r r c < <(run_wrk "$rt_port" "${pids[2]}" "$rt_lua"); rt_runs+=("$r"); rt_cpu+=("$c")
  fi
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
spread() { printf '%s\n' "$@" | sort -g | awk 'NR==1{lo=$1} {hi=$1} END {printf "%.0f-%.0f", lo, hi}'; }
tb=$(median "${tb_runs[@]}"); ng=$(median "${ng_runs[@]}")
tbc=$(median "${tb_cpu[@]}"); ngc=$(median "${ng_cpu[@]}")
ratio=$(awk -v a="$tb" -v b="$ng" 'BEGIN {printf "%.2f", a / b}')
printf 'http server: tinkerbell %.0f req/s (runs %s, %s us CPU/request), nginx 1 worker %.0f req/s (runs %s, %s us CPU/request), ratio %s (wrk -t1 -c%s, %ss x %s)\n' \
  "$tb" "$(spread "${tb_runs[@]}")" "$tbc" "$ng" "$(spread "${ng_runs[@]}")" "$ngc" "$ratio" "$conns" "$secs" "$repeats"
line="BENCH http_rps tinkerbell=$(printf %.0f "$tb") nginx=$(printf %.0f "$ng") ratio=$ratio cpu_us=$tbc nginx_cpu_us=$ngc"
if [ -n "$rt_lua" ]; then
  rt=$(median "${rt_runs[@]}"); rtc=$(median "${rt_cpu[@]}")
  rt_ratio=$(awk -v a="$rt" -v b="$ng" 'BEGIN {printf "%.2f", a / b}')
  flask_ratio=$(awk -v a="$rt" -v b="$FLASK_RPS" 'BEGIN {printf "%.0f", a / b}')
  printf 'retrieve_future of a finished result: tinkerbell serve %.0f req/s (runs %s, %s us CPU/request), %s of nginx, %sx the Flask server (%s req/s)\n' \
    "$rt" "$(spread "${rt_runs[@]}")" "$rtc" "$rt_ratio" "$flask_ratio" "$FLASK_RPS"
  line="$line retrieve=$(printf %.0f "$rt") retrieve_ratio=$rt_ratio retrieve_cpu_us=$rtc flask=$FLASK_RPS flask_ratio=$flask_ratio"
fi
echo "$line"
