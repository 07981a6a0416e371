// tessera: a tenant's command-line client (datasets, fine-tuning jobs, generation, versions). See --help.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unistd.h>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "core/util/sha256.h"
#include "services/cli/cli_common.h"
#include "services/cli/progress.h"
#include "services/cli/replica_router.h"
#include "tessera/v1/datasets.grpc.pb.h"
#include "tessera/v1/experts.grpc.pb.h"
#include "tessera/v1/fine_tuning.grpc.pb.h"
#include "tessera/v1/inference.grpc.pb.h"

namespace tessera::cli {
namespace {

constexpr char kUsage[] = R"(tessera: use a Tessera server as a tenant.

Usage: tessera [--server HOST:PORT] [--tenant T] [--json] COMMAND ...

The API key is read from $TESSERA_API_KEY (or --key-file FILE); the tenant from --tenant or
$TESSERA_TENANT.

Commands:
  datasets upload FILE [--name NAME]         upload (progress on stderr) a JSONL dataset ({"text":...},
                                             {"prompt":...,"completion":...} or
                                             {"messages":[{"role":...,"content":...},...]} per line)
  datasets list
  jobs create --dataset DS [options]         start a fine-tuning job; options:
      --validation-dataset DS  --max-steps N  --batch-size N  --seq-len N  --learning-rate X
      --warmup-steps N  --weight-decay X  --seed N  --base-version N  --auto-promote
      --max-general-regression X  (auto-promote only if the general-ability loss rose by <= X, relative)
      --slots L.E,L.E,...  (explicit expert slots)  or  --relevance-threshold X --max-experts N (auto)
      --idempotency-key KEY  --watch (then follow it like jobs watch)
      --method esft|lora  (esft: the slots' full weights, the default; lora: low-rank factors on them)
      --lora-rank N  (lora: the factors' rank; default 8)
      --suffix S  (your label for the job, stored and shown with it: <= 64 of [A-Za-z0-9_-])
  jobs get JOB_ID
  jobs list [--page-size N] [--page-token TOKEN]
  jobs watch JOB_ID                          live progress (step, loss, ETA) until the job finishes;
                                             exit status 0 only if it SUCCEEDED
  jobs cancel JOB_ID
  generate PROMPT [--max-tokens N] [--temperature X] [--top-k N] [--top-p X] [--seed N]
                  [--stop S]... [--version N] [--stream] [--routing] [--logprobs N]
                                             --logprobs N: each token's log-probability (of the raw
                                             model, before temperature/top-p) and the N (0..20) most
                                             likely alternatives, one token per line after the text
  generate --messages JSON [same options]    chat: JSON is an array of {"role","content"} (or @FILE),
                                             rendered with the backbone's chat template; the reply
                                             ends at the end of the assistant's turn
  score TEXT [--version N] [--routing]       log-likelihood of TEXT (every token after the first)
  score --messages JSON [--version N]        the same for a rendered conversation
  eval FILE [--version N] [--max-tokens N]   exact-match accuracy on a prompt/completion JSONL file
                                             (greedy generation, one request per line)
  versions list                              your expert versions, newest first (* = live)
  versions export --version N --out DIR [--overlay-only] [--max-shard-bytes N]
                                             write (progress on stderr) version N as files into DIR (created; an existing
                                             DIR must be empty): a Hugging Face checkpoint (config.json,
                                             safetensors shards + index, generation_config.json,
                                             tokenizer files) with your experts merged in, loadable by
                                             transformers' from_pretrained; version 0 = the base. With
                                             --overlay-only: just your slots (overlay.safetensors) and
                                             manifest.json. Each file's sha256 is checked against the
                                             server's; nothing is left in DIR on failure

Global options:
  --server HOST:PORT   default 127.0.0.1:7070. A comma-separated list of inference replicas
                       (HOST:PORT,HOST:PORT,...): generate and score go to the tenant's replica by
                       rendezvous hashing (the same on every client, so its overlays stay warm there),
                       to the next when one is down or full; when all are full the request fails at
                       once (RESOURCE_EXHAUSTED: shed, retry later). Other commands use the first.
  --tls-ca PEM         use TLS, trusting this CA for the server's certificate
  --tls-cert PEM --tls-key PEM  a client certificate for a server that requires mutual TLS
  --json               machine-readable output (the response message(s) as JSON, one per line)
  --quiet              no progress lines on stderr (uploads and exports show them; stdout is the
                       result either way)
  --help               this text
Exit status: 0 on success; 1 when the server refused or failed the call (or a watched job did not
succeed); 2 for usage errors.
)";

struct Ctx {
  Args args;
  std::string key;
  std::string tenant;
  std::shared_ptr<grpc::Channel> channel;
  std::string channel_target;  // the address `channel` reaches
  // --server A,B,...: inference replicas; generate and score go to the tenant's replica in rendezvous
  // order, the next when one is down or full (services/cli/replica_router.h); other commands use the
  // first in that order.
  std::optional<ReplicaRouter> router;
  bool json = false;
};

// Runs an inference call on c.channel, or through c.router on each replica's channel in turn.
grpc::Status CallInference(const Ctx& c, const std::function<grpc::Status(const std::shared_ptr<grpc::Channel>&)>& call) {
  if (!c.router) return call(c.channel);
  return c.router->Route(c.tenant, [&](const std::string& replica) {
    if (replica == c.channel_target) return call(c.channel);
    std::shared_ptr<grpc::Channel> channel;
    if (auto e = MakeChannelTo(c.args, replica, &channel)) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, e->message);
    return call(channel);
  });
}

std::string Eta(double seconds) {
  if (seconds <= 0 || !std::isfinite(seconds)) return "-";
  int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return absl::StrCat(s / 3600, "h", (s % 3600) / 60, "m");
  if (s >= 60) return absl::StrCat(s / 60, "m", s % 60, "s");
  return absl::StrCat(s, "s");
}

std::string SlotsText(const google::protobuf::RepeatedPtrField<v1::Slot>& slots) {
  std::string out;
  for (const v1::Slot& s : slots) absl::StrAppend(&out, out.empty() ? "" : ",", "L", s.layer(), ".E", s.expert());
  return out.empty() ? "-" : out;
}

void PrintJob(const v1::Job& j) {
  std::printf("job %s  tenant %s  state %s\n", j.job_id().c_str(), j.tenant_id().c_str(),
              v1::JobState_Name(j.state()).c_str());
  std::printf("  created %s  started %s  finished %s\n", FormatTime(j.created_at().seconds()).c_str(),
              FormatTime(j.started_at().seconds()).c_str(), FormatTime(j.finished_at().seconds()).c_str());
  std::printf("  progress step %lld/%lld  train_loss %.4f  val_loss %.4f  %.0f tok/s\n",
              static_cast<long long>(j.progress().step()), static_cast<long long>(j.progress().max_steps()),
              j.progress().train_loss(), j.progress().val_loss(), j.progress().tokens_per_second());
  std::printf("  dataset %s  base_version %lld  auto_promote %s  slots %s\n", j.training_dataset_id().c_str(),
              static_cast<long long>(j.base_version()), j.auto_promote() ? "yes" : "no",
              SlotsText(j.selected_slots()).c_str());
  if (j.has_result_version()) {
    std::printf("  result version %lld%s\n", static_cast<long long>(j.result_version()),
                j.promoted() ? " (promoted: live)" : "");
  }
  if (!j.suffix().empty()) std::printf("  suffix %s\n", j.suffix().c_str());
  if (!j.error().empty()) std::printf("  error: %s\n", j.error().c_str());
}

// A path the server may name inside the export directory: relative, no "..", no empty parts.
bool SafeRelativePath(const std::string& p) {
  if (p.empty() || p.front() == '/') return false;
  for (absl::string_view part : absl::StrSplit(p, '/')) {
    if (part.empty() || part == "." || part == "..") return false;
  }
  return true;
}

// versions export: streams the files into DIR.partial-<pid> (checking offsets, sizes and sha256 of
// every file against the server's), then renames it to DIR.
std::optional<CliError> ExportVersion(Ctx& c) {
  namespace fs = std::filesystem;
  if (auto e = c.args.OnlyFlags({"--version", "--out", "--overlay-only", "--max-shard-bytes"})) return e;
  if (!c.args.Has("--version")) return UsageError("versions export needs --version N (0 = the base checkpoint)");
  if (c.args.Get("--out").empty()) return UsageError("versions export needs --out DIR");
  int64_t version = 0, shard = 0;
  if (auto e = c.args.GetInt("--version", &version)) return e;
  if (auto e = c.args.GetInt("--max-shard-bytes", &shard)) return e;
  const fs::path out = c.args.Get("--out");
  std::error_code ec;
  if (fs::exists(out, ec)) {
    if (!fs::is_directory(out, ec)) return UsageError(absl::StrCat("--out ", out.string(), " exists and is not a directory"));
    if (!fs::is_empty(out, ec)) return UsageError(absl::StrCat("--out ", out.string(), " exists and is not empty"));
  }
  const fs::path tmp = out.string() + ".partial-" + std::to_string(::getpid());
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec)) return CliError{1, absl::StrCat("cannot create ", tmp.string(), ": ", ec.message())};
  struct Cleanup {
    fs::path dir;
    ~Cleanup() {
      std::error_code ignored;
      if (!dir.empty()) fs::remove_all(dir, ignored);
    }
  } cleanup{tmp};

  auto stub = v1::Experts::NewStub(c.channel);
  auto ctx = MakeContext(c.key, /*deadline_seconds=*/0);
  v1::ExportVersionRequest req;
  req.set_tenant_id(c.tenant);
  req.set_version(version);
  req.set_overlay_only(c.args.Has("--overlay-only"));
  req.set_max_shard_bytes(shard);
  auto reader = stub->ExportVersion(ctx.get(), req);
  Progress progress(absl::StrCat("export version ", version), -1, !c.args.Has("--quiet"));
  int64_t received = 0;
  v1::ExportChunk chunk;
  std::string current;  // file being written ("" between files)
  std::ofstream file;
  std::unique_ptr<tessera::Sha256> sha;
  int64_t written = 0;
  std::map<std::string, std::pair<int64_t, std::string>> done;  // path -> (size, sha256)
  std::optional<v1::ExportChunk> listing;
  auto fail = [&](const std::string& msg) {
    ctx->TryCancel();
    return CliError{1, absl::StrCat("export stream: ", msg)};
  };
  while (reader->Read(&chunk)) {
    if (listing.has_value()) return fail("data after the final listing");
    if (chunk.path().empty()) {
      if (!current.empty()) return fail(absl::StrCat("listing before the end of ", current));
      listing = chunk;
      continue;
    }
    if (current.empty()) {
      if (!SafeRelativePath(chunk.path())) return fail(absl::StrCat("unsafe file path \"", chunk.path(), "\""));
      if (done.count(chunk.path())) return fail(absl::StrCat(chunk.path(), " sent twice"));
      current = chunk.path();
      fs::create_directories((tmp / current).parent_path(), ec);
      file.open(tmp / current, std::ios::binary | std::ios::trunc);
      if (!file.is_open()) return CliError{1, absl::StrCat("cannot create ", (tmp / current).string())};
      sha = std::make_unique<tessera::Sha256>();
      written = 0;
    } else if (chunk.path() != current) {
      return fail(absl::StrCat(chunk.path(), " started before ", current, " ended"));
    }
    if (chunk.offset() != written) {
      return fail(absl::StrCat(current, ": chunk at offset ", chunk.offset(), ", expected ", written));
    }
    file.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
    if (!file) return CliError{1, absl::StrCat("writing ", (tmp / current).string(), " failed")};
    sha->Update(chunk.data());
    written += static_cast<int64_t>(chunk.data().size());
    received += static_cast<int64_t>(chunk.data().size());
    progress.Update(received, absl::StrCat(done.size(), " files done, writing ", current));
    if (chunk.eof()) {
      file.close();
      if (!file) return CliError{1, absl::StrCat("writing ", (tmp / current).string(), " failed")};
      const std::string got = sha->FinishHex();
      if (chunk.size_bytes() != written || chunk.sha256() != got) {
        return fail(absl::StrCat(current, ": received ", written, " bytes with sha256 ", got, ", the server sent ",
                                 chunk.size_bytes(), " bytes with sha256 ", chunk.sha256()));
      }
      done[current] = {written, got};
      current.clear();
    }
  }
  grpc::Status st = reader->Finish();
  if (!st.ok()) return RpcError(st);
  progress.Done(received, absl::StrCat(done.size(), " files received, sha256 checked"));
  if (!current.empty()) return fail(absl::StrCat(current, " was cut short"));
  if (!listing.has_value()) return fail("no final listing");
  if (static_cast<size_t>(listing->files_size()) != done.size()) {
    return fail(absl::StrCat("the listing names ", listing->files_size(), " files, ", done.size(), " were sent"));
  }
  for (const v1::ExportedFile& f : listing->files()) {
    auto it = done.find(f.path());
    if (it == done.end() || it->second.first != f.size_bytes() || it->second.second != f.sha256()) {
      return fail(absl::StrCat("the listing's ", f.path(), " does not match the file sent"));
    }
  }
  if (fs::exists(out, ec)) fs::remove(out, ec);  // empty (checked above)
  fs::rename(tmp, out, ec);
  if (ec) return CliError{1, absl::StrCat("cannot rename ", tmp.string(), " to ", out.string(), ": ", ec.message())};
  cleanup.dir.clear();
  if (c.json) return PrintJson(*listing), std::nullopt;
  int64_t total = 0;
  for (const v1::ExportedFile& f : listing->files()) {
    std::printf("%-40s %12lld  sha256 %s\n", f.path().c_str(), static_cast<long long>(f.size_bytes()),
                f.sha256().c_str());
    total += f.size_bytes();
  }
  std::printf("wrote %d files (%lld bytes) of version %lld%s to %s\n", listing->files_size(),
              static_cast<long long>(total), static_cast<long long>(version),
              req.overlay_only() ? " (overlay only)" : "", out.string().c_str());
  return std::nullopt;
}

