#!/usr/bin/env python3
"""Writes the checkpoint bench_llamacpp.py runs in both engines: a Mixtral-shaped MoE with random weights,
made by `transformers` (not by Tessera, so neither engine reads its own writer's output), saved as f32
safetensors with a SentencePiece `tokenizer.model` trained on generated text (llama.cpp's converter needs a
tokenizer; a SentencePiece model is the one it takes without a table of known BPE pre-tokenizers).

The shape is Tessera's `builtin:small` with Mixtral's layout: hidden 1024, 8 layers, 16 query / 4 KV heads
of 64, 32 experts top-4 of width 512, vocab 32000 (the tokenizer's pieces, padded by the converter), so
decode at batch 1 reads ~4 of 32 experts per layer: the memory-bound case MoE decode is about.

Usage: make_decode_checkpoint.py OUT_DIR [--layers N] [--hidden N] [--experts N] [--top-k N] [--width N]
Prints the directory when done; an OUT_DIR holding config.json with the same shape is left as it is.
"""
import argparse
import json
import os
import random
import sys


def generated_text(lines, seed):
    rng = random.Random(seed)
    syll = ["ka", "lo", "mi", "ne", "tor", "sa", "vi", "qu", "ran", "del", "po", "zu", "ex", "ion", "ber"]
    words = ["".join(rng.choice(syll) for _ in range(rng.randint(1, 4))) for _ in range(3000)]
    for _ in range(lines):
        n = rng.randint(4, 16)
        yield " ".join(rng.choice(words) for _ in range(n)) + rng.choice([".", "!", "?", ","]) + " " + str(
            rng.randint(0, 99999))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--experts", type=int, default=32)
    ap.add_argument("--top-k", type=int, default=4)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seed", type=int, default=2026)
    a = ap.parse_args()

    shape = dict(hidden_size=a.hidden, num_hidden_layers=a.layers, num_attention_heads=a.hidden // 64,
                 num_key_value_heads=max(1, a.hidden // 256), head_dim=64, num_local_experts=a.experts,
                 num_experts_per_tok=a.top_k, intermediate_size=a.width, vocab_size=a.vocab)
    cfg_path = os.path.join(a.out, "config.json")
    if os.path.exists(cfg_path) and os.path.exists(os.path.join(a.out, "tokenizer.model")):
        have = json.load(open(cfg_path))
        if all(have.get(k) == v for k, v in shape.items()):
            print(a.out)
            return 0

    import sentencepiece as spm
    import torch
    import transformers

    os.makedirs(a.out, exist_ok=True)
    spm.SentencePieceTrainer.train(sentence_iterator=generated_text(20000, a.seed),
                                   model_prefix=os.path.join(a.out, "tokenizer"), vocab_size=1000,
                                   model_type="bpe", byte_fallback=True, minloglevel=2)
    os.remove(os.path.join(a.out, "tokenizer.vocab"))

    torch.manual_seed(a.seed)
    cfg = transformers.MixtralConfig(max_position_embeddings=4096, rope_theta=1e6, rms_norm_eps=1e-6,
                                     tie_word_embeddings=False, sliding_window=None, bos_token_id=1,
                                     eos_token_id=2, **shape)
    model = transformers.MixtralForCausalLM(cfg).to(torch.float32).eval()
    model.save_pretrained(a.out, safe_serialization=True, max_shard_size="100GB")
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
