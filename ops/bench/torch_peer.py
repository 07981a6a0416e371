#!/usr/bin/env python3
"""PyTorch + transformers peer for Tessera's GPU benchmarks (issue 6, "Against the peer").

Runs a Qwen3-MoE-style model (default: hidden 2048, 16 layers, 64 experts top-8, expert width 768, bf16)
on one CUDA GPU with transformers' fastest experts implementation (`grouped_mm` where available) and prints,
in a fixed format that ops/gpu-check.sh and the C++ side parse:

  peer device=<name> torch=<v> transformers=<v> experts_impl=<impl> params=<n>
  peer train batch=<B> seq=<S> trainable_slots=<t>/<total> step_ms=<x> tokens_per_s=<x>
  peer prefill batch=<B> prompt=<P> ms=<x> tokens_per_s=<x>
  peer decode batch=<B> new_tokens=<N> ms=<x> tokens_per_s=<x>
  peer_summary train_tokens_per_s=<x> prefill_tokens_per_s=<x> decode_tokens_per_s=<x>

Training step: ~10% of the (layer, expert) slots trainable, everything else requires_grad=False; AdamW on
the trainable weights. transformers 5 stores each layer's experts fused ([E, 2F, D] gate_up / [E, D, F]
down): requires_grad cannot select single experts there, so the fused expert tensors of every layer that
holds a trainable slot get requires_grad=True and a gradient hook zeroes the frozen experts' rows (the
peer therefore computes full expert weight gradients; that is its real cost for this workload). With
per-expert modules (transformers 4.x) only the trainable experts get requires_grad.

Identical weights: --save-dir writes the randomly initialized model (safetensors, save_pretrained) for
Tessera to load; --load-dir loads weights written by Tessera instead. --logits-out writes the logits of a
fixed token sequence (float32 raw, [64, vocab]) so the two sides can be compared within bf16 tolerance;
--logits-f32-out also writes them from the same weights computed in float32 (Tessera's f32 path must match
that one closely).
Timing: CUDA events around each region, warm-up first, median of --reps repetitions.

CPU GEMM peer (issue 17): --cpu-gemm 'm,n,k;...' [--threads N] times torch.nn.functional.linear (torch's own
bundled CPU GEMM kernels, independent of the BLAS Tessera loads) over those shapes in float32, best of --reps,
and prints `peer cpu_gemm torch=<v> threads=<n> shapes=<n> gflop=<x> seconds=<x> gflops=<x>` (bench_forward
runs it on its prefill's GEMM shapes).
"""
import argparse
import json
import statistics
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--experts", type=int, default=64)
    p.add_argument("--topk", type=int, default=8)
    p.add_argument("--expert-width", type=int, default=768)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--train-seq", type=int, default=512)
    p.add_argument("--trainable-fraction", type=float, default=0.10)
    p.add_argument("--gen-batch", type=int, default=8)
    p.add_argument("--prompt", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--experts-impl", default="grouped_mm", help="grouped_mm | batched_mm | eager")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-dir", default="")
    p.add_argument("--load-dir", default="")
    p.add_argument("--logits-out", default="")
    p.add_argument("--logits-f32-out", default="", help="also write the logits of the same model run in float32")
    p.add_argument("--json-out", default="")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-generate", action="store_true")
    p.add_argument("--cpu-gemm", default="",
                   help="CPU GEMM peer (issue 17): 'm,n,k;m,n,k;...' products y = x @ w^T (nn.Linear) timed with "
                        "torch's own CPU kernels; prints 'peer cpu_gemm ... gflops=<x>' and exits")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads for --cpu-gemm (0: torch's default)")
    return p.parse_args()


def cpu_gemm(args, torch):
    """Best-of-reps GFLOP/s of torch.nn.functional.linear over the listed shapes, float32, on the CPU."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    shapes = [tuple(int(v) for v in item.split(",")) for item in args.cpu_gemm.split(";") if item]
    g = torch.Generator().manual_seed(args.seed)
    inputs = {}
    for m, n, k in shapes:
        if (m, n, k) not in inputs:
            inputs[(m, n, k)] = (torch.randn(m, k, generator=g), torch.randn(n, k, generator=g))
    flops = sum(2.0 * m * n * k for m, n, k in shapes)
    with torch.no_grad():
        for m, n, k in shapes:  # warm-up
            torch.nn.functional.linear(*inputs[(m, n, k)])
        best = float("inf")
        for _ in range(max(1, args.reps)):
            t0 = time.perf_counter()
            for m, n, k in shapes:
                torch.nn.functional.linear(*inputs[(m, n, k)])
            best = min(best, time.perf_counter() - t0)
    print(f"peer cpu_gemm torch={torch.__version__} threads={torch.get_num_threads()} shapes={len(shapes)} "
          f"gflop={flops / 1e9:.3f} seconds={best:.4f} gflops={flops / best / 1e9:.1f}", flush=True)


def build_model(args, torch, transformers):
    from transformers import AutoModelForCausalLM, Qwen3MoeConfig

    kwargs = {}
    impl_used = "default"
    if args.load_dir:
        try:
            model = AutoModelForCausalLM.from_pretrained(args.load_dir, dtype=torch.bfloat16,
                                                         experts_implementation=args.experts_impl)
            impl_used = args.experts_impl
        except TypeError:
            model = AutoModelForCausalLM.from_pretrained(args.load_dir, dtype=torch.bfloat16)
        return model.cuda().eval(), impl_used
    config = Qwen3MoeConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, head_dim=args.head_dim,
        num_experts=args.experts, num_experts_per_tok=args.topk, moe_intermediate_size=args.expert_width,
        intermediate_size=args.expert_width * 4, decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=True,
        max_position_embeddings=max(4096, args.prompt + args.new_tokens + 8), tie_word_embeddings=False,
        rope_theta=1e6, rms_norm_eps=1e-6)
    torch.manual_seed(args.seed)
    # Built directly on the GPU: random init of ~5e9 parameters on the CPU would take minutes.
    with torch.device("cuda"):
        try:
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16,
                                                     experts_implementation=args.experts_impl)
            impl_used = args.experts_impl
        except TypeError:
            # Older API: set it on the config (transformers 5 reads config._experts_implementation).
            config._experts_implementation = args.experts_impl
            model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
            impl_used = getattr(model.config, "_experts_implementation", "unknown")
    return model.cuda().eval(), impl_used


def save_per_expert(model, args, torch):
    """Writes config.json + model.safetensors with one tensor per expert part
    (model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight), the layout Tessera's loader reads, whether
    this transformers version stores experts fused ([E, 2F, D] gate_up_proj / [E, D, F] down_proj) or not."""
    import os
    from safetensors.torch import save_file

    if args.hidden in (args.expert_width, 2 * args.expert_width):
        # The orientation of the fused expert tensors is read from their shapes below; with hidden equal
        # to the expert width or twice it both orientations have the same shape and the split would be
        # silently wrong (seen: hidden 1024 with width 512 gave transposed experts).
        sys.exit(f"--save-dir: hidden {args.hidden} must differ from the expert width {args.expert_width} "
                 f"and from twice it, so the expert tensors' layout can be told from their shapes")
    os.makedirs(args.save_dir, exist_ok=True)
    model.config.to_json_file(os.path.join(args.save_dir, "config.json"))
    E, F, D = args.experts, args.expert_width, args.hidden
    out = {}
    for name, t in model.state_dict().items():
        t = t.detach().to(torch.bfloat16).contiguous().cpu()
        if name.endswith("mlp.experts.gate_up_proj") or name.endswith("mlp.experts.down_proj"):
            prefix = name.rsplit(".", 1)[0]
            if ".layers.0." in name:
                print(f"peer experts_layout {name.rsplit('.', 1)[1]}={list(t.shape)}", flush=True)
            for e in range(E):
                w = t[e]
                if name.endswith("gate_up_proj"):
                    if w.shape == (D, 2 * F):  # stored as [in, out]
                        w = w.t()
                    gate, up = w[:F], w[F:]
                    out[f"{prefix}.{e}.gate_proj.weight"] = gate.contiguous()
                    out[f"{prefix}.{e}.up_proj.weight"] = up.contiguous()
                else:
                    if w.shape == (F, D):
                        w = w.t()
                    out[f"{prefix}.{e}.down_proj.weight"] = w.contiguous()
        else:
            out[name] = t
    save_file(out, os.path.join(args.save_dir, "model.safetensors"), metadata={"format": "pt"})


def cuda_ms(torch, fn, reps):
    """Median milliseconds of fn() over reps runs, timed with CUDA events after one warm-up run."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def setup_trainable(args, model, torch):
    """Freezes everything, then makes ~trainable_fraction of the (layer, expert) slots trainable."""
    for p in model.parameters():
        p.requires_grad_(False)
    layers = model.model.layers
    total = len(layers) * args.experts
    want = max(1, round(total * args.trainable_fraction))
    gen = torch.Generator().manual_seed(args.seed + 1)
    chosen = sorted(torch.randperm(total, generator=gen)[:want].tolist())
    by_layer = {}
    for s in chosen:
        by_layer.setdefault(s // args.experts, []).append(s % args.experts)
    params = []
    for li, experts in by_layer.items():
        mod = layers[li].mlp.experts
        if isinstance(mod, torch.nn.ModuleList):  # per-expert modules
            for e in experts:
                for p in mod[e].parameters():
                    p.requires_grad_(True)
                    params.append(p)
            continue
        mask = torch.zeros(args.experts, dtype=torch.bool, device="cuda")
        mask[experts] = True
        for name, p in mod.named_parameters():
            if p.dim() >= 1 and p.shape[0] == args.experts:
                p.requires_grad_(True)
                view = (-1,) + (1,) * (p.dim() - 1)
                m = mask.view(view).to(p.dtype)
                p.register_hook(lambda g, m=m: g * m)
                params.append(p)
    return params, want, total


def main():
    args = parse_args()
    import torch
    if args.cpu_gemm:
        cpu_gemm(args, torch)
        return
    import transformers

    if not torch.cuda.is_available():
        print("SKIP: no CUDA device for torch")
        return 0
    model, impl = build_model(args, torch, transformers)
    nparams = sum(p.numel() for p in model.parameters())
    print(f"peer device={torch.cuda.get_device_name(0).replace(' ', '_')} torch={torch.__version__} "
          f"transformers={transformers.__version__} experts_impl={impl} params={nparams}", flush=True)
    if args.save_dir:
        save_per_expert(model, args, torch)
        print(f"peer saved weights to {args.save_dir}", flush=True)
    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
               "transformers": transformers.__version__, "experts_impl": impl}
    g = torch.Generator(device="cuda").manual_seed(args.seed + 2)

    if args.logits_out:
        ids = (torch.arange(64, device="cuda") * 7919 % args.vocab).unsqueeze(0)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].float().cpu().numpy()
        logits.tofile(args.logits_out)
        print(f"peer logits shape={list(logits.shape)} file={args.logits_out}", flush=True)
        if args.logits_f32_out:
            # Same bf16-rounded weights, float32 arithmetic: the tight reference for Tessera's f32 path.
            model.float()
            with torch.no_grad():
                model(input_ids=ids).logits[0].float().cpu().numpy().tofile(args.logits_f32_out)
            model.to(torch.bfloat16)
            print(f"peer logits_f32 file={args.logits_f32_out}", flush=True)

    if not args.skip_train:
        params, ntrain, total = setup_trainable(args, model, torch)
        model.train()
        opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0, fused=True)
        ids = torch.randint(0, args.vocab, (args.train_batch, args.train_seq), device="cuda", generator=g)

        def step():
            out = model(input_ids=ids, labels=ids)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        ms = cuda_ms(torch, step, args.reps)
        tps = args.train_batch * args.train_seq / (ms / 1e3)
        print(f"peer train batch={args.train_batch} seq={args.train_seq} trainable_slots={ntrain}/{total} "
              f"step_ms={ms:.2f} tokens_per_s={tps:.1f}", flush=True)
        results["train"] = {"step_ms": ms, "tokens_per_s": tps, "trainable_slots": ntrain}
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        del opt
        torch.cuda.empty_cache()

    if not args.skip_generate:
        prompt = torch.randint(0, args.vocab, (args.gen_batch, args.prompt), device="cuda", generator=g)

        def prefill():
            with torch.no_grad():
                model(input_ids=prompt, use_cache=True, logits_to_keep=1)

        def generate():
            with torch.no_grad():
                model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                               max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
                               pad_token_id=0)

        pre_ms = cuda_ms(torch, prefill, args.reps)
        gen_ms = cuda_ms(torch, generate, max(1, args.reps // 2))
        dec_ms = max(gen_ms - pre_ms, 1e-6)
        pre_tps = args.gen_batch * args.prompt / (pre_ms / 1e3)
        # generate's first new token comes from the prefill; the remaining new_tokens - 1 are decode steps.
        dec_tps = args.gen_batch * (args.new_tokens - 1) / (dec_ms / 1e3)
        print(f"peer prefill batch={args.gen_batch} prompt={args.prompt} ms={pre_ms:.2f} tokens_per_s={pre_tps:.1f}",
              flush=True)
        print(f"peer decode batch={args.gen_batch} new_tokens={args.new_tokens} ms={dec_ms:.2f} tokens_per_s={dec_tps:.1f}",
              flush=True)
        results["prefill"] = {"ms": pre_ms, "tokens_per_s": pre_tps}
        results["decode"] = {"ms": dec_ms, "tokens_per_s": dec_tps}

    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=1)
    print("peer_summary train_tokens_per_s={:.1f} prefill_tokens_per_s={:.1f} decode_tokens_per_s={:.1f}".format(
        results.get("train", {}).get("tokens_per_s", 0.0), results.get("prefill", {}).get("tokens_per_s", 0.0),
        results.get("decode", {}).get("tokens_per_s", 0.0)), flush=True)
    return 0


if __name__ == "__main__":
    t0 = time.time()
    rc = main()
    print(f"peer wall_s={time.time() - t0:.1f}", file=sys.stderr)
    sys.exit(rc)
