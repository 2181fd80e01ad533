#!/usr/bin/env python3
"""Runs the three programs of the Tinkerbell API guide against `tinkerbell serve`.

usage: run_examples.py TINKERBELL_EXE

Starts `tinkerbell serve --port 0` on a temporary data directory and reads
the URL from the line it prints, runs each example with /usr/bin/python3
(Debian's python3-requests), and checks that each printed what a successful
run prints.  The examples do not check every answer themselves (the sync one
ignores what optim_step says; the multi-user one drops its threads'
exceptions), so the server's own counts are checked too: GET /metrics must
show every route the examples call answered with success as many times as
they call it, and no request of theirs answered with an error.  Finally the
server is stopped with SIGTERM and must exit 0.

Exit status: 0 when all pass, 1 otherwise, 77 (skipped) when /usr/bin/python3
has no requests module.  Only the standard library is used here.
"""
import math
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3"
SCALE = float(os.environ.get("TB_TEST_TIMEOUT_SCALE", "1") or 1)
NUMBER = r"(-?[0-9.]+|nan|-?inf)"

# What each program prints when it works, in order; NUMBER groups are losses.
EXPECTED = {
    "sync_training.py": (
        [r"Created adapter: (\S+)"]
        + sum(([rf"Step {i}/5\.\.\.", rf"  Loss: {NUMBER}", r"  Optimizer applied"]
               for i in range(1, 6)), [])
        + [r"Done!"]),
    "async_training.py": (
        [r"Created adapter: (\S+)", r"Submitting 5 training steps asynchronously\.\.\."]
        + [rf"  Submitted step {i}" for i in range(1, 6)]
        + [r"All steps submitted! Waiting for results\.\.\."]
        + sum(([rf"  Step {i} complete - Loss: {NUMBER}", rf"  Step {i} optimizer applied"]
               for i in range(1, 6)), [])
        + [r"Done!"]),
}
USERS = ["Alice", "Bob", "Carol"]

# Successful answers per route: the sync example, the async one, then three
# users of the multi-user one.
CALLS = {
    "/api/v1/add_lora": 1,
    "/api/v1/forward_backward": 5,
    "/api/v1/optim_step": 5,
    "/api/v1/add_lora_async": 1 + 3,
    "/api/v1/forward_backward_async": 5 + 3 * 3,
    "/api/v1/optim_step_async": 5 + 3 * 3,
}


def fail(msg):
    print("FAIL: " + msg, flush=True)
    return 1


def check_sequence(name, out, patterns):
    """Each pattern matches a whole line, in order; returns (error, groups)."""
    lines = out.splitlines()
    at, groups = 0, []
    for pat in patterns:
        while at < len(lines) and not re.fullmatch(pat, lines[at]):
            at += 1
        if at == len(lines):
            return f"{name}: no line matching {pat!r} (in order)", groups
        groups.extend(re.fullmatch(pat, lines[at]).groups())
        at += 1
    return None, groups


def check_multi_user(out):
    """Each user's messages in order.  Threads print at the same time, so
    one line may hold several users' messages: split on the "[User] "
    tags rather than on lines."""
    said = {u: [] for u in USERS}
    for user, msg in re.findall(r"\[(" + "|".join(USERS) + r")\] ([^\[\n]*)", out):
        said[user].append(msg)
    ids = []
    for u in USERS:
        pats = ([r"Starting\.\.\.", r"Created adapter: (\S+)"]
                + [rf"Step {k}: Loss={NUMBER}" for k in range(1, 4)]
                + [r"Done!"])
        err, groups = check_sequence(f"multi_user_training.py, {u}", "\n".join(said[u]), pats)
        if err:
            return err
        ids.append(groups[0])
        if not all(math.isfinite(float(x)) for x in groups[1:]):
            return f"multi_user_training.py: {u}'s losses are not finite: {groups[1:]}"
    if len(set(ids)) != len(USERS):
        return f"multi_user_training.py: the users share adapters: {ids}"
    if out.splitlines()[-1:] != ["All users trained!"]:
        return "multi_user_training.py: the last line is not 'All users trained!'"
    return None


