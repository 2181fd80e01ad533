# Sourced by the test scripts that run `tinkerbell serve`.
#
# start_serve EXE LOG [SERVE OPTIONS...]: starts `EXE serve --port 0
# --log-level warn OPTIONS...` in the background with its output in LOG,
# waits (up to 20 s) for the line that says where it listens, and sets
# serve_pid and url (empty when it never said).
start_serve() {
  local exe=$1 log=$2
  shift 2
  "$exe" serve --port 0 --log-level warn "$@" >"$log" 2>&1 &
  serve_pid=$!
  url=
  for _ in $(seq 400); do
    url=$(sed -n 's/.*listening on \(https\{0,1\}:[^ ]*\).*/\1/p' "$log")
    [ -n "$url" ] && return 0
    kill -0 "$serve_pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
