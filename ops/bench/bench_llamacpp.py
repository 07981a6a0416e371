#!/usr/bin/env python3
"""Tessera vs llama.cpp on the CPU: the same MoE checkpoint, decode at batch 1 and at B concurrent
sequences, and prefill (issue 17 §2).

What runs:
  - llama.cpp: the source that `pip install llama-cpp-python==LLAMA_CPP_PYTHON` builds (its PyPI sdist
    vendors llama.cpp), built here with CMake (Release, GGML_NATIVE=ON: every instruction set this CPU
    has), once, into the cache. Its own benchmark program, `llama-batched-bench`, is the peer (no Python
    between the clock and the engine), and its vendored `convert_hf_to_gguf.py` converts the checkpoint.
  - The checkpoint: ops/bench/make_decode_checkpoint.py (transformers' MixtralForCausalLM, random weights,
    f32 safetensors; builtin:small's shape), converted to GGUF at the same dtype (f32, or bf16).
  - Tessera: build/ops/bench/bench_decode on the safetensors, with batched-bench's protocol (see its
    header): prefill B sequences of --npp random tokens in one batch, then --ntg steps of B tokens.
  - Both get --threads threads (llama.cpp: -t and -tb), the same --npp/--ntg/--npl, and run alternately
    for --rounds rounds (so load from elsewhere falls on both); each side keeps its best round.
  - Memory: each process's peak RSS (wait4). llama.cpp maps the GGUF file; its RSS counts the mapped
    pages it touched.

Last line: tessera_b1_tok_s=.. llama_b1_tok_s=.. ratio_b1=.. tessera_bB_tok_s=.. llama_bB_tok_s=..
  ratio_bB=.. ratio_prefill_b1=.. ratio_prefill_bB=.. tessera_rss_mb=.. llama_rss_mb=.. ratio=<ratio_b1>
(ratios are Tessera / llama.cpp; the goal: decode ratios >= 1, prefill ratios >= 0.8).

Usage: ops/bench/bench_llamacpp.py [--threads N] [--npp 128] [--ntg 64] [--npl 1,8] [--rounds 3]
                                   [--dtype f32|bf16] [--build-dir build] [--cache DIR]
Run it with the ops venv's Python (ops/py-env.sh prints it): the converter and the checkpoint maker need
torch, transformers, sentencepiece and numpy, all in ops/requirements-ops.txt.
"""
import argparse
import os
import re
import subprocess
import sys
import tarfile

LLAMA_CPP_PYTHON = "0.3.36"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def log(msg):
    print(f"bench_llamacpp: {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, **kw)


def llama_tools(cache):
    """Builds llama-batched-bench from llama-cpp-python's sdist; returns (tool path, vendored source dir)."""
    src_root = os.path.join(cache, f"llama_cpp_python-{LLAMA_CPP_PYTHON}")
    vendor = os.path.join(src_root, "vendor", "llama.cpp")
    build = os.path.join(cache, f"build-{LLAMA_CPP_PYTHON}")
    tool = os.path.join(build, "bin", "llama-batched-bench")
    if os.path.exists(tool):
        return tool, vendor
    os.makedirs(cache, exist_ok=True)
    sdist = os.path.join(cache, f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz")
    if not os.path.exists(sdist):
        run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", cache,
             f"llama-cpp-python=={LLAMA_CPP_PYTHON}"])
    if not os.path.isdir(vendor):
        with tarfile.open(sdist) as t:
            t.extractall(cache, filter="data")
    run(["cmake", "-S", vendor, "-B", build, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON",
         "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF",
         "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=ON", "-DBUILD_SHARED_LIBS=OFF"],
        stdout=subprocess.DEVNULL)
    run(["cmake", "--build", build, "--target", "llama-batched-bench", "-j", str(os.cpu_count() or 2)],
        stdout=subprocess.DEVNULL)
    return tool, vendor


