#!/usr/bin/env bash
# Requests per second of Tinkerbell's HTTP server against nginx (one worker)
# serving the same fixed response, both measured with wrk over loopback in
# the same run.  Prints both figures and the ratio, then one machine-readable
# line.  Needs the Debian packages wrk and nginx.
#
# usage: bench/http_vs_nginx.sh BUILD_DIR [SECONDS] [CONNECTIONS] [REPEATS]
set -euo pipefail

build=${1:?usage: $0 BUILD_DIR [SECONDS] [CONNECTIONS] [REPEATS]}
secs=${2:-5}
conns=${3:-50}
repeats=${4:-3}
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

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
wait_port "$ng_port"
wait_port "$tb_port"

rps() { wrk -t1 -c"$conns" -d"${secs}s" "http://127.0.0.1:$1/" | awk '/Requests\/sec/ {print $2}'; }

tb_runs=(); ng_runs=()
for i in $(seq "$repeats"); do
  tb_runs+=("$(rps "$tb_port")")
  ng_runs+=("$(rps "$ng_port")")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
spread() { printf '%s\n' "$@" | sort -g | awk 'NR==1{lo=$1} {hi=$1} END {printf "%.0f-%.0f", lo, hi}'; }
tb=$(median "${tb_runs[@]}"); ng=$(median "${ng_runs[@]}")
ratio=$(awk -v a="$tb" -v b="$ng" 'BEGIN {printf "%.2f", a / b}')
printf 'http server: tinkerbell %.0f req/s (runs %s), nginx 1 worker %.0f req/s (runs %s), ratio %s (wrk -t1 -c%s, %ss x %s)\n' \
  "$tb" "$(spread "${tb_runs[@]}")" "$ng" "$(spread "${ng_runs[@]}")" "$ratio" "$conns" "$secs" "$repeats"
printf 'BENCH http_rps tinkerbell=%.0f nginx=%.0f ratio=%s\n' "$tb" "$ng" "$ratio"
