#!/usr/bin/env python3
"""Export compatibility check (run by ops/check-export.sh): a version exported by Tessera is a plain
Hugging Face checkpoint whose greedy output equals Tessera's for that tenant and version.

Starts tessera-server on builtin:tiny (temp data dir, loopback port), creates a tenant, fine-tunes a few
steps on explicit expert slots (auto-promote), exports the version with `tessera versions export`
(small shards, so the index path is exercised) and with --overlay-only, then:
  1. transformers.AutoModelForCausalLM.from_pretrained(DIR) loads it, and greedy generate() of each
     prompt (ids = [BOS=256] + the prompt's bytes, as Tessera's byte tokenizer does; the exported
     generation_config.json carries the ids Tessera never samples) equals `tessera generate --version N`;
  2. the export's expert tensors of the trained slots differ from the backbone's, every other tensor is
     bitwise the backbone's, and the overlay-only export holds exactly the trained slots;
  3. `tessera score --version N` equals transformers' log-likelihood of the same text;
  4. the base (version 0) greedy output differs on at least one prompt (the merge is not a no-op).
Prints PASS/FAIL per check and a summary; exit status 1 on any failure.
"""
import argparse
import json
import os
import sys

from tessera_ops import Checks, Server, require_binaries, run

BOS, EOS = 256, 257
SLOTS = [(0, 1), (1, 3), (2, 5), (3, 7)]
MAX_TOKENS = 12