// --logprobs: one line per generated token: its logprob, then the alternatives.
void PrintLogprobs(const std::vector<v1::TokenLogprob>& tokens) {
  for (const v1::TokenLogprob& t : tokens) {
    std::string alts;
    for (const v1::TokenLogprob& a : t.top_logprobs()) {
      absl::StrAppend(&alts, alts.empty() ? "" : "  ", absl::CHexEscape(a.token_bytes()), " ",
                      absl::StrFormat("%.4f", a.logprob()));
    }
    std::printf("%-12s %9.4f%s%s\n", absl::StrCat("\"", absl::CHexEscape(t.token_bytes()), "\"").c_str(), t.logprob(),
                alts.empty() ? "" : "   top: ", alts.c_str());
  }
}

std::optional<CliError> Watch(Ctx& c, const std::string& job_id) {
  auto stub = v1::FineTuning::NewStub(c.channel);
  auto ctx = MakeContext(c.key, /*deadline_seconds=*/0);
  v1::WatchJobRequest req;
  req.set_tenant_id(c.tenant);
  req.set_job_id(job_id);
  auto reader = stub->WatchJob(ctx.get(), req);
  v1::JobEvent e;
  v1::JobState last = v1::JOB_STATE_UNSPECIFIED;
  std::string last_error;
  while (reader->Read(&e)) {
    if (c.json) {
      PrintJson(e);
    } else if (e.has_state()) {
      std::printf("[%s] state %s%s\n", FormatTime(e.created_at().seconds()).c_str(),
                  v1::JobState_Name(e.state().state()).c_str(),
                  e.state().message().empty() ? "" : (": " + e.state().message()).c_str());
    } else if (e.has_selection()) {
      std::printf("experts selected: %s\n", SlotsText(e.selection().slots()).c_str());
    } else if (e.has_progress()) {
      const v1::JobProgress& p = e.progress();
      std::printf("step %lld/%lld  loss %.4f%s  %.0f tok/s  ETA %s\n", static_cast<long long>(p.step()),
                  static_cast<long long>(p.max_steps()), p.train_loss(),
                  p.val_loss() > 0 ? absl::StrCat("  val ", absl::SixDigits(p.val_loss())).c_str() : "",
                  p.tokens_per_second(), Eta(e.eta_seconds()).c_str());
    } else if (e.has_eval()) {
      std::printf("eval at step %lld: val_loss %.4f (base %.4f)\n", static_cast<long long>(e.eval().step()),
                  e.eval().val_loss(), e.eval().base_val_loss());
    } else if (e.has_version()) {
      std::printf("published version %lld%s: %s\n", static_cast<long long>(e.version().version()),
                  e.version().promoted() ? " (now live)" : "", e.version().reason().c_str());
    } else if (!e.log().empty()) {
      std::printf("%s\n", e.log().c_str());
    }
    std::fflush(stdout);
    if (e.has_state()) {
      last = e.state().state();
      last_error = e.state().message();
    }
  }
  grpc::Status st = reader->Finish();
  if (!st.ok()) return RpcError(st);
  if (last != v1::SUCCEEDED) {
    return CliError{1, absl::StrCat("job ", job_id, " ended ", v1::JobState_Name(last),
                                    last_error.empty() ? "" : ": " + last_error)};
  }
  return std::nullopt;
}

