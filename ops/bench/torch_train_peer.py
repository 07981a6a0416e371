#!/usr/bin/env python3
"""CPU PyTorch + transformers peer for ops/bench/bench_train (issue 4 section 6).

Loads the checkpoint Tessera wrote (config.json + model.safetensors, HF names) with the transformers
model class of its family, in float32 on the CPU with --threads threads, makes only the given expert
slots trainable, and times AdamW training steps on random tokens (batch x seq, loss on every token).

transformers 5 stores each layer's experts fused ([E, 2F, D] gate_up_proj, [E, D, F] down_proj), so
requires_grad cannot select single experts: the fused tensors of layers holding a trainable slot get
requires_grad=True and a gradient hook zeroes the frozen experts' parts (the peer thus computes the full
expert weight gradients of those layers: its real cost for this workload). With per-expert modules
(older transformers) only the trainable experts get requires_grad.

The experts implementation: the fastest of those transformers offers that runs on the CPU, found by
timing one training step with each (grouped_mm, batched_mm, eager); the output names it.
Prints one line:  peer experts_impl=<impl> tok_s=<x> rss_mb=<x> step_ms=<x> torch=<v> transformers=<v>
"""
import argparse
import resource
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True)
    p.add_argument("--slots", required=True, help="L0.E3,L2.E11,...")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--experts-impl", default="auto")
    args = p.parse_args()

    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    slots = []
    for s in args.slots.split(","):
        layer, expert = s[1:].split(".E")
        slots.append((int(layer), int(expert)))

    def load(impl):
        try:
            return AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32,
                                                        experts_implementation=impl)
        except TypeError:
            m = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
            m.config._experts_implementation = impl
            return m

    config = AutoConfig.from_pretrained(args.model_dir)
    vocab = config.vocab_size
    ids = torch.randint(0, min(vocab, 256), (args.batch, args.seq))

    def setup(model):
        model.train()
        for prm in model.parameters():
            prm.requires_grad_(False)
        params = []
        by_layer = {}
        for layer, expert in slots:
            by_layer.setdefault(layer, []).append(expert)
        for layer, experts in by_layer.items():
            mod = model.model.layers[layer].mlp.experts
            if isinstance(mod, torch.nn.ModuleList):
                for e in experts:
                    for prm in mod[e].parameters():
                        prm.requires_grad_(True)
                        params.append(prm)
            else:
                for prm in mod.parameters():
                    if prm.dim() != 3:
                        continue
                    mask = torch.zeros(prm.shape[0], 1, 1)
                    mask[experts] = 1.0
                    prm.requires_grad_(True)
                    prm.register_hook(lambda g, m=mask: g * m)
                    params.append(prm)
        return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)

    def step(model, opt):
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    impl = args.experts_impl
    if impl == "auto":
        # Time one step per implementation in a child process (so this process's peak RSS holds one
        # model), then run the fastest here.
        import subprocess
        import sys
        best = None
        for cand in ["grouped_mm", "batched_mm", "eager"]:
            cmd = [sys.executable, __file__, "--model-dir", args.model_dir, "--slots", args.slots,
                   "--batch", str(args.batch), "--seq", str(args.seq), "--steps", "1",
                   "--threads", str(args.threads), "--experts-impl", cand]
            r = subprocess.run(cmd, capture_output=True, text=True)
            line = [l for l in r.stdout.splitlines() if l.startswith("peer ")]
            if r.returncode != 0 or not line:
                print(f"# experts_impl={cand} unavailable: {(r.stderr.strip().splitlines() or ['?'])[-1][:160]}",
                      flush=True)
                continue
            tok_s = float(line[0].split("tok_s=")[1].split()[0])
            print(f"# experts_impl={cand} probe tok_s={tok_s:.1f}", flush=True)
            if best is None or tok_s > best[1]:
                best = (cand, tok_s)
        if best is None:
            raise SystemExit("no experts implementation works")
        impl = best[0]
    model = load(impl)
    opt = setup(model)
    step(model, opt)  # warm-up with the chosen implementation
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step(model, opt)
    dt = time.perf_counter() - t0
    tok_s = args.batch * args.seq * args.steps / dt
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"peer experts_impl={impl} tok_s={tok_s:.1f} rss_mb={rss_mb:.1f} step_ms={1000 * dt / args.steps:.1f} "
          f"torch={torch.__version__} transformers={transformers.__version__}", flush=True)


if __name__ == "__main__":
    main()
