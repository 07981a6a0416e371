// Shared fixtures for the runtime tests: a small random MoE model, overlays that change its output,
// an in-memory VersionSource, and a plain single-request generation loop (the reference the batched
// runtime must reproduce token for token).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/backend/backend.h"
#include "core/model/config.h"
#include "core/model/kv_cache.h"
#include "core/model/model.h"
#include "core/model/overlay.h"
#include "core/model/weights.h"
#include "core/runtime/runtime.h"
#include "core/runtime/version_source.h"
#include "core/sampling/sampler.h"
#include "core/sampling/stop_matcher.h"
#include "core/tokenizer/byte_tokenizer.h"
#include "gtest/gtest.h"
#include "tests/core/model/random_overlay.h"

namespace tessera::runtime::testing {

// Polls `cond` (1 ms apart, 20 s at most: generous for a loaded machine) and fails the test if it never
// held. Tests wait for states this way, never for time.
inline void WaitFor(const std::function<bool()>& cond) {
  for (int i = 0; i < 20000 && !cond(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_TRUE(cond());
}

// Every StepInfo the runtime reports (RuntimeOptions::on_step), for tests that check what steps ran.
struct StepLog {
  std::mutex mu;
  std::vector<StepInfo> steps;
  void Add(const StepInfo& s) {
    std::lock_guard<std::mutex> lock(mu);
    steps.push_back(s);
  }
  int64_t MaxSequences() {
    std::lock_guard<std::mutex> lock(mu);
    int64_t m = 0;
    for (const StepInfo& s : steps) m = std::max(m, s.sequences);
    return m;
  }
  int64_t Preempted() {
    std::lock_guard<std::mutex> lock(mu);
    int64_t n = 0;
    for (const StepInfo& s : steps) n += s.preempted;
    return n;
  }
};

// Byte vocabulary padded to 264 rows like builtin:tiny, but much narrower so each test runs fast.
inline ModelConfig SmallConfig() {
  ModelConfig c = ModelConfig::BuiltinTiny();
  c.hidden_size = 64;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.num_experts = 8;
  c.top_k = 2;
  c.expert_dim = 32;
  c.max_position_embeddings = 256;
  return c;
}

// An in-memory registry: live pointers and version blobs, with a load counter.
class MemorySource : public VersionSource {
 public:
  absl::StatusOr<int64_t> LiveVersion(const std::string& tenant) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(tenant);
    if (it == live_.end()) return absl::NotFoundError(absl::StrCat("tenant '", tenant, "' not found"));
    return it->second;
  }
  absl::StatusOr<VersionBlob> LoadVersion(const std::string& tenant, int64_t version) override {
    loads_.fetch_add(1);
    if (before_load) before_load();
    std::lock_guard<std::mutex> lock(mu_);
    auto it = blobs_.find({tenant, version});
    if (it == blobs_.end()) {
      return absl::NotFoundError(absl::StrCat("tenant '", tenant, "' has no version ", version));
    }
    return it->second;
  }
  void SetLive(const std::string& tenant, int64_t version) {
    std::lock_guard<std::mutex> lock(mu_);
    live_[tenant] = version;
  }
  void Put(const std::string& tenant, int64_t version, VersionBlob blob) {
    std::lock_guard<std::mutex> lock(mu_);
    blobs_[{tenant, version}] = std::move(blob);
    live_.emplace(tenant, 0);
  }
  int loads() const { return loads_.load(); }
  std::function<void()> before_load;  // runs at the start of every LoadVersion (set before use)

 private:
  std::mutex mu_;
  std::map<std::string, int64_t> live_;
  std::map<std::pair<std::string, int64_t>, VersionBlob> blobs_;
  std::atomic<int> loads_{0};
};

// A version: its overlay (as the test's reference uses it) and its serialized blob.
struct TestVersion {
  std::shared_ptr<const ExpertOverlay> overlay;
  VersionBlob blob;
};

// Random overlay weights U(-0.3, 0.3) on `slots` (far larger than the backbone's init, so every
// version visibly changes the text). The blob's sha256 is the overlay's computed content digest.
inline TestVersion MakeVersion(const ModelConfig& config, Backend* be, const std::vector<SlotId>& slots,
                               uint32_t seed) {
  std::shared_ptr<const ExpertOverlay> built = RandomOverlay(config, be, slots, seed).value();
  TestVersion v;
  v.blob.safetensors_bytes = built->Serialize().value();
  v.overlay = ExpertOverlay::FromSafetensors(config, v.blob.safetensors_bytes, be).value();
  v.blob.sha256 = v.overlay->digest();
  return v;
}

// Every slot of every layer whose expert index is in `experts`.
inline std::vector<SlotId> SlotsFor(const ModelConfig& c, std::vector<int> experts) {
  std::vector<SlotId> out;
  for (int l = 0; l < c.num_layers; ++l) {
    for (int e : experts) out.push_back({l, e});
  }
  return out;
}

struct RefOutput {
  std::vector<int32_t> tokens;
  std::string text;
  FinishReason finish = FinishReason::kLength;
  RoutingStats routing;
};

// The plain loop: BOS + prompt prefilled alone with its own KV cache, then one token at a time.
// Same masking / EOS / stop / length rules as the runtime's documentation.
inline RefOutput RefGenerate(const Model& model, const ExpertOverlay* overlay, const GenerateParams& p,
                             int64_t capacity) {
  ByteTokenizer tok;
  const ModelConfig& c = model.config();
  Backend* be = model.backend();
  std::vector<int32_t> step = tok.Encode(p.prompt);
  step.insert(step.begin(), tok.bos_id());
  std::unique_ptr<KvCache> cache = KvCache::Create(c, capacity, be).value();
  SamplingParams sp{p.temperature, p.top_k, p.top_p, p.seed};
  Sampler sampler(sp);
  StopMatcher stop(p.stop);
  RefOutput out;
  out.routing.Init(c.num_layers, c.num_experts);
  ForwardOptions opt;
  opt.collect_routing = true;
  for (;;) {
    SequenceInput in[1] = {{step, overlay, cache.get()}};
    ForwardResult fr = model.Forward(in, opt).value();
    out.routing.Merge(fr.routing[0]);
    std::vector<float> logits = be->ToHostF32(fr.logits).value();
    for (int64_t i = tok.vocab_size(); i < c.vocab_size; ++i) logits[i] = -std::numeric_limits<float>::infinity();
    logits[tok.pad_id()] = logits[tok.bos_id()] = -std::numeric_limits<float>::infinity();
    const int32_t t = sampler.Sample(logits);
    if (t == tok.eos_id()) {
      out.finish = FinishReason::kEos;
      break;
    }
    out.tokens.push_back(t);
    stop.Feed(tok.DecodeToken(t));
    if (stop.stopped()) {
      out.finish = FinishReason::kStop;
      break;
    }
    if (static_cast<int>(out.tokens.size()) >= p.max_tokens || cache->length() >= capacity) {
      out.finish = FinishReason::kLength;
      break;
    }
    step.assign(1, t);
  }
  out.text = std::string(stop.output());
  return out;
}

// A model, tokenizer and source with tenants "acme" (v1, v2), "beta" (v1), "gamma" (v1) — each
// version on different slots and weights — and "delta" with no versions (live = base).
struct World {
  World() {
    config = SmallConfig();
    ModelWeights w = ModelWeights::RandomInit(config, 1234, be.get()).value();
    model = Model::Create(config, std::move(w), be.get()).value();
    Add("acme", 1, SlotsFor(config, {0, 1, 2, 3}), 11);
    Add("acme", 2, SlotsFor(config, {0, 1, 4, 5}), 12);
    Add("beta", 1, SlotsFor(config, {2, 3, 6, 7}), 21);
    Add("gamma", 1, SlotsFor(config, {0, 4, 5, 6, 7}), 31);
    source.SetLive("delta", 0);
  }
  void Add(const std::string& tenant, int64_t version, std::vector<SlotId> slots, uint32_t seed) {
    TestVersion v = MakeVersion(config, be.get(), slots, seed);
    source.Put(tenant, version, v.blob);
    versions[{tenant, version}] = v;
  }
  const ExpertOverlay* Overlay(const std::string& tenant, int64_t version) const {
    if (version == 0) return nullptr;
    return versions.at({tenant, version}).overlay.get();
  }
  RefOutput Ref(const std::string& tenant, int64_t version, const GenerateParams& p, int64_t capacity) const {
    return RefGenerate(*model, Overlay(tenant, version), p, capacity);
  }
  std::unique_ptr<Runtime> MakeRuntime(RuntimeOptions o) {
    return Runtime::Create(model.get(), &tokenizer, &source, o).value();
  }

  std::unique_ptr<Backend> be = MakeCpuBackend();
  ModelConfig config;
  std::unique_ptr<Model> model;
  ByteTokenizer tokenizer;
  MemorySource source;
  std::map<std::pair<std::string, int64_t>, TestVersion> versions;
};

}  // namespace tessera::runtime::testing