// --messages: a JSON array of {"role", "content"} objects, inline or from @FILE.
std::optional<CliError> ParseMessages(const std::string& arg,
                                      google::protobuf::RepeatedPtrField<v1::ChatMessage>* out) {
  std::string text = arg;
  if (!arg.empty() && arg[0] == '@') {
    std::ifstream in(arg.substr(1));
    if (!in) return UsageError("--messages: cannot read " + arg.substr(1));
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_array() || j.empty()) {
    return UsageError("--messages: expected a non-empty JSON array of {\"role\": ..., \"content\": ...}");
  }
  for (size_t i = 0; i < j.size(); ++i) {
    const nlohmann::json& m = j[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
        !m["content"].is_string()) {
      return UsageError(absl::StrCat("--messages: element ", i, " must be {\"role\": STRING, \"content\": STRING}"));
    }
    v1::ChatMessage* msg = out->Add();
    msg->set_role(m["role"].get<std::string>());
    msg->set_content(m["content"].get<std::string>());
  }
  return std::nullopt;
}

std::optional<CliError> ParseSlots(const std::string& text, v1::ExplicitSelection* out) {
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    std::string s(part);
    int layer = 0, expert = 0;
    size_t dot = s.find('.');
    std::string l = dot == std::string::npos ? "" : s.substr(0, dot);
    std::string e = dot == std::string::npos ? "" : s.substr(dot + 1);
    if (!l.empty() && (l[0] == 'L' || l[0] == 'l')) l = l.substr(1);
    if (!e.empty() && (e[0] == 'E' || e[0] == 'e')) e = e.substr(1);
    if (!absl::SimpleAtoi(l, &layer) || !absl::SimpleAtoi(e, &expert)) {
      return UsageError("--slots: expected LAYER.EXPERT pairs like 0.3,1.7 (or L0.E3), got \"" + s + "\"");
    }
    v1::Slot* slot = out->add_slots();
    slot->set_layer(layer);
    slot->set_expert(expert);
  }
  return std::nullopt;
}