def checkpoint(cache, vendor, dtype):
    """The safetensors checkpoint directory and its GGUF at `dtype`."""
    ckpt = os.path.join(cache, "mixtral-small")
    run([sys.executable, os.path.join(ROOT, "ops", "bench", "make_decode_checkpoint.py"), ckpt],
        stdout=subprocess.DEVNULL)
    gguf = os.path.join(cache, f"mixtral-small-{dtype}.gguf")
    if not os.path.exists(gguf) or os.path.getmtime(gguf) < os.path.getmtime(os.path.join(ckpt, "config.json")):
        env = dict(os.environ, PYTHONPATH=os.path.join(vendor, "gguf-py"))
        run([sys.executable, os.path.join(vendor, "convert_hf_to_gguf.py"), ckpt, "--outtype", dtype,
             "--outfile", gguf + ".tmp"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.replace(gguf + ".tmp", gguf)
    return ckpt, gguf


def measured(cmd, env=None):
    """Runs cmd; returns (stdout, peak RSS in MB of that process)."""
    log("$ " + " ".join(cmd))
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.stderr.write(out)
        raise SystemExit(f"bench_llamacpp: {cmd[0]} failed with exit code {p.returncode}")
    return out, usage.ru_maxrss / 1024.0


ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|"
                 r"\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|")


def rows(text):
    """batched-bench table rows (Tessera's bench prints the same first eight columns): {B: (S_PP, S_TG)}."""
    out = {}
    for line in text.splitlines():
        m = ROW.match(line.strip())
        if m:
            out[int(m.group(3))] = (float(m.group(6)), float(m.group(8)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--npp", type=int, default=128)
    ap.add_argument("--ntg", type=int, default=64)
    ap.add_argument("--npl", default="1,8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    ap.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "tessera", "llamacpp"))
    a = ap.parse_args()
    npl = [int(x) for x in a.npl.split(",")]
    if 1 not in npl or len(npl) < 2:
        raise SystemExit("bench_llamacpp: --npl must hold 1 and a larger count, e.g. 1,8")
    big = max(npl)

    tessera = os.path.join(a.build_dir, "ops", "bench", "bench_decode")
    if not os.access(tessera, os.X_OK):
        raise SystemExit(f"bench_llamacpp: {tessera} not found: build the tree first (ops/build.sh)")
    tool, vendor = llama_tools(a.cache)
    ckpt, gguf = checkpoint(a.cache, vendor, a.dtype)
    ctx = big * (a.npp + a.ntg) + 64
    common = ["-npp", str(a.npp), "-ntg", str(a.ntg), "-npl", a.npl]
    llama_cmd = [tool, "-m", gguf, "-c", str(ctx), "-t", str(a.threads), "-tb", str(a.threads)] + common
    tessera_cmd = [tessera, "--model", ckpt, "--dtype", a.dtype, "--threads", str(a.threads), "--reps", "1",
                   "--npp", str(a.npp), "--ntg", str(a.ntg), "--npl", a.npl]

    best = {"tessera": {}, "llama": {}}
    rss = {"tessera": 0.0, "llama": 0.0}
    header_printed = False
    for r in range(a.rounds):
        for name, cmd in (("tessera", tessera_cmd), ("llama", llama_cmd)):
            out, peak = measured(cmd)
            if not header_printed and name == "tessera":
                print("\n".join(l for l in out.splitlines() if l.startswith(("bench_decode:", "cpu:", "kernels:",
                                                                            "model "))))
                header_printed = True
            got = rows(out)
            if set(got) != set(npl):
                sys.stderr.write(out)
                raise SystemExit(f"bench_llamacpp: {name} printed rows for B={sorted(got)}, wanted {npl}")
            rss[name] = max(rss[name], peak)
            for b, (pp, tg) in got.items():
                old = best[name].get(b, (0.0, 0.0))
                best[name][b] = (max(old[0], pp), max(old[1], tg))
            print(f"round {r + 1} {name:8s} " + " ".join(f"B={b}: prefill {pp:.1f} decode {tg:.2f} tok/s"
                                                         for b, (pp, tg) in sorted(got.items())) +
                  f"; peak RSS {peak:.0f} MB", flush=True)

    print(f"\nbest of {a.rounds} rounds, {a.threads} threads, {a.dtype}, prompt {a.npp}, {a.ntg} decode steps "
          f"(tok/s; ratio = Tessera / llama.cpp {os.path.basename(vendor)} from llama-cpp-python "
          f"{LLAMA_CPP_PYTHON}):")
    print(f"{'B':>3} | {'prefill tessera':>15} {'llama.cpp':>10} {'ratio':>6} | {'decode tessera':>14} "
          f"{'llama.cpp':>10} {'ratio':>6}")
    for b in npl:
        tp, tt = best["tessera"][b]
        lp, lt = best["llama"][b]
        print(f"{b:>3} | {tp:>15.1f} {lp:>10.1f} {tp / lp:>6.3f} | {tt:>14.2f} {lt:>10.2f} {tt / lt:>6.3f}")
    print(f"peak RSS: tessera {rss['tessera']:.0f} MB, llama.cpp {rss['llama']:.0f} MB")
    t1, l1 = best["tessera"][1], best["llama"][1]
    tb, lb = best["tessera"][big], best["llama"][big]
    print(f"tessera_b1_tok_s={t1[1]:.2f} llama_b1_tok_s={l1[1]:.2f} ratio_b1={t1[1] / l1[1]:.3f} "
          f"tessera_b{big}_tok_s={tb[1]:.2f} llama_b{big}_tok_s={lb[1]:.2f} ratio_b{big}={tb[1] / lb[1]:.3f} "
          f"ratio_prefill_b1={t1[0] / l1[0]:.3f} ratio_prefill_b{big}={tb[0] / lb[0]:.3f} "
          f"tessera_rss_mb={rss['tessera']:.0f} llama_rss_mb={rss['llama']:.0f} ratio={t1[1] / l1[1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
