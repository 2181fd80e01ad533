#!/usr/bin/env bash
# The layers of docs/ARCHITECTURE.md as the build enforces them: each layer
# is compiled against its include view (a directory of links to the
# folders it may include, see the top meson.build).  A header the layer
# may use is found there; one against the direction is not, so such an
# include fails to compile.
# usage: layers.sh CC VIEWS_DIR INCLUDE_DIR
cc=${1:?usage: $0 CC VIEWS_DIR INCLUDE_DIR}
views=${2:?} include=${3:?}
pass=0 fail=0
# Run from an empty directory: the preprocessor also looks for a quoted
# include beside its input, here the working directory.
work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
check() {  # check NAME COMMAND...
  if "${@:2}"; then pass=$((pass + 1)); echo "ok - $1"
  else fail=$((fail + 1)); echo "not ok - $1"; fi
}
# found LAYER HEADER: whether the preprocessor finds HEADER from LAYER.
found() {
  ! printf '#include "%s"\n' "$2" |
    "$cc" -E -x c -I "$views/$1" -I "$include" -o /dev/null - 2>&1 |
    grep -qF "$2: No such file or directory"
}
absent() { ! found "$@"; }
may() { check "$1 may include $2" found "$1" "$2"; }
may_not() { check "$1 may not include $2" absent "$1" "$2"; }

may core core/buf.h
may_not core http/http.h
may http core/buf.h
may_not http wire/types.h
may_not http server/store.h
may wire core/json.h
may_not wire http/http.h
may_not wire engine/engine.h
may text core/buf.h
may_not text engine/engine.h
may_not text http/http.h
may kernels kernels/kernels.h
may_not kernels core/buf.h
may engine kernels/kernels.h
may engine text/base_chat.h
may_not engine http/server.h
may_not engine wire/types.h
may_not engine server/store.h
may server engine/engine.h
may server wire/types.h
may server http/server.h
may_not server client/internal.h
may client wire/types.h
may client http/client.h
may_not client server/store.h
may_not client engine/engine.h
may_not client kernels/kernels.h
may cli core/buf.h
may cli tinkerbell.h
may_not cli engine/engine.h
may_not cli text/tok_internal.h
may_not cli client/internal.h
may_not cli kernels/kernels.h
# The source tree itself is on no layer's path.
may_not client src/server/store.h
may_not cli src/engine/engine.h

echo "$pass passed, $fail failed"
[ $fail = 0 ]