std::optional<CliError> CreateJob(Ctx& c) {
  const Args& a = c.args;
  if (auto e = a.OnlyFlags({"--dataset", "--validation-dataset", "--max-steps", "--batch-size", "--seq-len",
                            "--learning-rate", "--warmup-steps", "--weight-decay", "--seed", "--base-version",
                            "--auto-promote", "--slots", "--relevance-threshold", "--max-experts",
                            "--idempotency-key", "--watch", "--method", "--lora-rank", "--suffix",
                            "--max-general-regression"})) {
    return e;
  }
  v1::CreateJobRequest req;
  req.set_tenant_id(c.tenant);
  req.set_training_dataset_id(a.Get("--dataset"));
  if (req.training_dataset_id().empty()) return UsageError("--dataset DS is required");
  req.set_validation_dataset_id(a.Get("--validation-dataset"));
  v1::Hyperparameters* h = req.mutable_hyperparameters();
  int64_t i = 0;
  double d = 0;
  if (auto e = a.GetInt("--max-steps", &i)) return e;
  if (a.Has("--max-steps")) h->set_max_steps(i);
  if (auto e = a.GetInt("--batch-size", &i)) return e;
  if (a.Has("--batch-size")) h->set_batch_size(static_cast<int32_t>(i));
  if (auto e = a.GetInt("--seq-len", &i)) return e;
  if (a.Has("--seq-len")) h->set_seq_len(static_cast<int32_t>(i));
  if (auto e = a.GetDouble("--learning-rate", &d)) return e;
  if (a.Has("--learning-rate")) h->set_learning_rate(d);
  if (auto e = a.GetInt("--warmup-steps", &i)) return e;
  if (a.Has("--warmup-steps")) h->set_warmup_steps(i);
  if (auto e = a.GetDouble("--weight-decay", &d)) return e;
  if (a.Has("--weight-decay")) h->set_weight_decay(d);
  if (auto e = a.GetInt("--seed", &i)) return e;
  if (a.Has("--seed")) h->set_seed(static_cast<uint64_t>(i));
  if (a.Has("--slots")) {
    if (a.Has("--relevance-threshold") || a.Has("--max-experts")) {
      return UsageError("--slots (explicit) cannot be combined with --relevance-threshold/--max-experts (auto)");
    }
    if (auto e = ParseSlots(a.Get("--slots"), req.mutable_expert_selection()->mutable_explicit_())) return e;
  } else {
    v1::AutoSelection* au = req.mutable_expert_selection()->mutable_auto_();
    if (auto e = a.GetDouble("--relevance-threshold", &d)) return e;
    if (a.Has("--relevance-threshold")) au->set_relevance_threshold(d);
    if (auto e = a.GetInt("--max-experts", &i)) return e;
    if (a.Has("--max-experts")) au->set_max_experts(static_cast<int32_t>(i));
  }
  if (auto e = a.GetInt("--base-version", &i)) return e;
  if (a.Has("--base-version")) req.set_base_version(i);
  req.set_auto_promote(a.Has("--auto-promote"));
  if (auto e = a.GetDouble("--max-general-regression", &d)) return e;
  if (a.Has("--max-general-regression")) req.set_max_general_regression(d);
  req.set_idempotency_key(a.Get("--idempotency-key"));
  req.set_method(a.Get("--method"));  // checked by the server (INVALID_ARGUMENT naming "method")
  if (auto e = a.GetInt("--lora-rank", &i)) return e;
  if (a.Has("--lora-rank")) req.set_lora_rank(static_cast<int32_t>(i));
  req.set_suffix(a.Get("--suffix"));  // checked by the server (INVALID_ARGUMENT naming "suffix")
  auto stub = v1::FineTuning::NewStub(c.channel);
  auto ctx = MakeContext(c.key);
  v1::Job job;
  grpc::Status st = stub->CreateJob(ctx.get(), req, &job);
  if (!st.ok()) return RpcError(st);
  if (c.json) {
    PrintJson(job);
  } else {
    std::printf("job %s %s\n", job.job_id().c_str(), v1::JobState_Name(job.state()).c_str());
  }
  std::fflush(stdout);
  if (a.Has("--watch")) return Watch(c, job.job_id());
  return std::nullopt;
}

