#!/usr/bin/env python3
"""Real-checkpoint check (run by ops/check-real-checkpoint.sh): a Hugging Face checkpoint directory served,
chatted with, fine-tuned on a chat dataset and exported by Tessera, compared with transformers.

Serves tests/fixtures/checkpoints/qwen3_moe_chat (a Qwen3-MoE with its own tokenizer.json and ChatML chat
template; or --checkpoint DIR), creates a tenant, uploads a {"messages": [...]} dataset, fine-tunes a few
steps on explicit slots, exports the version, and checks with the real outside clients:
  1. transformers' AutoTokenizer + AutoModelForCausalLM load the export directory (tokenizer files,
     chat template, sharded weights) and, for each conversation, apply_chat_template(...,
     add_generation_prompt=True) + greedy generate() (stopping at generation_config's eos ids) decodes to
     the text `tessera generate --messages ... --version N` returns;
  2. `tessera score --messages` equals transformers' log-likelihood of the rendered conversation, and
     `tessera score TEXT` that of tokenizer(TEXT) (every token after the first);
  3. the version answers differently from the base on some conversation.
Prints PASS/FAIL per check and a summary; exit status 1 on any failure.
"""
import argparse
import json
import os
import sys

from tessera_ops import Checks, Server, require_binaries

MAX_TOKENS = 10
checks = Checks("check-real-checkpoint")
check = checks.check


WORDS = ["model", "expert", "tenant", "router", "layer", "token", "weight", "serve", "data", "train"]


def chat_dataset(n):
    lines = []
    for i in range(n):
        a, b, c = WORDS[i % 10], WORDS[(3 * i + 1) % 10], WORDS[(7 * i + 2) % 10]
        lines.append(json.dumps({"messages": [
            {"role": "system", "content": "You reverse word lists."},
            {"role": "user", "content": f"Reverse: {a} {b} {c}"},
            {"role": "assistant", "content": f"{c} {b} {a}"}]}))
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("build_dir")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ckpt = args.checkpoint or os.path.join(repo, "tests", "fixtures", "checkpoints", "qwen3_moe_chat")
    bin_dir = os.path.join(os.path.abspath(args.build_dir), "services")
    require_binaries(bin_dir, ("tessera-server", "tessera-admin", "tessera"), "check-real-checkpoint")
    import torch
    import transformers
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, checkpoint {ckpt}", flush=True)

    with Server(bin_dir, ckpt, "check-real-checkpoint", keep=args.keep, prefix="tessera-ckpt-check.") as srv:
        print(srv.startup, flush=True)
        work, tessera = srv.work, srv.tessera
        train = os.path.join(work, "train.jsonl")
        with open(train, "w") as f:
            f.write(chat_dataset(60))
        ds = json.loads(tessera("--json", "datasets", "upload", train))
        check("a chat dataset uploads", int(ds["num_examples"]) == 60, f"{ds['num_examples']} examples")
        job = json.loads(tessera("--json", "jobs", "create", "--dataset", ds["dataset_id"], "--max-steps",
                                 str(args.steps), "--batch-size", "8", "--seq-len", "64", "--learning-rate", "0.005",
                                 "--slots", "0.1,0.3,1.2,1.5"))
        job = srv.wait_job(job["job_id"])
        if not check("fine-tune job on the chat dataset succeeded", job["state"] == "SUCCEEDED", job.get("error", "")):
            return 1
        version = int(job["result_version"])
        export = os.path.join(work, "export")
        print(tessera("versions", "export", "--version", str(version), "--out", export), end="", flush=True)

        tok = transformers.AutoTokenizer.from_pretrained(export)
        model = transformers.AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32).eval()
        check("transformers loads the exported checkpoint and its tokenizer", True,
              f"{type(model).__name__}, {type(tok).__name__}, chat template {'yes' if tok.chat_template else 'no'}")
        eos = model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])

        convs = [
            [{"role": "system", "content": "You reverse word lists."}, {"role": "user", "content": "Reverse: data model serve"}],
            [{"role": "user", "content": "Reverse: token layer"}],
            [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hi"},
             {"role": "user", "content": "Reverse: expert weight train"}],
        ]

        def hf_greedy(msgs):
            ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
            out = []
            with torch.no_grad():
                cur = ids
                for _ in range(MAX_TOKENS):
                    t = int(model(input_ids=cur).logits[0, -1].argmax())
                    if t in eos:
                        break
                    out.append(t)
                    cur = torch.cat([cur, torch.tensor([[t]])], dim=1)
            return tok.decode(out, skip_special_tokens=True)

        def ts_generate(msgs, ver):
            r = json.loads(tessera("--json", "generate", "--messages", json.dumps(msgs), "--version", str(ver),
                                   "--max-tokens", str(MAX_TOKENS)))
            return r.get("text", "")

        same = 0
        for m in convs:
            hf, ts = hf_greedy(m), ts_generate(m, version)
            ok = hf == ts
            same += ok
            print(f"  {'==' if ok else '!='} {m[-1]['content']!r}: tessera {ts!r}  transformers {hf!r}", flush=True)
        check(f"chat greedy output equals transformers' on the export (version {version})", same == len(convs),
              f"{same}/{len(convs)}")

        worst = 0.0
        for m in convs:
            ids = tok.apply_chat_template(m, return_tensors="pt", return_dict=True)["input_ids"]
            with torch.no_grad():
                lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
            hf = lp.gather(1, ids[0, 1:, None]).sum().item()
            ts = float(json.loads(tessera("--json", "score", "--messages", json.dumps(m), "--version",
                                          str(version)))["total_logprob"])
            worst = max(worst, abs(hf - ts) / max(1.0, abs(hf)))
        for text in ["Reverse: a b c", "café naïve 123!"]:
            ids = tok(text, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
            hf = lp.gather(1, ids[0, 1:, None]).sum().item()
            ts = float(json.loads(tessera("--json", "score", text, "--version", str(version)))["total_logprob"])
            worst = max(worst, abs(hf - ts) / max(1.0, abs(hf)))
        check("Score (messages and text) equals transformers' log-likelihood (relative error <= 1e-4)",
              worst <= 1e-4, f"worst {worst:.2e}")
        differs = sum(ts_generate(m, 0) != ts_generate(m, version) for m in convs)
        check("the version answers differently from the base on some conversation", differs > 0,
              f"{differs}/{len(convs)}")
    return checks.summary()


if __name__ == "__main__":
    try:
        rc = main()
    except Exception as e:  # a failed step is a failed check, with its message
        print(f"FAIL  {e}")
        rc = checks.summary() or 1
    sys.exit(rc)
