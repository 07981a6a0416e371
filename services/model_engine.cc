#include "services/model_engine.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/model/generate.h"
#include "core/tokenizer/byte_tokenizer.h"
#include "services/log.h"

namespace tessera::services {

ModelEngine::ModelEngine(storage::Registry* registry, std::unique_ptr<LoadedModel> model, int64_t cache_bytes)
    : registry_(registry), model_(std::move(model)), tokenizer_(std::make_unique<ByteTokenizer>()),
      cache_bytes_(cache_bytes) {}

absl::StatusOr<std::shared_ptr<const ExpertOverlay>> ModelEngine::LoadOverlay(const std::string& tenant_id,
                                                                              int64_t version) {
  auto key = std::make_pair(tenant_id, version);
  {
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto it = cache_.find(key);
    if (it != cache_.end()) {
      lru_.remove(key);
      lru_.push_front(key);
      return it->second.overlay;
    }
  }
  // Load outside the lock: concurrent loads of the same version are wasted work, never wrong.
  absl::StatusOr<storage::ExpertVersion> v = registry_->GetVersion(tenant_id, version);
  if (!v.ok()) return v.status();
  absl::StatusOr<std::string> bytes = registry_->blobs().Get(v->sha256);
  if (!bytes.ok()) return bytes.status();
  absl::StatusOr<std::shared_ptr<const ExpertOverlay>> overlay = ExpertOverlay::FromSafetensors(
      model_->model->config(), *std::move(bytes), model_->backend.get(), v->sha256);
  if (!overlay.ok()) {
    return absl::Status(overlay.status().code(),
                        absl::StrCat("version ", version, " of tenant ", tenant_id, ": ", overlay.status().message()));
  }
  std::lock_guard<std::mutex> lock(cache_mu_);
  if (cache_.count(key) == 0) {
    CacheEntry e{*overlay, v->sha256, (*overlay)->bytes()};
    cached_bytes_ += e.bytes;
    cache_[key] = e;
    lru_.push_front(key);
    // Evict least recently used versions beyond the budget (never the one just loaded). Requests
    // holding an evicted overlay keep it alive until they finish.
    while (cached_bytes_ > cache_bytes_ && lru_.size() > 1) {
      auto victim = lru_.back();
      lru_.pop_back();
      cached_bytes_ -= cache_[victim].bytes;
      cache_.erase(victim);
    }
  }
  return *overlay;
}

absl::StatusOr<ModelEngine::Resolved> ModelEngine::Resolve(const std::string& tenant_id,
                                                           std::optional<int64_t> version) {
  Resolved r;
  if (version.has_value()) {
    // Pinned: the tenant must exist (and for N >= 1 own version N).
    if (absl::StatusOr<int64_t> live = registry_->GetLive(tenant_id); !live.ok()) return live.status();
    r.version = *version;
  } else {
    std::lock_guard<std::mutex> lock(table_mu_);
    auto it = live_.find(tenant_id);
    if (it == live_.end()) {
      // First request of this tenant: the registry's pointer. A concurrent ServeLive for the tenant
      // serializes on table_mu_ and, running after the registry moved, sets the final value.
      absl::StatusOr<int64_t> live = registry_->GetLive(tenant_id);
      if (!live.ok()) return live.status();
      it = live_.emplace(tenant_id, *live).first;
    }
    r.version = it->second;
  }
  if (r.version > 0) {
    absl::StatusOr<std::shared_ptr<const ExpertOverlay>> o = LoadOverlay(tenant_id, r.version);
    if (!o.ok()) return o.status();
    r.overlay = *std::move(o);
  }
  return r;
}

absl::Status ModelEngine::ServeLive(const std::string& tenant_id, int64_t version) {
  if (version > 0) {
    absl::StatusOr<std::shared_ptr<const ExpertOverlay>> o = LoadOverlay(tenant_id, version);
    if (!o.ok()) return o.status();
  }
  std::lock_guard<std::mutex> lock(table_mu_);
  live_[tenant_id] = version;
  return absl::OkStatus();
}

std::vector<LayerRoutingStats> ModelEngine::ToLayerStats(const RoutingStats& s) const {
  std::vector<LayerRoutingStats> out;
  for (int64_t l = 0; l < s.num_layers; ++l) {
    LayerRoutingStats ls;
    ls.layer = static_cast<int>(l);
    for (int64_t e = 0; e < s.num_experts; ++e) {
      size_t i = static_cast<size_t>(l * s.num_experts + e);
      ls.expert_tokens.push_back(i < s.tokens_routed.size() ? s.tokens_routed[i] : 0);
      if (i < s.overlay_tokens.size() && s.overlay_tokens[i] > 0) ls.overlay_experts.push_back(static_cast<int>(e));
    }
    ls.entropy = s.tokens > 0 && static_cast<size_t>(l) < s.entropy_sum.size() ? s.entropy_sum[l] / s.tokens : 0;
    out.push_back(std::move(ls));
  }
  return out;
}

absl::StatusOr<GenerateOutput> ModelEngine::Generate(const std::string& tenant_id, std::optional<int64_t> version,
                                                     const GenerateParams& params, const DeltaCallback& on_delta) {
  absl::StatusOr<Resolved> r = Resolve(tenant_id, version);
  if (!r.ok()) return r.status();
  tessera::GenerateRequest req;
  req.overlay = r->overlay.get();
  req.sampling.temperature = params.temperature;
  req.sampling.top_k = params.top_k;
  req.sampling.top_p = params.top_p;
  req.sampling.seed = params.seed;
  req.max_tokens = params.max_tokens;
  req.stop = params.stop;
  req.return_routing = params.return_routing;
  waiting_.fetch_add(1);
  std::unique_lock<std::mutex> lock(model_mu_);
  waiting_.fetch_sub(1);
  active_.fetch_add(1);
  absl::StatusOr<tessera::GenerateResult> g = tessera::GenerateText(
      *model_->model, *tokenizer_, params.prompt, req, /*add_bos=*/true,
      [&on_delta](const StreamChunk& c) { return on_delta ? on_delta(c.text) : true; });
  active_.fetch_sub(1);
  lock.unlock();
  if (!g.ok()) return g.status();
  if (g->finish_reason == tessera::FinishReason::kCancelled) {
    return absl::CancelledError("the client cancelled the generation");
  }
  GenerateOutput out;
  out.text = g->text;
  out.finish_reason = g->finish_reason == tessera::FinishReason::kEos    ? FinishReason::kEos
                      : g->finish_reason == tessera::FinishReason::kStop ? FinishReason::kStop
                                                                         : FinishReason::kLength;
  out.version = r->version;
  out.prompt_tokens = static_cast<int>(g->prompt_tokens);
  out.completion_tokens = static_cast<int>(g->completion_tokens);
  if (params.return_routing) out.routing = ToLayerStats(g->routing);
  return out;
}

absl::StatusOr<ScoreOutput> ModelEngine::Score(const std::string& tenant_id, std::optional<int64_t> version,
                                               std::string_view text, bool return_routing) {
  absl::StatusOr<Resolved> r = Resolve(tenant_id, version);
  if (!r.ok()) return r.status();
  std::vector<int32_t> tokens = {tokenizer_->bos_id()};
  std::vector<int32_t> body = tokenizer_->Encode(text);
  tokens.insert(tokens.end(), body.begin(), body.end());
  const int64_t max_len = model_->model->config().max_position_embeddings;
  if (static_cast<int64_t>(tokens.size()) > max_len) {
    return absl::InvalidArgumentError(absl::StrCat("text: ", tokens.size() - 1, " tokens exceed the backbone's context of ",
                                                   max_len - 1));
  }
  SequenceInput seq;
  seq.tokens = tokens;
  seq.overlay = r->overlay.get();
  std::vector<RoutingStats> routing;
  absl::StatusOr<std::vector<std::vector<float>>> lp;
  {
    std::lock_guard<std::mutex> lock(model_mu_);
    lp = model_->model->ScoreTokens(absl::MakeConstSpan(&seq, 1), return_routing ? &routing : nullptr);
  }
  if (!lp.ok()) return lp.status();
  ScoreOutput out;
  for (float v : (*lp)[0]) out.total_logprob += v;
  out.num_tokens = static_cast<int64_t>((*lp)[0].size());
  out.perplexity = out.num_tokens > 0 ? std::exp(-out.total_logprob / out.num_tokens) : 0;
  out.version = r->version;
  if (return_routing && !routing.empty()) out.routing = ToLayerStats(routing[0]);
  return out;
}

EngineStatus ModelEngine::Status() {
  EngineStatus s;
  {
    std::lock_guard<std::mutex> lock(cache_mu_);
    for (const auto& [key, e] : cache_) {
      s.resident.push_back({key.first, key.second, e.bytes, e.sha256});
    }
    s.resident_bytes = cached_bytes_;
  }
  s.resident_bytes_limit = cache_bytes_;
  s.pending_requests = waiting_.load();
  s.active_requests = active_.load();
  return s;
}

}  // namespace tessera::services