std::optional<CliError> Run(Ctx& c) {
  const std::vector<std::string>& p = c.args.positional();
  std::string cmd = p.empty() ? "" : p[0];
  std::string sub = p.size() > 1 ? p[1] : "";
  grpc::Status st;
  if (cmd == "datasets" && sub == "upload") {
    if (auto e = c.args.OnlyFlags({"--name"})) return e;
    if (p.size() != 3) return UsageError("usage: tessera datasets upload FILE [--name NAME]");
    std::ifstream in(p[2], std::ios::binary);
    if (!in) return UsageError("cannot read " + p[2]);
    std::string name = c.args.Get("--name");
    if (name.empty()) name = p[2].substr(p[2].find_last_of('/') + 1);
    auto stub = v1::Datasets::NewStub(c.channel);
    auto ctx = MakeContext(c.key, 600);
    v1::Dataset resp;
    std::error_code size_ec;
    const int64_t total = static_cast<int64_t>(std::filesystem::file_size(p[2], size_ec));
    Progress progress(absl::StrCat("upload ", name), size_ec ? -1 : total, !c.args.Has("--quiet"));
    auto writer = stub->UploadDataset(ctx.get(), &resp);
    v1::UploadDatasetRequest first;
    first.set_tenant_id(c.tenant);
    first.set_name(name);
    first.set_format("jsonl");
    bool ok = writer->Write(first);
    std::string buf(1 << 20, '\0');
    int64_t sent = 0;
    while (ok && in) {
      in.read(buf.data(), buf.size());
      std::streamsize n = in.gcount();
      if (n <= 0) break;
      v1::UploadDatasetRequest chunk;
      chunk.set_chunk(buf.data(), n);
      ok = writer->Write(chunk);
      sent += n;
      progress.Update(sent);
    }
    writer->WritesDone();
    // The server validates and tokenizes every line before it answers; a refusal is the one line on
    // stderr (no final progress line then).
    if (!(st = writer->Finish()).ok()) return RpcError(st);
    progress.Done(sent, "validated by the server");
    if (c.json) return PrintJson(resp), std::nullopt;
    std::printf("dataset %s  \"%s\"  %lld examples  %lld tokens  %lld bytes  sha256 %s\n", resp.dataset_id().c_str(),
                resp.name().c_str(), static_cast<long long>(resp.num_examples()),
                static_cast<long long>(resp.num_tokens()), static_cast<long long>(resp.size_bytes()),
                resp.sha256().c_str());
  } else if (cmd == "datasets" && sub == "list") {
    if (auto e = c.args.OnlyFlags({})) return e;
    auto stub = v1::Datasets::NewStub(c.channel);
    auto ctx = MakeContext(c.key);
    v1::ListDatasetsRequest req;
    req.set_tenant_id(c.tenant);
    v1::ListDatasetsResponse resp;
    if (!(st = stub->ListDatasets(ctx.get(), req, &resp)).ok()) return RpcError(st);
    if (c.json) return PrintJson(resp), std::nullopt;
    std::printf("%-26s %-24s %-10s %-10s %s\n", "DATASET", "NAME", "EXAMPLES", "TOKENS", "CREATED");
    for (const v1::Dataset& d : resp.datasets()) {
      std::printf("%-26s %-24s %-10lld %-10lld %s\n", d.dataset_id().c_str(), d.name().c_str(),
                  static_cast<long long>(d.num_examples()), static_cast<long long>(d.num_tokens()),
                  FormatTime(d.created_at().seconds()).c_str());
    }
  } else if (cmd == "jobs" && sub == "create") {
    return CreateJob(c);
  } else if (cmd == "jobs" && (sub == "get" || sub == "cancel" || sub == "watch")) {
    if (auto e = c.args.OnlyFlags({})) return e;
    if (p.size() != 3) return UsageError("usage: tessera jobs " + sub + " JOB_ID");
    if (sub == "watch") return Watch(c, p[2]);
    auto stub = v1::FineTuning::NewStub(c.channel);
    auto ctx = MakeContext(c.key);
    v1::Job job;
    if (sub == "get") {
      v1::GetJobRequest req;
      req.set_tenant_id(c.tenant);
      req.set_job_id(p[2]);
      st = stub->GetJob(ctx.get(), req, &job);
    } else {
      v1::CancelJobRequest req;
      req.set_tenant_id(c.tenant);
      req.set_job_id(p[2]);
      st = stub->CancelJob(ctx.get(), req, &job);
    }
    if (!st.ok()) return RpcError(st);
    if (c.json) return PrintJson(job), std::nullopt;
    PrintJob(job);
  } else if (cmd == "jobs" && sub == "list") {
    if (auto e = c.args.OnlyFlags({"--page-size", "--page-token"})) return e;
    auto stub = v1::FineTuning::NewStub(c.channel);
    auto ctx = MakeContext(c.key);
    v1::ListJobsRequest req;
    req.set_tenant_id(c.tenant);
    int64_t n = 0;
    if (auto e = c.args.GetInt("--page-size", &n)) return e;
    req.set_page_size(static_cast<int32_t>(n));
    req.set_page_token(c.args.Get("--page-token"));
    v1::ListJobsResponse resp;
    if (!(st = stub->ListJobs(ctx.get(), req, &resp)).ok()) return RpcError(st);
    if (c.json) return PrintJson(resp), std::nullopt;
    std::printf("%-26s %-10s %-12s %-10s %-8s %s\n", "JOB", "STATE", "STEP", "LOSS", "VERSION", "CREATED");
    for (const v1::Job& j : resp.jobs()) {
      std::string step = absl::StrCat(j.progress().step(), "/", j.progress().max_steps());
      std::string version =
          j.has_result_version() ? absl::StrCat(j.result_version(), j.promoted() ? "*" : "") : "-";
      std::printf("%-26s %-10s %-12s %-10.4f %-8s %s\n", j.job_id().c_str(), v1::JobState_Name(j.state()).c_str(),
                  step.c_str(), j.progress().train_loss(), version.c_str(),
                  FormatTime(j.created_at().seconds()).c_str());
    }
    if (!resp.next_page_token().empty()) std::printf("next page: --page-token %s\n", resp.next_page_token().c_str());
  } else if (cmd == "generate") {
    if (auto e = c.args.OnlyFlags({"--max-tokens", "--temperature", "--top-k", "--top-p", "--seed", "--stop",
                                   "--version", "--stream", "--routing", "--messages", "--logprobs"})) {
      return e;
    }
    v1::GenerateRequest req;
    req.set_tenant_id(c.tenant);
    if (c.args.Has("--messages")) {
      if (p.size() != 1) return UsageError("usage: tessera generate --messages JSON [options] (no PROMPT then)");
      if (auto e = ParseMessages(c.args.Get("--messages"), req.mutable_messages())) return e;
    } else {
      if (p.size() != 2) return UsageError("usage: tessera generate PROMPT [options] (quote the prompt)");
      req.set_prompt(p[1]);
    }
    int64_t i = 0;
    double d = 0;
    if (auto e = c.args.GetInt("--max-tokens", &i)) return e;
    if (c.args.Has("--max-tokens")) req.set_max_tokens(static_cast<int32_t>(i));
    if (auto e = c.args.GetDouble("--temperature", &d)) return e;
    if (c.args.Has("--temperature")) req.set_temperature(static_cast<float>(d));
    if (auto e = c.args.GetInt("--top-k", &i)) return e;
    if (c.args.Has("--top-k")) req.set_top_k(static_cast<int32_t>(i));
    if (auto e = c.args.GetDouble("--top-p", &d)) return e;
    if (c.args.Has("--top-p")) req.set_top_p(static_cast<float>(d));
    if (auto e = c.args.GetInt("--seed", &i)) return e;
    if (c.args.Has("--seed")) req.set_seed(static_cast<uint64_t>(i));
    for (const std::string& s : c.args.GetAll("--stop")) req.add_stop(s);
    if (auto e = c.args.GetInt("--version", &i)) return e;
    if (c.args.Has("--version")) req.set_version(i);
    req.set_return_routing(c.args.Has("--routing"));
    if (auto e = c.args.GetInt("--logprobs", &i)) return e;
    if (c.args.Has("--logprobs")) {
      req.set_logprobs(true);
      req.set_top_logprobs(static_cast<int32_t>(i));  // range checked by the server (top_logprobs)
    }
    std::vector<v1::TokenLogprob> logprobs;
    if (c.args.Has("--stream")) {
      v1::GenerateChunk last;
      st = CallInference(c, [&](const std::shared_ptr<grpc::Channel>& channel) {
        auto stub = v1::Inference::NewStub(channel);
        auto ctx = MakeContext(c.key, 600);
        auto reader = stub->GenerateStream(ctx.get(), req);
        v1::GenerateChunk chunk;
        bool printed = false;
        while (reader->Read(&chunk)) {
          printed = true;
          if (c.json) {
            PrintJson(chunk);
          } else {
            std::fputs(chunk.text().c_str(), stdout);
            std::fflush(stdout);
          }
          if (chunk.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) last = chunk;
          logprobs.insert(logprobs.end(), chunk.logprobs().begin(), chunk.logprobs().end());
        }
        grpc::Status s = reader->Finish();
        // Output already printed is not sent again by another replica.
        if (printed && !s.ok()) return grpc::Status(grpc::StatusCode::ABORTED, "the stream broke: " + s.error_message());
        return s;
      });
      if (!st.ok()) return RpcError(st);
      if (!c.json) {
        std::printf("\n[finish %s, version %lld, %d+%d tokens]\n", v1::FinishReason_Name(last.finish_reason()).c_str(),
                    static_cast<long long>(last.expert_version()), last.usage().prompt_tokens(),
                    last.usage().completion_tokens());
        PrintLogprobs(logprobs);
      }
    } else {
      v1::GenerateResponse resp;
      st = CallInference(c, [&](const std::shared_ptr<grpc::Channel>& channel) {
        return v1::Inference::NewStub(channel)->Generate(MakeContext(c.key, 600).get(), req, &resp);
      });
      if (!st.ok()) return RpcError(st);
      if (c.json) return PrintJson(resp), std::nullopt;
      std::printf("%s\n[finish %s, version %lld, %d+%d tokens]\n", resp.text().c_str(),
                  v1::FinishReason_Name(resp.finish_reason()).c_str(), static_cast<long long>(resp.expert_version()),
                  resp.usage().prompt_tokens(), resp.usage().completion_tokens());
      for (const v1::LayerRouting& l : resp.routing().layers()) {
        std::string counts;
        for (int64_t n : l.expert_tokens()) absl::StrAppend(&counts, counts.empty() ? "" : " ", n);
        std::printf("layer %d: entropy %.3f  tokens per expert [%s]  overlay experts %d\n", l.layer(), l.entropy(),
                    counts.c_str(), l.overlay_experts_size());
      }
      PrintLogprobs({resp.logprobs().begin(), resp.logprobs().end()});
    }
  } else if (cmd == "score") {
    if (auto e = c.args.OnlyFlags({"--version", "--routing", "--messages"})) return e;
    v1::ScoreRequest req;
    req.set_tenant_id(c.tenant);
    if (c.args.Has("--messages")) {
      if (p.size() != 1) return UsageError("usage: tessera score --messages JSON [--version N] [--routing]");
      if (auto e = ParseMessages(c.args.Get("--messages"), req.mutable_messages())) return e;
    } else {
      if (p.size() != 2) return UsageError("usage: tessera score TEXT [--version N] [--routing]");
      req.set_text(p[1]);
    }
    int64_t i = 0;
    if (auto e = c.args.GetInt("--version", &i)) return e;
    if (c.args.Has("--version")) req.set_version(i);
    req.set_return_routing(c.args.Has("--routing"));
    v1::ScoreResponse resp;
    st = CallInference(c, [&](const std::shared_ptr<grpc::Channel>& channel) {
      return v1::Inference::NewStub(channel)->Score(MakeContext(c.key, 600).get(), req, &resp);
    });
    if (!st.ok()) return RpcError(st);
    if (c.json) return PrintJson(resp), std::nullopt;
    std::printf("total_logprob %.4f  tokens %lld  perplexity %.4f  version %lld\n", resp.total_logprob(),
                static_cast<long long>(resp.num_tokens()), resp.perplexity(),
                static_cast<long long>(resp.expert_version()));
  } else if (cmd == "eval") {
    if (auto e = c.args.OnlyFlags({"--version", "--max-tokens"})) return e;
    if (p.size() != 2) return UsageError("usage: tessera eval FILE [--version N] [--max-tokens N]");
    std::ifstream in(p[1]);
    if (!in) return UsageError("cannot read " + p[1]);
    int64_t version = -1, max_tokens = 32;
    if (auto e = c.args.GetInt("--version", &version)) return e;
    if (auto e = c.args.GetInt("--max-tokens", &max_tokens)) return e;
    auto stub = v1::Inference::NewStub(c.channel);
    int64_t total = 0, correct = 0, served_by = -1;
    std::string line;
    for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!j.is_object() || !j.contains("prompt") || !j.contains("completion") || !j["prompt"].is_string() ||
          !j["completion"].is_string()) {
        return UsageError(absl::StrCat(p[1], ": line ", line_no, ": expected {\"prompt\": ..., \"completion\": ...}"));
      }
      v1::GenerateRequest req;
      req.set_tenant_id(c.tenant);
      req.set_prompt(j["prompt"].get<std::string>());
      req.set_max_tokens(static_cast<int32_t>(max_tokens));
      if (version >= 0) req.set_version(version);
      auto ctx = MakeContext(c.key, 600);
      v1::GenerateResponse resp;
      if (!(st = stub->Generate(ctx.get(), req, &resp)).ok()) return RpcError(st);
      ++total;
      bool ok = resp.finish_reason() == v1::EOS && resp.text() == j["completion"].get<std::string>();
      correct += ok;
      served_by = resp.expert_version();
    }
    if (total == 0) return UsageError(p[1] + " has no examples");
    if (c.json) {
      std::printf("%s\n", nlohmann::json{{"correct", correct}, {"total", total},
                                         {"accuracy", static_cast<double>(correct) / total},
                                         {"expert_version", served_by}}.dump().c_str());
    } else {
      std::printf("accuracy %lld/%lld (%.1f%%) served by version %lld\n", static_cast<long long>(correct),
                  static_cast<long long>(total), 100.0 * correct / total, static_cast<long long>(served_by));
    }
  } else if (cmd == "versions" && sub == "list") {
    if (auto e = c.args.OnlyFlags({})) return e;
    auto stub = v1::Experts::NewStub(c.channel);
    auto ctx = MakeContext(c.key);
    v1::ListVersionsRequest req;
    req.set_tenant_id(c.tenant);
    v1::ListVersionsResponse resp;
    if (!(st = stub->ListVersions(ctx.get(), req, &resp)).ok()) return RpcError(st);
    if (c.json) return PrintJson(resp), std::nullopt;
    std::printf("live version %lld%s\n", static_cast<long long>(resp.live_version()),
                resp.live_version() == 0 ? " (base experts)" : "");
    for (const v1::ExpertVersion& v : resp.versions()) {
      const std::string method = v.method() == "lora" ? absl::StrCat("lora r", v.lora_rank())
                                                      : v.method().empty() ? "esft" : v.method();
      std::printf("%s v%lld  parent %lld  val_loss %.4f (base %.4f)  slots %s  job %s  backbone %s  %s %lld bytes\n",
                  v.live() ? "*" : " ", static_cast<long long>(v.version()),
                  static_cast<long long>(v.parent_version()), v.metrics().val_loss(), v.metrics().base_val_loss(),
                  SlotsText(v.slots()).c_str(), v.job_id().c_str(),
                  v.backbone_sha256().empty() ? "-" : v.backbone_sha256().substr(0, 12).c_str(), method.c_str(),
                  static_cast<long long>(v.size_bytes()));
    }
  } else if (cmd == "versions" && sub == "export") {
    return ExportVersion(c);
  } else {
    return UnknownCommand(cmd, sub);
  }
  return std::nullopt;
}

}  // namespace
}  // namespace tessera::cli

