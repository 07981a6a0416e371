#include "ops/fuzz/fuzz_server.h"

#include <stdlib.h>

#include <cstdio>
#include <filesystem>

#include "absl/strings/str_replace.h"
#include "core/chat/chat_template.h"
#include "core/data/jsonl_dataset.h"
#include "core/tokenizer/byte_tokenizer.h"
#include "grpcpp/grpcpp.h"
#include "tessera/v1/admin.grpc.pb.h"
#include "tessera/v1/datasets.grpc.pb.h"
#include "tessera/v1/fine_tuning.grpc.pb.h"

namespace tessera::fuzz {
namespace {

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "fuzz server: %s\n", what.c_str());
  std::abort();
}

// The builtin:tiny backbone's shape (ModelConfig::BuiltinTiny) without loading it.
services::BackboneInfo TinyBackbone() {
  services::BackboneInfo b;
  b.name = "builtin:tiny";
  b.architecture = "qwen3_moe";
  b.num_layers = 4;
  b.hidden_size = 192;
  b.num_experts = 16;
  b.experts_per_token = 4;
  b.max_seq_len = 512;
  b.expert_dim = 96;
  b.dtype = "f32";
  b.stored_dtype = "f32";
  return b;
}

// The server's JSONL validation over the byte tokenizer and the builtin chat template.
services::DatasetValidator ByteValidator() {
  struct State {
    ByteTokenizer tokenizer;
    std::unique_ptr<chat::ChatTemplate> tmpl = chat::BuiltinTinyChatTemplate();
    data::DatasetChat chat;
  };
  auto state = std::make_shared<State>();
  state->chat.chat_template = state->tmpl.get();
  state->chat.prepend_bos = true;
  return [state](std::string_view bytes) -> absl::StatusOr<services::DatasetStats> {
    data::DatasetLimits limits;
    limits.max_bytes = bytes.size() + 1;
    limits.max_tokens_per_example = 512;
    absl::StatusOr<data::ParsedDataset> parsed = data::ParseJsonlDataset(bytes, state->tokenizer, limits, &state->chat);
    if (!parsed.ok()) return parsed.status();
    return services::DatasetStats{static_cast<int64_t>(parsed->examples.size()), parsed->num_tokens,
                                  parsed->num_loss_tokens};
  };
}

std::unique_ptr<grpc::ClientContext> Ctx(const std::string& key) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->AddMetadata("authorization", "Bearer " + key);
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  return ctx;
}

FuzzServer* Start() {
  auto* fs = new FuzzServer();
  // Under TESSERA_FUZZ_TMPDIR when set (ops/fuzz.sh makes one per run and removes it whatever happens: a
  // crashing input ends the process by _Exit, past the atexit below); else in memory when /dev/shm exists:
  // registry writes fsync, and a fuzzer makes many.
  const char* parent = std::getenv("TESSERA_FUZZ_TMPDIR");
  std::string tmpl = parent != nullptr && *parent != '\0'            ? std::string(parent) + "/tessera_fuzz_XXXXXX"
                     : std::filesystem::is_directory("/dev/shm") ? "/dev/shm/tessera_fuzz_XXXXXX"
                                                                 : "/tmp/tessera_fuzz_XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) Die("mkdtemp " + tmpl + " failed");
  fs->data_dir = tmpl;
  services::ServerOptions so;
  so.data_dir = fs->data_dir;
  so.listen = "127.0.0.1:0";
  so.run_jobs = false;
  so.work_threads = 4;
  so.gc_interval = absl::ZeroDuration();
  so.max_dataset_bytes = 1 << 20;
  services::ServerComponents c;
  c.backbone = TinyBackbone();
  c.validate_dataset = ByteValidator();
  auto s = services::TesseraServer::Start(so, std::move(c));
  if (!s.ok()) Die(std::string(s.status().message()));
  fs->server = *std::move(s);
  fs->admin_key = fs->server->bootstrap().admin_key;
  if (fs->admin_key.empty()) Die("no bootstrap admin key");

  auto channel = grpc::CreateChannel(fs->address(), grpc::InsecureChannelCredentials());
  auto admin = v1::Admin::NewStub(channel);
  for (const char* tenant : {"acme", "other"}) {
    v1::CreateTenantRequest req;
    req.set_tenant_id(tenant);
    v1::CreateTenantResponse resp;
    grpc::Status st = admin->CreateTenant(Ctx(fs->admin_key).get(), req, &resp);
    if (!st.ok()) Die("CreateTenant: " + st.error_message());
    (std::string(tenant) == "acme" ? fs->acme_key : fs->other_key) = resp.api_key().secret();
  }

  auto datasets = v1::Datasets::NewStub(channel);
  auto ctx = Ctx(fs->acme_key);
  v1::Dataset ds;
  auto writer = datasets->UploadDataset(ctx.get(), &ds);
  v1::UploadDatasetRequest first;
  first.set_tenant_id("acme");
  first.set_name("fuzz");
  first.set_chunk("{\"prompt\": \"add(1,2)=\", \"completion\": \"3\"}\n{\"text\": \"hello\"}\n");
  writer->Write(first);
  writer->WritesDone();
  grpc::Status st = writer->Finish();
  if (!st.ok()) Die("UploadDataset: " + st.error_message());
  fs->dataset_id = ds.dataset_id();

  auto ft = v1::FineTuning::NewStub(channel);
  v1::CreateJobRequest job;
  job.set_tenant_id("acme");
  job.set_training_dataset_id(fs->dataset_id);
  v1::Job created;
  st = ft->CreateJob(Ctx(fs->acme_key).get(), job, &created);
  if (!st.ok()) Die("CreateJob: " + st.error_message());
  fs->job_id = created.job_id();

  storage::Registry& registry = fs->server->registry();
  absl::StatusOr<std::string> digest = registry.blobs().Put("not an overlay: nothing loads it here");
  if (!digest.ok()) Die(std::string(digest.status().message()));
  storage::NewVersion nv;
  nv.tenant_id = "acme";
  nv.slots_json = "[{\"layer\":0,\"expert\":1}]";
  nv.val_loss = 1.0;
  nv.base_val_loss = 2.0;
  nv.blob_digest = *digest;
  auto v = registry.PublishVersion(nv, "fuzz");
  if (!v.ok()) Die(std::string(v.status().message()));

  static std::string dir = fs->data_dir;
  std::atexit([] {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  });
  return fs;
}

}  // namespace

std::string FuzzServer::Substitute(std::string s) const {
  return absl::StrReplaceAll(s, {{"$ADMIN", admin_key},
                                 {"$ACME", acme_key},
                                 {"$OTHER", other_key},
                                 {"$DATASET", dataset_id},
                                 {"$JOB", job_id}});
}

FuzzServer& GetFuzzServer() {
  static FuzzServer* server = Start();
  return *server;
}

}  // namespace tessera::fuzz