def start_server(exe, data_dir, log):
    proc = subprocess.Popen(
        [exe, "serve", "--port", "0", "--data-dir", data_dir, "--log-level", "info"],
        stdout=subprocess.PIPE, stderr=log)
    # Raw reads of the pipe: a buffered reader would hide a line it already
    # holds from select().
    deadline = time.monotonic() + 60 * SCALE
    out = b""
    while b"\n" not in out:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([proc.stdout], [], [], max(left, 0))
        chunk = os.read(proc.stdout.fileno(), 4096) if ready else b""
        if chunk == b"":
            proc.kill()
            proc.wait()
            raise RuntimeError("tinkerbell serve exited or did not print its URL in time")
        out += chunk
    line = out.decode(errors="replace")
    m = re.search(r"listening on (http://\S+)", line)
    if not m:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"unexpected first line: {line!r}")
    return proc, m.group(1)


def route_counts(url):
    """{(route, status): count} from the server's metrics."""
    # Straight to the server, whatever proxy the environment names.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url + "/metrics", timeout=30 * SCALE) as r:
        text = r.read().decode()
    counts = {}
    for m in re.finditer(r'^tinkerbell_http_requests_total\{method="[^"]*",'
                         r'route="([^"]*)",status="(\d+)"\} (\d+)$', text, re.M):
        key = (m.group(1), int(m.group(2)))
        counts[key] = counts.get(key, 0) + int(m.group(3))
    return counts


def main():
    if len(sys.argv) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    exe = sys.argv[1]
    # A test harness that gives up sends SIGTERM: leave through the finally
    # blocks, which stop the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    if subprocess.run([PYTHON, "-c", "import requests"],
                      capture_output=True).returncode != 0:
        print(f"# skipped: {PYTHON} has no requests module "
              "(apt-get install python3-requests)")
        print("3 skipped\n0 passed, 0 failed")
        return 77
    # requests honours proxy variables; the server is on loopback.
    env = dict(os.environ)
    for var in ("no_proxy", "NO_PROXY"):
        env[var] = ",".join(filter(None, [env.get(var), "127.0.0.1", "localhost", "::1"]))
    failures = passed = 0
    with tempfile.TemporaryDirectory(prefix="tb-examples-") as tmp:
        log_path = os.path.join(tmp, "serve.log")
        with open(log_path, "w") as log:
            proc, url = start_server(exe, os.path.join(tmp, "data"), log)
            print(f"server at {url}", flush=True)
            try:
                for name in ["sync_training.py", "async_training.py",
                             "multi_user_training.py"]:
                    t0 = time.monotonic()
                    try:
                        r = subprocess.run([PYTHON, os.path.join(HERE, name), url],
                                           capture_output=True, text=True, env=env,
                                           timeout=600 * SCALE)
                    except subprocess.TimeoutExpired:
                        failures += fail(f"{name} did not finish in {600 * SCALE:.0f} s")
                        continue
                    print(f"--- {name}: exit {r.returncode} in "
                          f"{time.monotonic() - t0:.1f} s\n{r.stdout}{r.stderr}", flush=True)
                    if r.returncode != 0:
                        failures += fail(f"{name} exited with {r.returncode}")
                        continue
                    if name in EXPECTED:
                        err, groups = check_sequence(name, r.stdout, EXPECTED[name])
                        losses = groups[1:]
                        if err is None and not all(math.isfinite(float(x)) for x in losses):
                            err = f"{name}: losses are not finite: {losses}"
                    else:
                        err = check_multi_user(r.stdout)
                    if err:
                        failures += fail(err)
                    else:
                        passed += 1
                counts = route_counts(url)
                for route, n in CALLS.items():
                    ok = sum(c for (rt, st), c in counts.items() if rt == route and st < 300)
                    if ok != n:
                        failures += fail(f"{route}: {ok} successful answers, expected {n}")
                for (route, status), n in sorted(counts.items()):
                    if status >= 400:
                        failures += fail(f"{route}: {n} answers with status {status}")
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    rc = proc.wait(timeout=30 * SCALE)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    rc = proc.wait()
                    failures += fail(f"tinkerbell serve did not exit within {30 * SCALE:.0f} s "
                                     "of SIGTERM")
                if rc != 0:
                    failures += fail(f"tinkerbell serve exited with {rc} after SIGTERM")
        if failures:
            with open(log_path) as f:
                lines = f.read().splitlines()
            print("--- the server's log, last 60 lines:\n" + "\n".join(lines[-60:]))
    # The summary line every test program of the project ends with; the
    # server-side checks after the examples count among the failures.
    print(f"{passed} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
