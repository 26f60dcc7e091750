#!/usr/bin/env python3
"""Reference token ids from the `tokenizers` library (the reference
implementation), for lightmoe's tokenizer tests.

Runs where `tokenizers` is installed (the GPU machine):
    python3 tools/make_tokenizer_refs.py testdata tests/data/tokenizer_refs.json
reads tests/data/tokenizer_cases.json and testdata/{llama2,qwen3}/tokenizer.json.
"""
import json
import sys

import tokenizers
from tokenizers import Tokenizer


def main():
    testdata, out = sys.argv[1], sys.argv[2]
    cases = json.load(open("tests/data/tokenizer_cases.json", encoding="utf-8"))
    refs = {"tokenizers_version": tokenizers.__version__, "models": {}}
    for name in ("llama2", "qwen3"):
        tok = Tokenizer.from_file(f"{testdata}/{name}/tokenizer.json")
        rows = []
        for text in cases:
            for add_special in (False, True):
                ids = tok.encode(text, add_special_tokens=add_special).ids
                rows.append({
                    "text": text,
                    "add_special": add_special,
                    "ids": ids,
                    # what decode(ids) gives back, special tokens kept
                    "decoded": tok.decode(ids, skip_special_tokens=False),
                })
        refs["models"][name] = rows
    with open(out, "w", encoding="utf-8") as f:
        json.dump(refs, f, ensure_ascii=False, indent=0)


if __name__ == "__main__":
    main()