checks = Checks("check-export")
check = checks.check


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("build_dir")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bin_dir = os.path.join(os.path.abspath(args.build_dir), "services")
    require_binaries(bin_dir, ("tessera-server", "tessera-admin", "tessera", "tessera-datagen"), "check-export")
    import torch
    import transformers
    from safetensors.torch import load_file
    print(f"transformers {transformers.__version__}, torch {torch.__version__}", flush=True)

    with Server(bin_dir, "builtin:tiny", "check-export", keep=args.keep, prefix="tessera-export-check.") as srv:
        work, admin = srv.work, srv.admin
        tessera = lambda *a, **kw: srv.tessera(*a)
        datagen = os.path.join(bin_dir, "tessera-datagen")
        train = os.path.join(work, "train.jsonl")
        with open(train, "w") as f:
            f.write(run([datagen, "--task", "cipher", "--secret", "11", "--count", "400", "--seed", "1"]))
        prompts = [json.loads(l)["prompt"] for l in
                   run([datagen, "--task", "cipher", "--secret", "11", "--count", "6", "--seed", "777"]).splitlines()]
        prompts += ["Hello, world", "x"]
        ds = json.loads(tessera("--json", "datasets", "upload", train))["dataset_id"]
        slots = ",".join(f"{l}.{e}" for l, e in SLOTS)
        job = json.loads(tessera("--json", "jobs", "create", "--dataset", ds, "--max-steps", str(args.steps),
                                 "--batch-size", "8", "--seq-len", "32", "--learning-rate", "0.003",
                                 "--slots", slots, "--auto-promote"))
        job = srv.wait_job(job["job_id"])
        if not check("fine-tune job succeeded", job["state"] == "SUCCEEDED", job.get("error", "")):
            return
        version = int(job["result_version"])
        print(f"version {version} (promoted: {job.get('promoted', False)}), slots {slots}", flush=True)
        info = json.loads(tessera("--json", "versions", "list"))
        v = next(x for x in info["versions"] if int(x["version"]) == version)
        status = json.loads(admin("--json", "status"))
        backbone_sha = status.get("backbone", {}).get("sha256", "")
        check("the version records the server's backbone sha256",
              v.get("backbone_sha256") and v.get("backbone_sha256") == backbone_sha,
              f"{v.get('backbone_sha256')} vs {backbone_sha}")

        full = os.path.join(work, "export")
        print(tessera("versions", "export", "--version", str(version), "--out", full,
                      "--max-shard-bytes", "3000000"), end="", flush=True)
        overlay_dir = os.path.join(work, "overlay")
        tessera("versions", "export", "--version", str(version), "--out", overlay_dir, "--overlay-only")
        check("the full export is sharded with an index", os.path.exists(os.path.join(full, "model.safetensors.index.json")))

        # 2. Tensors: trained slots differ from the backbone, everything else is bitwise the backbone's.
        base = load_file(os.path.join(repo, "ops", "backbones", "builtin-tiny", "model.safetensors"))
        index = json.load(open(os.path.join(full, "model.safetensors.index.json")))
        merged = {}
        for shard in sorted(set(index["weight_map"].values())):
            merged.update(load_file(os.path.join(full, shard)))
        slot_names = {f"model.layers.{l}.mlp.experts.{e}.{p}_proj.weight" for l, e in SLOTS for p in ("gate", "up", "down")}
        check("the export holds exactly the backbone's tensor names", set(merged) == set(base),
              f"{len(merged)} vs {len(base)}")
        changed = {n for n in base if n in merged and not torch.equal(base[n], merged[n])}
        check("exactly the trained slots' expert tensors differ from the backbone", changed == slot_names,
              f"changed {sorted(changed)[:4]}...")
        manifest = json.load(open(os.path.join(overlay_dir, "manifest.json")))
        overlay = load_file(os.path.join(overlay_dir, "overlay.safetensors"))
        check("overlay-only export: the trained slots, equal to the merged tensors, and a manifest",
              set(overlay) == slot_names and all(torch.equal(overlay[n], merged[n]) for n in slot_names)
              and manifest["version"] == version and manifest["backbone_sha256"] == backbone_sha
              and sorted((s["layer"], s["expert"]) for s in manifest["slots"]) == SLOTS)

        # 1. transformers loads it; greedy output equals Tessera's for that tenant and version.
        model = transformers.AutoModelForCausalLM.from_pretrained(full, dtype=torch.float32)
        model.eval()
        check("transformers loads the export", True, type(model).__name__)

        def hf_greedy(m, prompt):
            ids = torch.tensor([[BOS] + list(prompt.encode("utf-8"))])
            with torch.no_grad():
                out = m.generate(ids, max_new_tokens=MAX_TOKENS, do_sample=False,
                                 attention_mask=torch.ones_like(ids))
            new = out[0, ids.shape[1]:].tolist()
            if EOS in new:
                new = new[:new.index(EOS)]
            return bytes(new)

        def tessera_greedy(prompt, ver):
            r = json.loads(tessera("--json", "generate", prompt, "--version", str(ver), "--max-tokens", str(MAX_TOKENS)))
            return r["text"].encode("utf-8"), int(r.get("expert_version", 0))

        same = 0
        for p in prompts:
            hf = hf_greedy(model, p)
            ts, served = tessera_greedy(p, version)
            ok = hf == ts and served == version
            same += ok
            print(f"  {'==' if ok else '!='} {p!r}: tessera {ts!r}  transformers {hf!r}", flush=True)
        check(f"greedy output equals Tessera's on every prompt (version {version})", same == len(prompts),
              f"{same}/{len(prompts)}")

        # Score: transformers' log-likelihood of each text (every token after BOS) equals Tessera's.
        worst = 0.0
        for p in prompts:
            ids = torch.tensor([[BOS] + list(p.encode("utf-8"))])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0, :-1].double(), dim=-1)
            hf = logp.gather(1, ids[0, 1:, None]).sum().item()
            ts = float(json.loads(tessera("--json", "score", p, "--version", str(version)))["total_logprob"])
            worst = max(worst, abs(hf - ts) / max(1.0, abs(hf)))
        check("Score equals transformers' log-likelihood (relative error <= 1e-4)", worst <= 1e-4, f"worst {worst:.2e}")

        # 3. The base decodes differently somewhere (so the comparison above saw the tenant's experts).
        differs = sum(tessera_greedy(p, 0)[0] != tessera_greedy(p, version)[0] for p in prompts)
        check("the version's answers differ from the base's on some prompt", differs > 0, f"{differs}/{len(prompts)}")
    return checks.summary()


if __name__ == "__main__":
    try:
        rc = main()
    except Exception as e:  # a failed step is a failed check, with its message
        print(f"FAIL  {e}")
        rc = checks.summary() or 1
    sys.exit(rc)
