#!/usr/bin/env python3
"""OpenAI compatibility check (run by ops/check-openai.sh): the official `openai` Python client (pinned in
ops/requirements-ops.txt) against tessera-server --http-listen on builtin:tiny.

Starts the server (temp data dir, loopback ports), creates tenant `acme`, and with openai.OpenAI(base_url=
.../v1, api_key=<acme's key>):
  1. models.list() has `acme` (live) and `acme:0` (base);
  2. completions.create (greedy) returns the text `tessera generate` (gRPC) returns for the same request,
     with usage and finish_reason; the X-Tessera-Expert-Version header names version 0;
  3. chat.completions.create, plain and streamed with stream_options.include_usage: the streamed
     deltas join to the plain reply, the last chunk has choices == [] and the usage; completions stream;
  4. errors are the client's typed exceptions: a bad key -> AuthenticationError (401), an unknown model
     -> NotFoundError (404), n=2 and a wrong type -> BadRequestError (400) naming the param;
  5. logprobs as the client parses them: completions `logprobs=3` (tokens, token_logprobs, top_logprobs,
     text_offset; their sum equals `tessera score` (gRPC Score) of prompt+text minus that of the prompt,
     an independent forward pass), the same streamed; chat `logprobs=True, top_logprobs=3` (content with
     token, logprob, bytes, top_logprobs), plain and streamed;
  6. files.create(purpose="fine-tune") of a chat-format JSONL file, files.list;
     fine_tuning.jobs.create (with a suffix, returned as user_provided_suffix; a bad suffix is a
     BadRequestError naming it)/retrieve (polled to "succeeded")/list/list_events; fine_tuned_model is
     `acme:1` and a chat with it is served by version 1.
Prints PASS/FAIL per check and a summary; exit status 1 on any failure.
"""
import argparse
import json
import os
import sys
import time

from tessera_ops import Checks, Server, require_binaries

checks = Checks("check-openai")
check = checks.check


def chat_jsonl(n):
    lines = []
    for i in range(n):
        a, b = (i * 7) % 31, (i * 13) % 29
        lines.append(json.dumps({"messages": [{"role": "user", "content": f"add({a},{b})="},
                                              {"role": "assistant", "content": str(a + b)}]}))
    return ("\n".join(lines) + "\n").encode()


