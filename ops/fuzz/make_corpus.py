#!/usr/bin/env python3
"""Writes the committed seed corpora of the libFuzzer targets (ops/fuzz/corpus/<target>/) from the test
fixtures and hand-written inputs. Deterministic; standard library only. Run from anywhere:
    python3 ops/fuzz/make_corpus.py
Each seed is small (KBs): libFuzzer grows its own corpus from these at run time (build-fuzz/corpus/)."""
import hashlib
import json
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "ops", "fuzz", "corpus")
FIX = os.path.join(ROOT, "tests", "fixtures")


def read(*parts):
    with open(os.path.join(FIX, *parts), "rb") as f:
        return f.read()


def write(target, data, name=None):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    name = name or hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None, pad=True):
    header, blob = {}, b""
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + blob


def seeds_safetensors():
    f32 = struct.pack("<6f", 1.0, -2.5, 0.0, 3.25, 1e-8, -0.0)
    write("safetensors_fuzz", safetensors({"w": ("F32", [2, 3], f32)}, {"format": "pt"}), "f32_2x3")
    write("safetensors_fuzz", safetensors({"h": ("F16", [4], struct.pack("<4H", 0x3C00, 0xC000, 0x7C00, 0x0001)),
                                           "b": ("BF16", [2, 2], struct.pack("<4H", 0x3F80, 0xBF80, 0x7F80, 0x0001))}),
          "f16_bf16")
    write("safetensors_fuzz", safetensors({"i": ("I32", [3], struct.pack("<3i", 1, -1, 7)),
                                           "s": ("F32", [], struct.pack("<f", 2.0)),
                                           "e": ("F32", [0, 4], b"")}), "i32_scalar_empty")
    write("safetensors_fuzz", safetensors({"a": ("F32", [1], struct.pack("<f", 1)),
                                           "b": ("F32", [1], struct.pack("<f", 2))}, pad=False), "unpadded")
    write("safetensors_fuzz", struct.pack("<Q", 2) + b"{}", "empty_header")


def seeds_config():
    for d in sorted(os.listdir(os.path.join(FIX, "hf"))):
        p = os.path.join(FIX, "hf", d, "config.json")
        if os.path.exists(p):
            write("config_fuzz", read("hf", d, "config.json"), d)
    write("config_fuzz", read("checkpoints", "qwen3_moe_chat", "config.json"), "qwen3_moe_chat")


def seeds_tokenizer():
    texts = ["Hello, world! 123 café", "  leading spaces\tand\ttabs\n\nnewlines", "日本語のテキスト 🤗",
             "<|im_end|> special <s></s> [UNK]", "\xff\xfe invalid utf8 \xc3", "don't I'm we'll 3.14159"]
    names = ["gpt2_bytelevel", "llama2_sentencepiece", "mistral_metaspace", "nfkc_lowercase_wordlike",
             "split_behaviours", "qwen2_bytelevel", "unseen2_deepseek_style", "llama3_bytelevel"]
    for i, name in enumerate(names):
        for j, t in enumerate(texts[:3] if i else texts):
            raw = t.encode("latin-1") if "\xff" in t else t.encode()
            write("tokenizer_fuzz", bytes([0x40 + i]) + raw, "text_%s_%d" % (name, j))
    # tokenizer.json forms: small ones as they are, with a text after the NUL.
    for name in ["digits_punct_bytelevel", "mistral_metaspace", "split_behaviours"]:
        write("tokenizer_fuzz", read("tokenizers", name, "tokenizer.json") + b"\0Hello world 42!", "json_" + name)
    tiny_bpe = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 5, "content": "<eos>", "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True}],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<eos>", "type_id": 0}},
                                                                    {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<eos>": {"id": "<eos>", "ids": [5], "tokens": ["<eos>"]}}},
        "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": {"<unk>": 0, "\u2581": 1, "a": 2, "b": 3, "\u2581a": 4, "<eos>": 5, "<0x41>": 6},
                  "merges": ["\u2581 a"]}}
    write("tokenizer_fuzz", json.dumps(tiny_bpe).encode() + b"\0a b ab A", "json_tiny_bpe_metaspace")


def seeds_jsonl():
    plain = ('{"prompt": "add(1,2)=", "completion": "3"}\n{"text": "hello world"}\n\n'
             '{"prompt": "q", "completion": "a"}\r\n')
    chat = ('{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, '
            '{"role": "assistant", "content": "Hello"}]}\n'
            '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 0}, '
            '{"role": "user", "content": "z"}, {"role": "assistant", "content": "w"}]}\n')
    for b in (0, 1):
        write("jsonl_fuzz", bytes([b]) + plain.encode(), "plain_%d" % b)
        write("jsonl_fuzz", bytes([b]) + chat.encode(), "chat_%d" % b)
    write("jsonl_fuzz", b"\0" + '{"text": "caf\u00e9 \\u00e9 \\ud83e\\udd17"}\n'.encode(), "unicode")
    write("jsonl_fuzz", b"\0" + b'{"prompt": "a", "text": "b"}\n', "both_fields")


