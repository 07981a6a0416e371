#!/usr/bin/env python3
"""Rust `tokenizers` peer of ops/bench/bench_tokenizer.cc (issue 15: tokens/s against tokenizers).

Loads the same tokenizer.json, reads the same documents (a UTF-8 file, documents separated by a NUL
byte), encodes them one by one on one thread (TOKENIZERS_PARALLELISM=false, encode() per document,
add_special_tokens=False), repeats the pass --reps times and reports the fastest, and writes every id as
little-endian int32 to --ids-out so the C++ side can check they agree. Prints, in a fixed format the C++
side parses:

  peer tokenizers=<version> docs=<n> tokens=<n> seconds=<best pass> tokens_per_s=<x>
"""
import argparse
import os
import struct
import sys
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"

import tokenizers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokenizer", required=True, help="directory holding tokenizer.json")
    p.add_argument("--text", required=True, help="documents separated by NUL bytes")
    p.add_argument("--ids-out", required=True)
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args()
    tok = Tokenizer.from_file(os.path.join(a.tokenizer, "tokenizer.json"))
    with open(a.text, "rb") as f:
        docs = f.read().decode("utf-8").split("\0")
    best = None
    ids_all = None
    for _ in range(a.reps):
        t0 = time.perf_counter()
        out = [tok.encode(d, add_special_tokens=False).ids for d in docs]
        dt = time.perf_counter() - t0
        if best is None or dt < best:
            best = dt
        ids_all = out
    flat = [i for ids in ids_all for i in ids]
    with open(a.ids_out, "wb") as f:
        f.write(struct.pack("<%di" % len(flat), *flat))
    print(f"peer tokenizers={tokenizers.__version__} docs={len(docs)} tokens={len(flat)} seconds={best:.6f} "
          f"tokens_per_s={len(flat) / best:.1f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