def check_logprobs(client, srv, prompt):
    comp = client.completions.create(model="acme", prompt=prompt, max_tokens=10, temperature=0, logprobs=3)
    lp = comp.choices[0].logprobs
    n = comp.usage.completion_tokens
    check("completions logprobs: one entry per completion token",
          lp is not None and len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) ==
          len(lp.text_offset) == n > 0, str(lp))
    if lp is None or not lp.tokens:
        return
    check("completions logprobs: <= 0, greedy token is the most likely of top_logprobs",
          all(v <= 0 for v in lp.token_logprobs) and
          all(3 <= len(top) <= 4 and top[t] == v and max(top.values()) == v
              for t, v, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs)), str(lp.top_logprobs[:2]))
    text = comp.choices[0].text
    if not any(t.startswith("bytes:") for t in lp.tokens):
        check("completions logprobs: tokens join to the text, text_offset where each starts",
              "".join(lp.tokens) == text and
              lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(len(lp.tokens))], str(lp.tokens))
        # builtin:tiny's vocabulary is bytes: prompt+text tokenizes as prompt's tokens then the completion's.
        full = json.loads(srv.tessera("--json", "score", prompt + text))
        head = json.loads(srv.tessera("--json", "score", prompt))
        want = full["total_logprob"] - head["total_logprob"]
        got = sum(lp.token_logprobs)
        check("completions logprobs: sum equals gRPC Score(prompt+text) - Score(prompt)",
              abs(got - want) < 1e-3 * max(1.0, abs(want)), f"{got} vs {want}")
    streamed = []
    for c in client.completions.create(model="acme", prompt=prompt, max_tokens=10, temperature=0, logprobs=3,
                                       stream=True):
        if c.choices and c.choices[0].logprobs is not None:
            clp = c.choices[0].logprobs
            streamed += list(zip(clp.tokens, clp.token_logprobs, clp.text_offset))
    check("completions logprobs streamed: the same entries",
          streamed == list(zip(lp.tokens, lp.token_logprobs, lp.text_offset)), f"{streamed[:3]} vs {lp.tokens[:3]}")

    messages = [{"role": "user", "content": "Say hello."}]
    chat = client.chat.completions.create(model="acme", messages=messages, max_tokens=8, temperature=0,
                                          logprobs=True, top_logprobs=3)
    content = chat.choices[0].logprobs.content if chat.choices[0].logprobs else None
    check("chat logprobs: content per token with bytes and 3 top_logprobs",
          content is not None and len(content) == chat.usage.completion_tokens and
          all(len(t.top_logprobs) == 3 and t.logprob <= 0 and isinstance(t.bytes, list) and
              t.top_logprobs[0].logprob == t.logprob for t in content), str(content[:1] if content else content))
    streamed = []
    for c in client.chat.completions.create(model="acme", messages=messages, max_tokens=8, temperature=0,
                                           logprobs=True, top_logprobs=3, stream=True):
        if c.choices and c.choices[0].logprobs is not None:
            streamed += [(t.token, t.logprob) for t in c.choices[0].logprobs.content or []]
    check("chat logprobs streamed: the same entries",
          content is not None and streamed == [(t.token, t.logprob) for t in content], str(streamed[:3]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("build_dir")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--job-timeout", type=int, default=600)
    args = ap.parse_args()
    bin_dir = os.path.join(os.path.abspath(args.build_dir), "services")
    require_binaries(bin_dir, ("tessera-server", "tessera-admin", "tessera"), "check-openai")
    import openai
    print(f"openai {openai.__version__}", flush=True)

    with Server(bin_dir, "builtin:tiny", "check-openai", keep=args.keep, prefix="tessera-openai-check.",
                extra_args=["--http-listen", "127.0.0.1:0"]) as srv:
        if not check("server prints its HTTP API port", srv.http_port is not None, srv.startup):
            return checks.summary()
        base_url = f"http://127.0.0.1:{srv.http_port}/v1"
        client = openai.OpenAI(base_url=base_url, api_key=srv.tenant_key, max_retries=0, timeout=300)

        ids = [m.id for m in client.models.list()]
        check("models.list has acme and acme:0", "acme" in ids and "acme:0" in ids, str(ids))

        prompt = "The quick brown fox"
        raw = client.completions.with_raw_response.create(model="acme", prompt=prompt, max_tokens=12,
                                                           temperature=0)
        comp = raw.parse()
        grpc = json.loads(srv.tessera("--json", "generate", prompt, "--max-tokens", "12", "--temperature", "0"))
        check("completions text equals gRPC Generate", comp.choices[0].text == grpc.get("text", ""),
              f"{comp.choices[0].text!r} vs {grpc.get('text')!r}")
        check("completions usage and finish_reason",
              comp.usage.total_tokens == comp.usage.prompt_tokens + comp.usage.completion_tokens > 0 and
              comp.choices[0].finish_reason in ("stop", "length"), str(comp.usage))
        check("X-Tessera-Expert-Version header", raw.headers.get("x-tessera-expert-version") == "0",
              str(raw.headers.get("x-tessera-expert-version")))

        messages = [{"role": "user", "content": "Say hello."}]
        chat = client.chat.completions.create(model="acme", messages=messages, max_tokens=16, temperature=0)
        reply = chat.choices[0].message.content
        check("chat.completions plain", chat.choices[0].message.role == "assistant" and isinstance(reply, str) and
              chat.choices[0].finish_reason in ("stop", "length"), repr(reply))
        chunks = list(client.chat.completions.create(model="acme", messages=messages, max_tokens=16,
                                                     temperature=0, stream=True,
                                                     stream_options={"include_usage": True}))
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        check("chat stream joins to the plain reply", streamed == reply, f"{streamed!r} vs {reply!r}")
        last = chunks[-1] if chunks else None
        check("chat stream include_usage: last chunk has choices [] and usage",
              last is not None and last.choices == [] and last.usage is not None and
              last.usage.total_tokens == chat.usage.total_tokens, str(last))
        ctext = "".join(c.choices[0].text for c in client.completions.create(
            model="acme", prompt=prompt, max_tokens=12, temperature=0, stream=True) if c.choices)
        check("completions stream joins to the plain text", ctext == comp.choices[0].text, repr(ctext))

        check_logprobs(client, srv, prompt)

        bad = openai.OpenAI(base_url=base_url, api_key="tsk_wrong", max_retries=0)
        try:
            bad.models.list()
            check("bad key -> AuthenticationError", False, "no error")
        except openai.AuthenticationError as e:
            check("bad key -> AuthenticationError", e.status_code == 401)
        try:
            client.completions.create(model="nobody", prompt="x", max_tokens=2)
            check("unknown model -> NotFoundError", False, "no error")
        except openai.NotFoundError as e:
            check("unknown model -> NotFoundError", e.code == "model_not_found", str(e))
        for what, kwargs, param in [("n=2", {"n": 2}, "n"), ("max_tokens a string", {"max_tokens": "x"}, "max_tokens")]:
            try:
                client.completions.create(model="acme", prompt="x", **({"max_tokens": 2} | kwargs))
                check(f"{what} -> BadRequestError", False, "no error")
            except openai.BadRequestError as e:
                check(f"{what} -> BadRequestError naming {param}", e.param == param, str(e))

        f = client.files.create(file=("train.jsonl", chat_jsonl(40)), purpose="fine-tune")
        check("files.create", f.id.startswith("ds_") and f.purpose == "fine-tune" and f.bytes > 0, str(f))
        check("files.list has it", f.id in [x.id for x in client.files.list()])
        try:
            client.fine_tuning.jobs.create(model="acme", training_file=f.id, suffix="no spaces!")
            check("bad suffix -> BadRequestError", False, "no error")
        except openai.BadRequestError as e:
            check("bad suffix -> BadRequestError naming suffix", e.param == "suffix", str(e))
        job = client.fine_tuning.jobs.create(model="acme", training_file=f.id, seed=1, suffix="check-openai_1",
                                             hyperparameters={"n_epochs": 1, "batch_size": 4})
        check("fine_tuning.jobs.create", job.status in ("queued", "running") and job.training_file == f.id,
              str(job))
        check("the suffix is stored: user_provided_suffix",
              getattr(job, "user_provided_suffix", None) == "check-openai_1" and
              getattr(client.fine_tuning.jobs.retrieve(job.id), "user_provided_suffix", None) == "check-openai_1",
              str(getattr(job, "user_provided_suffix", None)))
        deadline = time.time() + args.job_timeout
        while job.status not in ("succeeded", "failed", "cancelled") and time.time() < deadline:
            time.sleep(0.5)
            job = client.fine_tuning.jobs.retrieve(job.id)
        check("job succeeded", job.status == "succeeded", f"{job.status} {job.error}")
        check("fine_tuned_model is acme:1", job.fine_tuned_model == "acme:1", str(job.fine_tuned_model))
        events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
        check("list_events has metrics and the final state",
              any(e.type == "metrics" for e in events) and events and events[0].message == "Job succeeded",
              str([e.message for e in events[:3]]))
        check("jobs.list has it", job.id in [j.id for j in client.fine_tuning.jobs.list()])
        if job.fine_tuned_model:
            tuned = client.chat.completions.with_raw_response.create(
                model=job.fine_tuned_model, messages=[{"role": "user", "content": "add(3,4)="}], max_tokens=4,
                temperature=0)
            check("chat with the fine-tuned model is served by version 1",
                  tuned.headers.get("x-tessera-expert-version") == "1" and
                  isinstance(tuned.parse().choices[0].message.content, str))
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
