#!/usr/bin/env python3
"""Reference renderer for the chat-template tests: renders every case of a
corpus (tests/data/chat/cases.json) with Python's jinja2, configured the way
transformers renders chat templates (transformers/utils/chat_template_utils.py,
_compile_jinja_template):

    ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                  extensions=[AssistantTracker, loopcontrols])
    filters["tojson"] = json.dumps(x, ensure_ascii=False, indent=None,
                                   separators=None, sort_keys=False)
    globals["raise_exception"], globals["strftime_now"]

and writes, for each case, the context it rendered with (as JSON text, so
the C side reads exactly the same values) and the text or the error:

    python3 tools/jinja_ref.py tests/data/chat/cases.json OUT.json

Needs only jinja2 (Debian: python3-jinja2); transformers is not needed.
A template whose file is missing (the npm test data was not fetched) is
reported as missing, with the file's path.
"""
import json
import os
import sys
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment


class Generation(jinja2.ext.Extension):
    """transformers' AssistantTracker when no tracking is active: the body of
    {% generation %}...{% endgeneration %} renders as it is."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_support"), [], [], body).set_lineno(lineno)

    def _support(self, caller):
        return caller()


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def load_template(root, spec):
    """(source, None) or (None, missing path)."""
    path = os.path.join(root, spec.get("file") or spec["config"])
    if not os.path.exists(path):
        return None, spec.get("file") or spec["config"]
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    if "config" in spec:
        return json.loads(text)["chat_template"], None
    return text, None


def has_integral_float(v):
    if isinstance(v, float):
        return v == int(v) if v == v and v not in (float("inf"), float("-inf")) else True
    if isinstance(v, list):
        return any(has_integral_float(x) for x in v)
    if isinstance(v, dict):
        return any(has_integral_float(x) for x in v.values())
    return False


def main():
    corpus_path, out_path = sys.argv[1], sys.argv[2]
    root = os.path.dirname(os.path.abspath(corpus_path))
    repo = os.path.abspath(os.path.join(root, "..", "..", ".."))
    with open(corpus_path, encoding="utf-8") as f:
        corpus = json.load(f)
    env = make_env()
    templates = {}
    for name, spec in corpus["templates"].items():
        src, missing = load_template(repo, spec)
        templates[name] = (src, missing, spec.get("vars", {}))
    results = []
    for case in corpus["cases"]:
        r = {"name": case["name"]}
        if "source" in case:
            src, missing, base = case["source"], None, {}
        else:
            src, missing, base = templates[case["template"]]
            r["template"] = case["template"]
        if missing:
            r["missing"] = missing
            results.append(r)
            continue
        ctx = dict(base)
        if "ctx" in case:  # a shared context by name
            ctx.update(corpus["contexts"][case["ctx"]])
        ctx.update(case.get("context", {}))
        r["source"] = src
        r["source_bytes"] = len(src.encode("utf-8"))
        r["context"] = json.dumps(ctx, ensure_ascii=False)
        r["cjson_exact"] = not has_integral_float(ctx)
        r["unsupported"] = bool(case.get("unsupported"))  # we may refuse it as unsupported
        try:
            r["text"] = env.from_string(src).render(**ctx)
            r["text_bytes"] = len(r["text"].encode("utf-8"))  # (the text may hold U+0000)
            r["ok"] = True
        except Exception as e:  # any failure: the C engine must fail too
            r["ok"] = False
            r["error"] = f"{type(e).__name__}: {e}"
        results.append(r)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"jinja2": jinja2.__version__, "results": results}, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
