#include "services/runtime_engine.h"

#include "absl/strings/str_format.h"
#include "core/util/utf8_sanitize.h"
#include "services/version_backbone.h"

namespace tessera::services {
namespace {

std::vector<LayerRoutingStats> Convert(const std::vector<runtime::LayerRouting>& in) {
  std::vector<LayerRoutingStats> out;
  out.reserve(in.size());
  for (const runtime::LayerRouting& l : in) {
    out.push_back({l.layer, l.expert_tokens, l.overlay_experts, l.entropy});
  }
  return out;
}

// "bytes:\\xe2\\x80" for a token that is not valid UTF-8 by itself (part of a character), as OpenAI writes it.
std::string DisplayToken(const std::string& bytes) {
  if (Utf8Sanitize(bytes) == bytes) return bytes;
  std::string out = "bytes:";
  for (unsigned char c : bytes) absl::StrAppendFormat(&out, "\\x%02x", c);
  return out;
}

TokenLogprob ConvertToken(const Tokenizer& tok, int32_t id, float logprob) {
  TokenLogprob t;
  t.id = id;
  t.bytes = tok.DecodeToken(id);
  t.token = DisplayToken(t.bytes);
  t.logprob = logprob;
  return t;
}

std::vector<TokenLogprob> Convert(const Tokenizer& tok, const std::vector<runtime::TokenLogprob>& in) {
  std::vector<TokenLogprob> out;
  out.reserve(in.size());
  for (const runtime::TokenLogprob& r : in) {
    TokenLogprob t = ConvertToken(tok, r.id, r.logprob);
    for (const auto& [id, lp] : r.top) t.top.push_back(ConvertToken(tok, id, lp));
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace

absl::StatusOr<int64_t> RegistryVersionSource::LiveVersion(const std::string& tenant) {
  return registry_->GetLive(tenant);
}

absl::StatusOr<runtime::VersionBlob> RegistryVersionSource::LoadVersion(const std::string& tenant,
                                                                        int64_t version) {
  absl::StatusOr<storage::ExpertVersion> v = registry_->GetVersion(tenant, version);
  if (!v.ok()) return v.status();
  absl::StatusOr<std::string> trained_on = VersionBackboneSha256(*registry_, *v);
  if (!trained_on.ok()) return trained_on.status();
  if (absl::Status s = CheckSameBackbone(*v, *trained_on, backbone_sha256_); !s.ok()) return s;
  absl::StatusOr<std::string> bytes = registry_->blobs().Get(v->sha256);  // verifies the digest
  if (!bytes.ok()) return bytes.status();
  return runtime::VersionBlob{*std::move(bytes), v->sha256};
}

absl::StatusOr<std::unique_ptr<RuntimeEngine>> RuntimeEngine::Create(storage::Registry* registry,
                                                                     std::unique_ptr<LoadedModel> model,
                                                                     std::shared_ptr<const TextCodec> codec,
                                                                     const runtime::RuntimeOptions& options) {
  std::unique_ptr<RuntimeEngine> e(new RuntimeEngine());
  e->model_ = std::move(model);
  e->codec_ = std::move(codec);
  e->source_ = std::make_unique<RegistryVersionSource>(registry, e->model_->info.sha256);
  runtime::RuntimeOptions o = options;
  o.kv_capacity = std::min<int64_t>(o.kv_capacity, e->model_->model->config().max_position_embeddings);
  absl::StatusOr<std::unique_ptr<runtime::Runtime>> rt =
      runtime::Runtime::Create(e->model_->model.get(), &e->codec_->tokenizer(), e->source_.get(), o);
  if (!rt.ok()) return rt.status();
  e->runtime_ = *std::move(rt);
  return e;
}

RuntimeEngine::~RuntimeEngine() { runtime_.reset(); }

absl::StatusOr<GenerateOutput> RuntimeEngine::Generate(const std::string& tenant_id, std::optional<int64_t> version,
                                                       const GenerateParams& params, const DeltaCallback& on_delta) {
  runtime::GenerateParams p;
  absl::StatusOr<std::vector<int32_t>> ids = codec_->Encode(params.input, /*generation=*/true);
  if (!ids.ok()) return ids.status();
  p.prompt_ids = *std::move(ids);
  p.max_tokens = params.max_tokens;
  p.temperature = params.temperature;
  p.top_k = params.top_k;
  p.top_p = params.top_p;
  p.seed = params.seed;
  p.stop = params.stop;
  if (params.input.is_chat()) {
    // A chat reply ends at the format's end of turn.
    p.end_ids = codec_->chat_end_ids();
    for (const std::string& s : codec_->chat_stop_strings()) p.stop.push_back(s);
  }
  p.return_routing = params.return_routing;
  p.logprobs = params.logprobs;
  p.top_logprobs = params.top_logprobs;
  const Tokenizer& tok = codec_->tokenizer();
  if (params.on_logprobs) {
    p.on_logprobs = [&tok, &params](std::vector<runtime::TokenLogprob> lp) { params.on_logprobs(Convert(tok, lp)); };
  }
  p.cancelled = params.cancelled;
  p.deadline = params.deadline;
  absl::StatusOr<runtime::GenerateResult> r = runtime_->Generate(tenant_id, version, p, on_delta);
  if (!r.ok()) return r.status();
  GenerateOutput out;
  out.text = std::move(r->text);
  out.finish_reason = r->finish_reason == runtime::FinishReason::kEos    ? FinishReason::kEos
                      : r->finish_reason == runtime::FinishReason::kStop ? FinishReason::kStop
                                                                         : FinishReason::kLength;
  out.version = r->version;
  out.prompt_tokens = r->prompt_tokens;
  out.completion_tokens = r->completion_tokens;
  out.routing = Convert(r->routing);
  out.logprobs = Convert(tok, r->logprobs);
  return out;
}

absl::StatusOr<ScoreOutput> RuntimeEngine::Score(const std::string& tenant_id, std::optional<int64_t> version,
                                                 const TextInput& input, bool return_routing) {
  absl::StatusOr<std::vector<int32_t>> ids = codec_->Encode(input, /*generation=*/false);
  if (!ids.ok()) return ids.status();
  absl::StatusOr<runtime::ScoreResult> r = runtime_->ScoreIds(tenant_id, version, *std::move(ids), return_routing);
  if (!r.ok()) return r.status();
  ScoreOutput out;
  out.total_logprob = r->total_logprob;
  out.num_tokens = r->num_tokens;
  out.perplexity = r->perplexity;
  out.version = r->version;
  out.routing = Convert(r->routing);
  return out;
}

absl::Status RuntimeEngine::ServeLive(const std::string& tenant_id, int64_t version) {
  return runtime_->SetLive(tenant_id, version);
}

void RuntimeEngine::ForgetTenant(const std::string& tenant_id) { runtime_->ForgetTenant(tenant_id); }

EngineStatus RuntimeEngine::Status() {
  runtime::RuntimeStatus rs = runtime_->Status();
  EngineStatus s;
  for (const runtime::ResidentOverlay& r : rs.resident) s.resident.push_back({r.tenant, r.version, r.bytes, r.sha256});
  s.resident_bytes = rs.resident_bytes;
  s.resident_bytes_limit = rs.resident_bytes_limit;
  s.pending_requests = rs.pending_requests;
  s.pending_by_tenant = rs.pending_by_tenant;
  s.active_requests = rs.active_requests;
  s.tokens_generated = static_cast<double>(rs.tokens_generated);
  s.steps = rs.steps;
  s.batched_sequences = rs.batched_sequences;
  s.max_batch_seen = rs.max_batch_seen;
  s.overlay_pool_slabs = rs.overlay_pool_slabs;
  s.overlay_pool_slabs_in_use = rs.overlay_pool_slabs_in_use;
  s.overlay_pool_overflow_slots = rs.overlay_pool_overflow_slots;
  s.overlay_held_bytes = rs.held_bytes;
  s.overlay_host_bytes = rs.overlay_host_bytes;
  s.overlay_host_bytes_limit = rs.overlay_host_bytes_limit;
  s.overlay_device_hits = rs.overlay_device_hits;
  s.overlay_device_misses = rs.overlay_device_misses;
  s.overlay_host_hits = rs.overlay_host_hits;
  s.overlay_host_misses = rs.overlay_host_misses;
  s.overlay_promotions = rs.overlay_promotions;
  s.overlay_demotions = rs.overlay_demotions;
  s.overlay_host_evictions = rs.overlay_host_evictions;
  s.overlay_loads_in_flight = rs.overlay_loads_in_flight;
  s.overlay_waiting_requests = rs.requests_waiting_for_overlay;
  s.kv_blocks_total = rs.kv_blocks_total;
  s.kv_blocks_free = rs.kv_blocks_free;
  s.kv_block_tokens = rs.kv_block_tokens;
  s.kv_preemptions = rs.kv_preemptions;
  s.kv_preempted_waiting = rs.preempted_requests;
  const runtime::PrefixCacheStats& pc = rs.prefix_cache;
  s.prefix_cache_bytes = pc.bytes;
  s.prefix_cache_shared_bytes = pc.shared_blocks * pc.block_bytes;
  s.prefix_cache_bytes_limit = pc.capacity_bytes;
  s.prefix_cache_block_tokens = pc.block_tokens;
  s.prefix_cache_blocks = pc.blocks;
  s.prefix_cache_capacity_blocks = pc.capacity_blocks;
  s.prefix_cache_hit_blocks = pc.hit_blocks;
  s.prefix_cache_miss_blocks = pc.miss_blocks;
  s.prefix_cache_hit_tokens = pc.hit_tokens;
  s.prefix_cache_evictions = pc.evictions;
  s.prefix_cache_lookups = pc.lookups;
  s.prefix_cache_hit_lookups = pc.hit_lookups;
  return s;
}

}  // namespace tessera::services
