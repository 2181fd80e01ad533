#!/usr/bin/env python3
"""The reference for the renderer tests: a model's Jinja chat_template
rendered as transformers' apply_chat_template renders it (jinja2's
sandbox with trim_blocks, lstrip_blocks and loopcontrols, raise_exception,
tojson, strftime_now, the tokenizer's special tokens as variables).

    python3 chat_reference.py TOKENIZER_CONFIG_JSON [TEMPLATE_FILE] < cases.json

cases: [{"messages": [...], "add_generation_prompt": bool,
         "enable_thinking": bool or absent}]
prints: [rendered string, ...]; exits 77 without jinja2.
"""
import json
import sys
from datetime import datetime

try:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:
    print("python3-jinja2 is not installed", file=sys.stderr)
    sys.exit(77)


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers' own filter: json.dumps without escaping non-ASCII.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                      separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


def token_text(v):
    if isinstance(v, dict):
        return v.get("content")
    return v


def main():
    cfg = json.load(open(sys.argv[1], encoding="utf-8"))
    template = cfg["chat_template"]
    if len(sys.argv) > 2:
        template = open(sys.argv[2], encoding="utf-8").read()
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    compiled = env.from_string(template)
    specials = {k: token_text(cfg.get(k)) for k in
                ("bos_token", "eos_token", "unk_token", "pad_token")}
    out = []
    for case in json.load(sys.stdin):
        kw = dict(specials)
        if "enable_thinking" in case:
            kw["enable_thinking"] = case["enable_thinking"]
        out.append(compiled.render(messages=case["messages"],
                                   add_generation_prompt=case.get("add_generation_prompt", False),
                                   **kw))
    json.dump(out, sys.stdout, ensure_ascii=False)


main()
