#!/usr/bin/env python3
"""Every public function is documented in its header: each TB_EXTERN
declaration in include/ follows a comment (or shares one with the
declarations right above it, as a documented group).

usage: api_docs.py INCLUDE_DIR
Prints one line per undocumented function and "N passed, N failed".
"""
import pathlib
import re
import sys


def check(path):
    lines = path.read_text().splitlines()
    ok, missing = 0, []
    i = 0
    while i < len(lines):
        line = lines[i]
        decl = line + " " + (lines[i + 1] if i + 1 < len(lines) else "")
        if line.startswith("TB_EXTERN") and "(" in decl.split(";")[0]:
            # The declaration's first line; walk back over the declarations
            # of its group to the comment that documents them.
            j = i - 1
            while j >= 0 and (lines[j].strip() == "" or lines[j].startswith("TB_EXTERN")
                              or lines[j].startswith(" ") and not lines[j].strip().endswith("*/")
                              and not lines[j].strip().startswith("*")):
                if lines[j].strip() == "":
                    break
                j -= 1
            name = re.search(r"(\w+)\s*\(", decl)
            label = name.group(1) if name else line.strip()
            if j >= 0 and lines[j].strip().endswith("*/"):
                ok += 1
            else:
                missing.append("%s:%d: %s has no comment" % (path.name, i + 1, label))
        i += 1
    return ok, missing


def main(argv):
    root = pathlib.Path(argv[1])
    headers = sorted(root.glob("*.h")) + sorted(root.glob("tinkerbell/*.h"))
    passed, failed = 0, 0
    for h in headers:
        ok, missing = check(h)
        passed += ok
        failed += len(missing)
        for m in missing:
            print(m)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
