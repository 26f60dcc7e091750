#!/usr/bin/env python3
"""Placeholder default model: a tiny random-weight Mixtral with a small
byte-level BPE tokenizer, so `lightmoe generate` runs with no download until
a trained demo model replaces it. Its output is gibberish by construction.

Runs where PyTorch, transformers and tokenizers are installed:
    python3 tools/make_tiny_model.py OUT_DIR
"""
import json
import os
import pydoc
import sys

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import MixtralConfig, MixtralForCausalLM

sys.path.insert(0, os.path.dirname(__file__))
from make_fixtures import legacy_state_dict, randomise  # noqa: E402


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    # Training text: documentation shipped with Python itself (deterministic, no download).
    text = [pydoc.render_doc(m, renderer=pydoc.plaintext) for m in (str, list, dict, json, os.path)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text, trainer)
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "<|endoftext|>", "bos_token": None,
                   "tokenizer_class": "PreTrainedTokenizerFast"}, f, indent=2)
    V = tok.get_vocab_size()
    cfg = MixtralConfig(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                        num_experts_per_tok=2, max_position_embeddings=1024, rope_theta=10000.0,
                        eos_token_id=tok.token_to_id("<|endoftext|>"), bos_token_id=None,
                        tie_word_embeddings=False)
    cfg.architectures = ["MixtralForCausalLM"]
    model = MixtralForCausalLM(cfg)
    randomise(model, 42)
    model = model.to(torch.bfloat16)
    cfg.save_pretrained(out)
    sd = legacy_state_dict(model, {"model_type": "mixtral"})
    save_file(sd, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    print("tiny model:", V, "vocab,", sum(v.numel() for v in sd.values()), "params")


if __name__ == "__main__":
    main()
