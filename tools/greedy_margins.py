#!/usr/bin/env python3
"""Where two greedy runs of the shipped model part, how close was the call?

Runs on the GPU machine (PyTorch, transformers, tokenizers). For every prompt
of a JSONL file, transformers (fp32, from the same bf16 weights) continues it
greedily for N tokens and records, at each step, the margin between the two
largest logits. Given two `lightmoe generate --out` files (e.g. the CPU and
the CUDA executor) it finds the prompts whose texts differ, the token where
they part, and prints the reference's margin there: a difference at a margin
of a few hundredths is a near-tie that bf16 rounding can flip; a large one
would be a bug.

  python3 tools/greedy_margins.py PROMPTS.jsonl A.jsonl B.jsonl [-n 32] [-m models/sotu-moe]
"""
import argparse
import json

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("prompts")
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("-n", type=int, default=32)
    ap.add_argument("-m", default="models/sotu-moe")
    args = ap.parse_args()
    prompts = [json.loads(l)["prompt"] for l in open(args.prompts)]
    ta = [json.loads(l)["text"] for l in open(args.a)]
    tb = [json.loads(l)["text"] for l in open(args.b)]
    tok = Tokenizer.from_file(f"{args.m}/tokenizer.json")
    model = AutoModelForCausalLM.from_pretrained(args.m, torch_dtype=torch.float32).cuda().eval()
    rows, same_ref = [], 0
    for i, (p, a, b) in enumerate(zip(prompts, ta, tb)):
        if a == b and i % 10:  # every tenth identical pair is checked against the reference too
            continue
        ids = tok.encode(p).ids
        gen, margins = [], []
        with torch.no_grad():
            x = torch.tensor([ids], device="cuda")
            for _ in range(args.n):
                lg = model(x).logits[0, -1].double()
                top = torch.topk(lg, 2)
                margins.append(float(top.values[0] - top.values[1]))
                t = int(top.indices[0])
                gen.append(t)
                x = torch.cat([x, torch.tensor([[t]], device="cuda")], dim=1)
        ref = tok.decode(gen, skip_special_tokens=True)
        if a == b:
            same_ref += ref.startswith(a[: len(ref)]) or a.startswith(ref[: len(a)])
            continue
        common = 0
        while common < min(len(a), len(b)) and a[common] == b[common]:
            common += 1
        # the first generated token whose text reaches past the common prefix
        k = 0
        while k < len(gen) and len(tok.decode(gen[: k + 1], skip_special_tokens=True)) <= common:
            k += 1
        k = min(k, len(gen) - 1)
        rows.append((i, common, k, margins[k], ref.startswith(a[: len(ref)]) or a.startswith(ref[: len(a)])))
    checked = len([i for i in range(len(prompts)) if ta[i] == tb[i] and i % 10 == 0])
    print(f"identical pairs checked against transformers: {same_ref} of {checked} agree with its greedy text")
    print(f"{len(rows)} prompts differ between {args.a} and {args.b}")
    print(f"{'prompt':>6} {'char':>5} {'token':>5} {'ref margin':>11}  A = transformers")
    for i, c, k, m, ok in rows:
        print(f"{i:6d} {c:5d} {k:5d} {m:11.4f}  {ok}")
    if rows:
        ms = sorted(r[3] for r in rows)
        print(f"margins at the departures: median {ms[len(ms) // 2]:.4f}, largest {ms[-1]:.4f}")


if __name__ == "__main__":
    main()
