#!/usr/bin/env python3
"""Tiny random checkpoints + reference logits for lightmoe's golden tests.

Runs where PyTorch and transformers are installed (the GPU machine):
    python3 tools/make_fixtures.py OUT_DIR
and writes, for each fixture, OUT_DIR/<name>/ with config.json, the weights
as safetensors (per-expert tensor names, as real Hugging Face checkpoints are
stored), and ref.json + ref_logits.bin:
  ref.json        {"ids": [...64 ids], "prompt": [...], "greedy": [...16 ids],
                   "transformers": version, "dtype": ..., "vocab": V}
  ref_logits.bin  float32 little-endian [64, V]: logits of every position of
                  "ids" computed in float64 from the stored (bf16/f16) weights.

Shapes are deliberately awkward: odd hidden sizes, top-k = 3, expert counts
that are not powers of two, a dense layer among MoE layers, a shared expert,
tied embeddings, f16 weights in a sharded checkpoint.
"""
import json
import os
import re
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM

V5 = int(transformers.__version__.split(".")[0]) >= 5
N_IDS = 64
N_PROMPT = 10
N_GREEDY = 16

FIXTURES = {
    # Mixtral: GQA 5:1, head_dim 14, top-3 of 5 experts.
    "mixtral": dict(
        arch="MixtralForCausalLM", model_type="mixtral",
        cfg=dict(vocab_size=263, hidden_size=70, intermediate_size=45, num_hidden_layers=3,
                 num_attention_heads=5, num_key_value_heads=1, num_local_experts=5,
                 num_experts_per_tok=3, rope_theta=10000.0, rms_norm_eps=1e-5,
                 max_position_embeddings=256, tie_word_embeddings=False,
                 sliding_window=None)),
    # Same architecture stored as f16 in two shards with an index.
    "mixtral_f16_sharded": dict(
        arch="MixtralForCausalLM", model_type="mixtral", dtype="float16", shards=2,
        cfg=dict(vocab_size=301, hidden_size=48, intermediate_size=40, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, num_local_experts=6,
                 num_experts_per_tok=2, rope_theta=500000.0, rms_norm_eps=1e-6,
                 max_position_embeddings=256, tie_word_embeddings=False,
                 sliding_window=None)),
    # Qwen3-MoE: odd hidden 67 with explicit head_dim, per-head q/k norm,
    # 6 experts top-3, layer 1 dense (mlp_only_layers), norm_topk_prob.
    "qwen3_moe": dict(
        arch="Qwen3MoeForCausalLM", model_type="qwen3_moe",
        cfg=dict(vocab_size=277, hidden_size=67, intermediate_size=50, moe_intermediate_size=23,
                 num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                 num_experts=6, num_experts_per_tok=3, norm_topk_prob=True,
                 decoder_sparse_step=1, mlp_only_layers=[1], rope_theta=1000000.0,
                 rms_norm_eps=1e-6, max_position_embeddings=256, tie_word_embeddings=False,
                 attention_bias=False, use_sliding_window=False)),
    # Qwen2-MoE: qkv bias, shared expert with sigmoid gate, 7 experts top-2,
    # no top-k renormalisation, decoder_sparse_step 2 (odd layers dense), tied embeddings.
    "qwen2_moe": dict(
        arch="Qwen2MoeForCausalLM", model_type="qwen2_moe",
        cfg=dict(vocab_size=259, hidden_size=48, intermediate_size=44, moe_intermediate_size=20,
                 shared_expert_intermediate_size=36, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, num_experts=7, num_experts_per_tok=2,
                 norm_topk_prob=False, decoder_sparse_step=2, mlp_only_layers=[],
                 rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=256,
                 tie_word_embeddings=True, use_sliding_window=False)),
    # OLMoE: q/k RMSNorm over the whole projection, 9 experts top-3.
    "olmoe": dict(
        arch="OlmoeForCausalLM", model_type="olmoe",
        cfg=dict(vocab_size=271, hidden_size=64, intermediate_size=24, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, num_experts=9,
                 num_experts_per_tok=3, norm_topk_prob=False, rope_theta=10000.0,
                 rms_norm_eps=1e-5, max_position_embeddings=256, tie_word_embeddings=False,
                 clip_qkv=None)),
}


def build(name, spec):
    cfg = AutoConfig.for_model(spec["model_type"], **spec["cfg"])
    cfg.architectures = [spec["arch"]]
    kwargs = {"attn_implementation": "eager"}
    if V5:
        kwargs["experts_implementation"] = "eager"
    try:
        model = AutoModelForCausalLM.from_config(cfg, **kwargs)
    except TypeError:
        kwargs.pop("experts_implementation", None)
        model = AutoModelForCausalLM.from_config(cfg, **kwargs)
    return cfg, model