def seeds_chat_template():
    msgs = json.dumps([{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"},
                       {"role": "assistant", "content": "Yo", "reasoning_content": "think"},
                       {"role": "user", "content": "again"}])
    for name in ["constructs", "granite", "qwen3"]:
        write("chat_template_fuzz", read("chat", name, "chat_template.jinja") + b"\0" + msgs.encode() +
              b'\0{"enable_thinking": false}', name)
    with open(os.path.join(FIX, "chat", "jinja_cases.jsonl")) as f:
        for i, line in enumerate(f):
            case = json.loads(line)
            write("chat_template_fuzz", case["template"].encode() + b"\0\0" +
                  json.dumps(case.get("vars", {})).encode(), "jinja_case_%02d" % i)


def seeds_http():
    reqs = {
        "models": "GET /v1/models\nAuthorization: Bearer $ACME\n\n",
        "model": "GET /v1/models/acme\nAuthorization: Bearer $ACME\n\n",
        "completion": 'POST /v1/completions\nAuthorization: Bearer $ACME\nContent-Type: application/json\n\n'
                      '{"model": "acme", "prompt": "add(1,2)=", "max_tokens": 4, "temperature": 0, "stop": ["\\n"]}',
        "completion_stream": 'POST /v1/completions\nAuthorization: Bearer $ACME\n\n'
                             '{"model": "acme:1", "prompt": ["a"], "stream": true, "stream_options": {"include_usage": true}}',
        "chat": 'POST /v1/chat/completions\nAuthorization: Bearer $ACME\n\n'
                '{"model": "acme", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 8,'
                ' "top_p": 0.9, "top_k": 5, "seed": 7, "n": 1}',
        "files_upload": 'POST /v1/files\nAuthorization: Bearer $ACME\nContent-Type: multipart/form-data; boundary=XX\n\n'
                        '--XX\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
                        '--XX\r\nContent-Disposition: form-data; name="file"; filename="d.jsonl"\r\n'
                        'Content-Type: application/jsonl\r\n\r\n{"text": "hello"}\n\r\n--XX--\r\n',
        "files_list": "GET /v1/files?purpose=fine-tune&limit=2\nAuthorization: Bearer $ACME\n\n",
        "file_get": "GET /v1/files/$DATASET\nAuthorization: Bearer $ACME\n\n",
        "file_content": "GET /v1/files/$DATASET/content\nAuthorization: Bearer $ACME\n\n",
        "file_delete": "DELETE /v1/files/ds_absent\nAuthorization: Bearer $OTHER\n\n",
        "ft_create": 'POST /v1/fine_tuning/jobs\nAuthorization: Bearer $ACME\n\n'
                     '{"model": "acme", "training_file": "$DATASET", "hyperparameters": {"n_epochs": 2, '
                     '"batch_size": 4, "learning_rate_multiplier": 1.5}, "suffix": "x", "seed": 3}',
        "ft_list": "GET /v1/fine_tuning/jobs?limit=5&after=$JOB\nAuthorization: Bearer $ACME\n\n",
        "ft_get": "GET /v1/fine_tuning/jobs/$JOB\nAuthorization: Bearer $ACME\n\n",
        "ft_events": "GET /v1/fine_tuning/jobs/$JOB/events?limit=3\nAuthorization: Bearer $ACME\n\n",
        "ft_cancel": "POST /v1/fine_tuning/jobs/$JOB/cancel\nAuthorization: Bearer $OTHER\n\n",
        "console_me": "GET /console/api/me\nAuthorization: Bearer $ADMIN\n\n",
        "console_tenants": "GET /console/api/tenants\nAuthorization: Bearer $ADMIN\n\n",
        "console_tenant": "GET /console/api/tenants/acme\nAuthorization: Bearer $ACME\n\n",
        "console_promote": 'POST /console/api/tenants/acme/promote\nAuthorization: Bearer $ADMIN\n\n{"version": 1}',
        "console_rollback": 'POST /console/api/tenants/acme/rollback\nAuthorization: Bearer $ADMIN\n\n{}',
        "console_jobs": "GET /console/api/tenants/acme/jobs\nAuthorization: Bearer $ACME\n\n",
        "console_curve": "GET /console/api/tenants/acme/jobs/$JOB/curve\nAuthorization: Bearer $ACME\n\n",
        "console_experts": "GET /console/api/tenants/acme/experts?version=1\nAuthorization: Bearer $ACME\n\n",
        "console_page": "GET /console\n\n",
        "root": "GET /\n\n",
        "unknown": "PUT /v2/unknown\nAuthorization: Bearer nope\n\n",
        "chunked": 'POST /v1/completions\nAuthorization: Bearer $ACME\nTransfer-Encoding: chunked\n\n'
                   '5\r\n{"mod\r\n0\r\n\r\n',
    }
    for name, r in reqs.items():
        write("http_fuzz", r, name)


def seeds_grpc():
    reqs = {
        "generate": 'Inference/Generate $ACME\ntenant_id: "acme" prompt: "add(1,2)=" max_tokens: 4 temperature: 0.5 '
                    'top_p: 0.9 top_k: 3 stop: "\\n" seed: 1 version: 1',
        "generate_chat": 'Inference/Generate $ACME\ntenant_id: "acme" messages { role: "user" content: "hi" } '
                         'return_routing: true',
        "generate_stream": 'Inference/GenerateStream $ACME\ntenant_id: "acme" prompt: "x"',
        "generate_logprobs": 'Inference/Generate $ACME\ntenant_id: "acme" prompt: "x" logprobs: true top_logprobs: 5',
        "backup": 'Admin/Backup $ADMIN\n',
        "backup_denied": 'Admin/Backup $ACME\n',
        "score": 'Inference/Score $ACME\ntenant_id: "acme" text: "hello"',
        "upload": 'Datasets/UploadDataset $ACME\ntenant_id: "acme" name: "d" format: "jsonl"\n---\n'
                  'chunk: "{\\"text\\": \\"hi\\"}\\n"\n---\nchunk: "{\\"prompt\\": \\"a\\", \\"completion\\": \\"b\\"}\\n"',
        "get_dataset": 'Datasets/GetDataset $ACME\ntenant_id: "acme" dataset_id: "$DATASET"',
        "list_datasets": 'Datasets/ListDatasets $ACME\ntenant_id: "acme"',
        "delete_dataset": 'Datasets/DeleteDataset $OTHER\ntenant_id: "acme" dataset_id: "ds_absent"',
        "delete_dataset_own": 'Datasets/DeleteDataset $ACME\ntenant_id: "acme" dataset_id: "ds_absent"',
        "create_job": 'FineTuning/CreateJob $ACME\ntenant_id: "acme" training_dataset_id: "$DATASET" '
                      'hyperparameters { max_steps: 10 batch_size: 2 seq_len: 64 learning_rate: 0.001 } '
                      'expert_selection { auto { relevance_threshold: 0.5 max_experts: 2 } } idempotency_key: "k"',
        "create_job_explicit": 'FineTuning/CreateJob $ACME\ntenant_id: "acme" training_dataset_id: "$DATASET" '
                               'expert_selection { explicit { slots { layer: 0 expert: 3 } } } method: "lora" lora_rank: 4',
        "get_job": 'FineTuning/GetJob $ACME\ntenant_id: "acme" job_id: "$JOB"',
        "list_jobs": 'FineTuning/ListJobs $ACME\ntenant_id: "acme"',
        "cancel_job": 'FineTuning/CancelJob $OTHER\ntenant_id: "acme" job_id: "job_absent"',
        "cancel_job_own": 'FineTuning/CancelJob $ACME\ntenant_id: "acme" job_id: "job_absent"',
        "watch_job": 'FineTuning/WatchJob $ACME\ntenant_id: "acme" job_id: "$JOB"',
        "list_versions": 'Experts/ListVersions $ACME\ntenant_id: "acme"',
        "get_version": 'Experts/GetVersion $ACME\ntenant_id: "acme" version: 1',
        "export_version": 'Experts/ExportVersion $ACME\ntenant_id: "acme" version: 1',
        "create_tenant": 'Admin/CreateTenant $ADMIN\ntenant_id: "new-tenant" display_name: "New"',
        "list_tenants": 'Admin/ListTenants $ADMIN\n',
        "issue_key": 'Admin/IssueApiKey $ADMIN\ntenant_id: "acme"',
        "revoke_key": 'Admin/RevokeApiKey $ADMIN\nkey_id: "key_absent"',
        "list_keys": 'Admin/ListApiKeys $ADMIN\n',
        "admin_versions": 'Admin/ListVersions $ADMIN\ntenant_id: "acme"',
        "promote": 'Admin/Promote $ADMIN\ntenant_id: "acme" version: 1',
        "rollback": 'Admin/Rollback $ADMIN\ntenant_id: "acme"',
        "status": 'Admin/GetRuntimeStatus $ADMIN\n',
        "admin_jobs": 'Admin/ListJobs $ADMIN\n',
        "admin_cancel": 'Admin/CancelJob $ADMIN\njob_id: "job_absent"',
        "audit": 'Admin/ListAuditEvents $ADMIN\n',
        "delete_tenant": 'Admin/DeleteTenant $ADMIN\ntenant_id: "absent"',
        "no_key": 'Inference/Generate -\ntenant_id: "acme" prompt: "x"',
    }
    for name, r in reqs.items():
        write("grpc_fuzz", r, name)


if __name__ == "__main__":
    seeds_safetensors()
    seeds_config()
    seeds_tokenizer()
    seeds_jsonl()
    seeds_chat_template()
    seeds_http()
    seeds_grpc()
