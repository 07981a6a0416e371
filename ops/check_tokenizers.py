#!/usr/bin/env python3
"""Tokenizer and chat-template compatibility check against tokenizers Tessera has never seen.

Each run trains fresh tokenizers with Hugging Face `tokenizers` (seeded by --seed, default: the time, so
every run sees new vocabularies and merges) in the shapes of the supported families, writes them as
checkpoint directories with a chat template, and compares, line by line, `tessera-model`
  tokenize   (with and without --add-special-tokens)  with tokenizers' encode,
  detokenize (with and without --skip-special-tokens) with tokenizers' decode,
  chat-render (with and without --add-generation-prompt) with transformers' apply_chat_template,
on generated multilingual text (accents, Cyrillic, Greek, CJK, Arabic, emoji, code, whitespace runs,
digits, special-token strings inside text). Prints a summary; exit status 0 only when everything agreed.

Usage: ops/check_tokenizers.py BUILD_DIR [--seed N] [--lines N]
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

import transformers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "àéèêëïîôöüçñßœ", "абвгдежзийклмнопрстуфхцчшщыэюя",
    "αβγδεζηθικλμνξοπρστυφχψω", "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年", "ابتثجحخدذرزسشصضطظعغفقكلمنهوي",
    "😀😃😄😁🙂🙃😉👍🏽👩‍💻🇫🇷", "0123456789", "{}[]()<>=+-*/%&|!?.,;:'\"`~^$#@\\_",
]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>"]

CHATML = ("{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + "
          "'<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
          "{%- endif %}")
INST = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}")


def word(rng):
    a = rng.choice(ALPHABETS)
    return "".join(rng.choice(a) for _ in range(rng.randint(1, 9)))


def line(rng):
    parts = []
    for _ in range(rng.randint(1, 12)):
        r = rng.random()
        if r < 0.08:
            parts.append(rng.choice(SPECIALS))
        elif r < 0.15:
            parts.append(rng.choice([" ", "  ", "\t", "\n", "\n\n", "   \n "]))
        elif r < 0.22:
            parts.append(str(rng.randint(0, 10 ** rng.randint(1, 12))))
        else:
            parts.append(word(rng))
        parts.append(rng.choice([" ", "", " ", ", ", "\n"]))
    return "".join(parts)


def byte_level(rng, vocab):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
                             behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIALS[:3],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([line(rng) for _ in range(2000)], trainer=trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                                pad_token="<|endoftext|>"), CHATML


def sentencepiece_like(rng, vocab):
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=" ", left=1)])
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=[f"<0x{b:02X}>" for b in range(256)], show_progress=False)
    tok.train_from_iterator([line(rng) for _ in range(2000)], trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                                unk_token="<unk>"), INST


def run(build, args, lines):
    p = subprocess.run([os.path.join(build, "services", "tessera-model")] + args, input="".join(lines),
                       capture_output=True, text=True)
    out = p.stdout.splitlines()
    return out, p.returncode, p.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--lines", type=int, default=300)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    print(f"check_tokenizers: seed {a.seed}, transformers {transformers.__version__}")
    failures = 0
    total = 0
    for kind, make in (("byte-level BPE", byte_level), ("SentencePiece-style BPE", sentencepiece_like)):
        fast, template = make(rng, rng.randint(300, 1500))
        fast.chat_template = template
        with tempfile.TemporaryDirectory() as d:
            fast.save_pretrained(d)
            texts = [line(rng) for _ in range(a.lines)]
            for special in (False, True):
                want = [fast(t, add_special_tokens=special)["input_ids"] for t in texts]
                out, rc, err = run(a.build, ["tokenize", "--tokenizer", d] + (["--add-special-tokens"] if special else []),
                                   [json.dumps({"text": t}) + "\n" for t in texts])
                bad = [i for i, (w, o) in enumerate(zip(want, out)) if json.loads(o).get("ids") != w]
                if rc != 0 or len(out) != len(texts) or bad:
                    failures += 1
                    i = bad[0] if bad else 0
                    print(f"FAIL {kind} tokenize special={special}: rc={rc} {err.strip()[:200]} first mismatch line {i}: "
                          f"{texts[i]!r} want {want[i]} got {out[i] if i < len(out) else None}")
                total += 1
                for skip in (False, True):
                    wt = [fast.decode(w, skip_special_tokens=skip) for w in want]
                    out, rc, err = run(a.build, ["detokenize", "--tokenizer", d] + (["--skip-special-tokens"] if skip else []),
                                       [json.dumps({"ids": w}) + "\n" for w in want])
                    bad = [i for i, (w, o) in enumerate(zip(wt, out)) if json.loads(o).get("text") != w]
                    if rc != 0 or len(out) != len(wt) or bad:
                        failures += 1
                        i = bad[0] if bad else 0
                        print(f"FAIL {kind} detokenize skip={skip}: rc={rc} {err.strip()[:200]} line {i}: "
                              f"want {wt[i]!r} got {out[i] if i < len(out) else None}")
                    total += 1
            convs = []
            for _ in range(40):
                n = rng.randint(1, 3)
                m = []
                for k in range(n):
                    m += [{"role": "user", "content": line(rng).strip() or "hi"},
                          {"role": "assistant", "content": line(rng).strip() or "ok"}]
                convs.append(m[:-1] if rng.random() < 0.5 else m)
            for gen in (False, True):
                want = [fast.apply_chat_template(c, tokenize=False, add_generation_prompt=gen) for c in convs]
                out, rc, err = run(a.build, ["chat-render", "--tokenizer", d] + (["--add-generation-prompt"] if gen else []),
                                   [json.dumps({"messages": c}) + "\n" for c in convs])
                bad = [i for i, (w, o) in enumerate(zip(want, out)) if json.loads(o).get("text") != w]
                if rc != 0 or len(out) != len(convs) or bad:
                    failures += 1
                    i = bad[0] if bad else 0
                    print(f"FAIL {kind} chat-render gen={gen}: rc={rc} {err.strip()[:200]} conv {i}: want {want[i]!r} "
                          f"got {out[i] if i < len(out) else None}")
                total += 1
            print(f"  {kind}: vocab {len(fast)}, {len(texts)} texts, {len(convs)} conversations")
    print(f"check_tokenizers: {total - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