def randomise(model, seed):
    """Weights large enough that logits and routing have clear margins
    (default init std 0.02 gives near-ties that would make greedy decoding and
    expert choice fragile under any rounding difference)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.dim() == 1 and "norm" in pname:
                p.copy_(0.6 + 0.8 * torch.rand(p.shape, generator=g))
            elif p.dim() == 1:  # biases
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[-1]
                std = 1.0 if "embed" in pname else 1.0 / fan_in ** 0.5
                if "gate.weight" in pname and "proj" not in pname:
                    std *= 4.0  # decisive routing
                p.copy_(std * torch.randn(p.shape, generator=g))


LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(mlp|block_sparse_moe)\.(.*)$")


def legacy_state_dict(model, spec):
    """State dict with the per-expert names real checkpoints use, whatever
    layout this transformers version keeps in memory (v5 fuses experts into
    3-D gate_up_proj / down_proj tensors)."""
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    mixtral = spec["model_type"] == "mixtral"
    names = ("w1", "w3", "w2") if mixtral else ("gate_proj", "up_proj", "down_proj")
    out = {}
    for k, v in sd.items():
        m = LAYER_RE.match(k)
        if not m:
            out[k] = v
            continue
        layer, _, rest = m.groups()
        pre = f"model.layers.{layer}.{'block_sparse_moe' if mixtral else 'mlp'}."
        if rest == "experts.gate_up_proj":  # [E, 2I, H] or [E, H, 2I]
            H = model.config.hidden_size
            t = v if v.shape[-1] == H else v.transpose(1, 2)
            inter = t.shape[1] // 2
            for e in range(t.shape[0]):
                out[pre + f"experts.{e}.{names[0]}.weight"] = t[e, :inter].contiguous()
                out[pre + f"experts.{e}.{names[1]}.weight"] = t[e, inter:].contiguous()
        elif rest == "experts.down_proj":  # [E, H, I] or [E, I, H]
            H = model.config.hidden_size
            t = v if v.shape[1] == H else v.transpose(1, 2)
            for e in range(t.shape[0]):
                out[pre + f"experts.{e}.{names[2]}.weight"] = t[e].contiguous()
        elif rest == "gate.weight" or rest.startswith("experts.") or rest.startswith("shared"):
            out[pre + rest] = v
        elif rest.startswith("router."):
            out[pre + "gate." + rest[len("router."):]] = v
        else:
            out[pre + rest] = v
    if model.config.tie_word_embeddings:
        out.pop("lm_head.weight", None)
    return out


def save(dirname, cfg, sd, shards):
    os.makedirs(dirname, exist_ok=True)
    cfg.save_pretrained(dirname)
    if shards == 1:
        save_file(sd, os.path.join(dirname, "model.safetensors"), metadata={"format": "pt"})
        return
    keys = sorted(sd)
    per = (len(keys) + shards - 1) // shards
    weight_map = {}
    total = 0
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: sd[k] for k in keys[s * per:(s + 1) * per]}
        save_file(part, os.path.join(dirname, fname), metadata={"format": "pt"})
        for k, v in part.items():
            weight_map[k] = fname
            total += v.numel() * v.element_size()
    with open(os.path.join(dirname, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def cast_params(model, dtype):
    """Casts parameters only. model.to(dtype) would also round the rotary
    inv_freq buffer (bf16 keeps 8 bits), which real bf16 inference with
    transformers never does: it computes inv_freq and the angles in float32."""
    for p in model.parameters():
        p.data = p.data.to(dtype)
    return model


def reference(model, ids, prompt):
    model = cast_params(model, torch.float64).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].to(torch.float32)
        seq = list(prompt)
        for _ in range(N_GREEDY):  # full recompute each step: no cache involved
            nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
            seq.append(nxt)
    return logits, seq[len(prompt):]


def main():
    out = sys.argv[1]
    only = sys.argv[2:]
    print("transformers", transformers.__version__, "torch", torch.__version__)
    for i, (name, spec) in enumerate(FIXTURES.items()):
        if only and name not in only:
            continue
        torch.manual_seed(1000 + i)
        cfg, model = build(name, spec)
        randomise(model, 1000 + i)
        dt = getattr(torch, spec.get("dtype", "bfloat16"))
        model = cast_params(model, dt)  # the stored weights; the reference uses exactly these values
        if i == 0:
            print("in-memory layout of", name)
            for k, v in model.state_dict().items():
                if ".layers.0." in k or "layers" not in k:
                    print("  ", k, tuple(v.shape))
        sd = legacy_state_dict(model, spec)
        d = os.path.join(out, name)
        save(d, cfg, sd, spec.get("shards", 1))
        g = torch.Generator().manual_seed(7 + i)
        V = cfg.vocab_size
        ids = torch.randint(0, V, (N_IDS,), generator=g).tolist()
        prompt = ids[:N_PROMPT]
        logits, greedy = reference(model, ids, prompt)
        logits.numpy().astype("<f4").tofile(os.path.join(d, "ref_logits.bin"))
        with open(os.path.join(d, "ref.json"), "w") as f:
            json.dump({"ids": ids, "prompt": prompt, "greedy": greedy, "vocab": V,
                       "dtype": spec.get("dtype", "bfloat16"),
                       "transformers": transformers.__version__,
                       "torch": torch.__version__}, f)
        top2 = logits.topk(2, dim=-1).values
        print(f"{name}: {sum(v.numel() for v in sd.values())} params, "
              f"min top1-top2 logit margin {float((top2[:, 0] - top2[:, 1]).min()):.4f}, "
              f"greedy {greedy}")


if __name__ == "__main__":
    main()
