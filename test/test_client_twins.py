#!/usr/bin/env python3
"""Every operation of the public API that returns a future has a blocking
_sync twin: this reads every header of include/tinkerbell/, finds each
exported function with a `tb_future_t **` parameter (the future it
returns), and fails, naming them, if any lacks a `<name>_sync` declared
in the same headers.  It also fails if it finds no such function at all,
so that a change in how declarations are written cannot make it pass by
seeing nothing."""
import os
import re
import sys

DECL = re.compile(r'TB_EXTERN\s+[\w\s\*]+?\b(tb_\w+)\s*\(([^;{]*?)\)\s*(?:__attribute__\s*\(\(.*?\)\)\s*)?;',
                  re.S)


def main(include_dir):
    futures, names = {}, set()
    for name in sorted(os.listdir(include_dir)):
        if not name.endswith('.h'):
            continue
        path = os.path.join(include_dir, name)
        with open(path, encoding='utf-8') as f:
            text = re.sub(r'/\*.*?\*/', ' ', f.read(), flags=re.S)
        for m in DECL.finditer(text):
            fn, params = m.group(1), m.group(2)
            names.add(fn)
            if re.search(r'tb_future_t\s*\*\s*\*', params):
                futures[fn] = name
    if not futures:
        print('no future-returning operation found in %s' % include_dir)
        print('0 passed, 1 failed')
        return 1
    missing = sorted('%s (%s)' % (fn, h) for fn, h in futures.items() if fn + '_sync' not in names)
    print('%d future-returning operations, %d with a _sync twin'
          % (len(futures), len(futures) - len(missing)))
    for m in missing:
        print('missing the _sync twin: ' + m)
    print('%d passed, %d failed' % (len(futures) - len(missing), len(missing)))
    return 1 if missing else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1]))