int main(int argc, char** argv) {
  using namespace tessera::cli;
  Ctx c;
  if (auto e = Args::Parse(argc, argv, {"--json", "--quiet", "--help", "--auto-promote", "--watch", "--stream",
                                          "--routing", "--overlay-only"},
                           &c.args)) {
    std::fprintf(stderr, "tessera: %s\n", e->message.c_str());
    return e->exit_code;
  }
  if (c.args.Has("--help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  c.json = c.args.Has("--json");
  std::optional<CliError> err = LoadKey(c.args, "TESSERA_API_KEY", &c.key);
  if (!err) {
    c.tenant = c.args.Get("--tenant");
    if (c.tenant.empty() && std::getenv("TESSERA_TENANT") != nullptr) c.tenant = std::getenv("TESSERA_TENANT");
    if (c.tenant.empty()) err = UsageError("no tenant: pass --tenant T or set TESSERA_TENANT");
  }
  if (!err && c.args.Get("--server").find(',') != std::string::npos) {
    absl::StatusOr<ReplicaRouter> router = ReplicaRouter::Parse(c.args.Get("--server"));
    if (!router.ok()) {
      err = UsageError(std::string(router.status().message()));
    } else {
      c.router = *std::move(router);
      c.channel_target = c.router->Order(c.tenant).front();
      err = MakeChannelTo(c.args, c.channel_target, &c.channel);
    }
  } else if (!err) {
    err = MakeChannel(c.args, &c.channel);
  }
  if (!err) err = Run(c);
  if (err) {
    std::fprintf(stderr, "tessera: %s\n", err->message.c_str());
    return err->exit_code;
  }
  return 0;
}
