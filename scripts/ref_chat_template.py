#!/usr/bin/env python3
"""Render chat-template test cases with Jinja2 configured exactly as Hugging Face
transformers configures it (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
loopcontrols, its `tojson`, `raise_exception`, `strftime_now`), and write the results
into the cases file as `expected` (or `expected_error`).

    pip install jinja2
    python3 scripts/ref_chat_template.py crates/engine/tests/fixtures/text/chat_cases.json
"""
import json
import sys
from datetime import datetime
from pathlib import Path

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


def main():
    path = Path(sys.argv[1])
    cases = json.loads(path.read_text())
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    for case in cases:
        src = (path.parent / case["template"]).read_text()
        tmpl = env.from_string(src)
        ctx = dict(case.get("special_tokens", {}))
        ctx.update(case.get("extra", {}))
        case.pop("expected", None)
        case.pop("expected_error", None)
        try:
            case["expected"] = tmpl.render(
                messages=case["messages"],
                tools=case.get("tools"),
                documents=None,
                add_generation_prompt=case["add_generation_prompt"],
                **ctx,
            )
        except jinja2.exceptions.TemplateError as e:
            case["expected_error"] = str(e)
    path.write_text(json.dumps(cases, ensure_ascii=False, indent=1) + "\n")


if __name__ == "__main__":
    main()
