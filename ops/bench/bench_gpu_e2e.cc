// GPU end-to-end benchmark of Tessera's model on the CUDA backend, the C++ side of the comparison with
// ops/bench/torch_peer.py (issue 6, "Against the peer").
//
// Model: Qwen3-MoE-style (default hidden 2048, 16 layers, 32/4 heads of 128, 64 experts top-8, expert
// width 768, vocab 151936), random weights (ModelWeights::RandomInit) or --weights=DIR (an HF folder, e.g.
// the one torch_peer.py --save-dir writes, so both sides hold identical weights). Tessera runs f32
// weights and activations by default; --bf16 converts the weight matrices to bf16 (the model's tensor-core
// path: bf16 GEMM operands and KV caches, f32 residual stream and statistics; training updates f32 master
// copies of the trained slots and writes them back as bf16), the same precision as the bf16 peer.
// Measures (median of --reps, each region bracketed by Synchronize()):
//   prefill  : --batch sequences of --prompt tokens into fresh KV caches, one Forward  -> tokens/s
//   decode   : --new-tokens steps of one token for every sequence                     -> tokens/s
//              with each MoE routing (--decode-routing=host|device|both, default both): the host plan
//              (a top-k read-back per layer) and device routing (MoeRouting::kOnDevice, no read-back
//              until the step's end); first checked against each other on one step (`e2e decode
//              routing check`, rel L2 <= 2e-2: summation order differs, and a top-k near-tie may flip;
//              wrong weights or rows give O(1)), and device routing is counted only if it passes. decode_speedup and the tenants runs use the faster routing that passed.
//   train    : Forward(save_activations) + Backward + AdamW on ~10% of the expert slots, trained
//              through one overlay (CopyOfBase), --train-batch x --train-seq tokens     -> tokens/s
//   overlay  : loading a tenant version of 8 slots from its safetensors bytes (parse + host-to-device
//              copy through the backend's pinned staging), as the runtime's overlay cache does -> GB/s
//   tenants  : decode throughput of --tenant-batch sequences where sequence i carries tenant i % T's
//              overlay (each tenant owns 2 different slots per 8 layers), T in 1, 8, 64, 256
// Options: --device=cpu (a smoke test of this program without a GPU); --bf16 as above; --profile adds, after the timed runs, a per-op breakdown (ProfilingBackend:
// each op waits for the device) of a prefill, 4 decode steps and a training step; --tf32 runs Tessera's f32 GEMMs on TF32 tensor cores (SetCudaAllowTf32); --logits-ref=FILE
// compares Tessera's logits for the token ids (i * 7919) % vocab, i < 64, with the float32 [64, vocab]
// file torch_peer.py --logits-out wrote from the same weights (--weights=), printing
//   e2e logits rel_l2=<x> max_abs=<x> ref_max_abs=<x> argmax_agree=<k>/64 ok=<0|1>
// (ok: relative L2 <= --logits-tol, default 2e-2; exit 1 when not ok); --logits-only stops there.
// Output lines: `e2e <what> key=value ...`; the last line is exactly
//   train_speedup=<x> decode_speedup=<x> tenants64_ratio=<x> grouped_vs_dense=<x>
// where the speedups divide by the peer's numbers from --peer-json (torch_peer.py --json-out) and
// grouped_vs_dense is passed in from bench_gpu_grouped_gemm (--grouped-vs-dense=); a missing input gives 0.
// Without a CUDA device it prints `SKIP: ...` and exits 0.
#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/backend/backend.h"
#include "core/backend/cuda/cuda_backend.h"
#include "core/backend/profiling_backend.h"
#include "core/model/config.h"
#include "core/model/kv_cache.h"
#include "core/model/model.h"
#include "core/model/overlay.h"
#include "core/model/weights.h"
#include "core/train/adamw_state.h"
#include "nlohmann/json.hpp"
#include "ops/bench/bench_check.h"

namespace tessera {
namespace {

struct Args {
  std::string config = "qwen3-moe-2048";  // or builtin:small / builtin:tiny / a config.json path
  std::string weights;
  std::string peer_json;
  std::string logits_ref;
  bool logits_only = false;
  bool bf16 = false;
  bool profile = false;
  std::string device = "cuda";
  double logits_tol = 2e-2;
  bool tf32 = false;
  double grouped_vs_dense = 0.0;
  int64_t batch = 8, prompt = 512, new_tokens = 128;
  int64_t train_batch = 8, train_seq = 512;
  int64_t tenant_batch = 64, tenant_prompt = 128, tenant_steps = 16;
  double trainable_fraction = 0.10;
  int reps = 3;
  bool skip_train = false, skip_tenants = false;
  std::string decode_routing = "both";  // host | device | both
};

using bench::Die;
using bench::Must;

ModelConfig BigConfig() {
  ModelConfig c;
  c.family = ModelFamily::kQwen3Moe;
  c.hidden_size = 2048;
  c.num_layers = 16;
  c.num_heads = 32;
  c.num_kv_heads = 4;
  c.head_dim = 128;
  c.num_experts = 64;
  c.top_k = 8;
  c.expert_dim = 768;
  c.vocab_size = 151936;
  c.max_position_embeddings = 4096;
  c.norm_topk_prob = true;
  c.tie_word_embeddings = false;
  c.rms_norm_eps = 1e-6f;
  c.rope_theta = 1e6f;
  c.qk_norm = QkNorm::kPerHead;
  return c;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double TimeMs(Backend& b, int reps, const std::function<void()>& fn) {
  fn();  // warm-up
  CHECK_OK(b.Synchronize());
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    CHECK_OK(b.Synchronize());
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return Median(t);
}

std::vector<int32_t> RandomTokens(int64_t n, int64_t vocab, std::mt19937& rng) {
  std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = d(rng);
  return v;
}

// Prefill `prompts` into fresh caches (host-planned routing: the big batch), then `steps` decode steps
// with `routing`; returns {prefill_ms, decode_ms}. With `profile`, that backend's op table covers the
// prefill (profile[0]) / decode steps (profile[1]).
std::pair<double, double> PrefillDecode(const Model& model, Backend& b, const std::vector<std::vector<int32_t>>& prompts,
                                        const std::vector<const ExpertOverlay*>& overlays, int64_t steps,
                                        MoeRouting routing, std::vector<std::unique_ptr<KvCache>>& caches,
                                        std::mt19937& rng, ProfilingBackend* profile = nullptr,
                                        std::string* reports = nullptr) {
  const size_t n = prompts.size();
  for (auto& c : caches) c->Reset();
  std::vector<SequenceInput> batch(n);
  for (size_t i = 0; i < n; ++i) batch[i] = SequenceInput{prompts[i], overlays[i], caches[i].get()};
  CHECK_OK(b.Synchronize());
  if (profile != nullptr) profile->set_enabled(true);
  auto t0 = std::chrono::steady_clock::now();
  Must(model.Forward(batch), "prefill Forward");
  CHECK_OK(b.Synchronize());
  const double prefill = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (profile != nullptr) {
    reports[0] = profile->Report(prefill * 1e-3);
    profile->Reset();
  }
  std::vector<std::vector<int32_t>> next(n, std::vector<int32_t>(1));
  const int64_t vocab = model.config().vocab_size;
  t0 = std::chrono::steady_clock::now();
  for (int64_t s = 0; s < steps; ++s) {
    for (size_t i = 0; i < n; ++i) {
      next[i][0] = RandomTokens(1, vocab, rng)[0];
      batch[i].tokens = next[i];
    }
    ForwardOptions opt;
    opt.moe_routing = routing;
    Must(model.Forward(batch, opt), "decode Forward");
  }
  CHECK_OK(b.Synchronize());
  const double decode = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (profile != nullptr) {
    reports[1] = profile->Report(decode * 1e-3);
    profile->Reset();
    profile->set_enabled(false);
  }
  return {prefill, decode};
}

double PeerNumber(const std::string& path, const char* section) {
  if (path.empty()) return 0.0;
  std::ifstream f(path);
  if (!f) return 0.0;
  nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
  if (j.is_discarded() || !j.contains(section)) return 0.0;
  return j[section].value("tokens_per_s", 0.0);
}

// Logits of one sequence (i * 7919) % vocab, i < 64 (torch_peer.py --logits-out's ids) against the
// reference file; prints the `e2e logits` line and returns whether they agree within bf16 tolerance.
bool CompareLogits(const Model& model, Backend& b, const std::string& path, double tol) {
  const int64_t n = 64, vocab = model.config().vocab_size;
  std::vector<float> ref(static_cast<size_t>(n * vocab));
  std::ifstream f(path, std::ios::binary);
  if (!f.read(reinterpret_cast<char*>(ref.data()), static_cast<std::streamsize>(ref.size() * sizeof(float)))) {
    std::fprintf(stderr, "FAILED reading %s: expected %lld float32 values ([64, vocab])\n", path.c_str(),
                 static_cast<long long>(ref.size()));
    return false;
  }
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * 7919) % vocab);
  ForwardOptions fo;
  fo.logits = LogitsMode::kAll;
  ForwardResult fr = Must(model.Forward({SequenceInput{ids, nullptr, nullptr}}, fo), "logits Forward");
  if (fr.logits.dtype() != DType::kF32 || fr.logits.numel() != n * vocab) {
    std::fprintf(stderr, "FAILED logits: got %s, expected f32 [64, %lld]\n", fr.logits.DebugString().c_str(),
                 static_cast<long long>(vocab));
    return false;
  }
  std::vector<float> got(ref.size());
  CHECK_OK(b.CopyToHost(fr.logits, got.data(), got.size() * sizeof(float)));
  double num = 0, den = 0, max_abs = 0, ref_max = 0;
  int argmax_agree = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* r = ref.data() + i * vocab;
    const float* g = got.data() + i * vocab;
    int64_t ar = 0, ag = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      const double d = static_cast<double>(g[v]) - r[v];
      num += d * d;
      den += static_cast<double>(r[v]) * r[v];
      max_abs = std::max(max_abs, std::abs(d));
      ref_max = std::max(ref_max, static_cast<double>(std::abs(r[v])));
      if (r[v] > r[ar]) ar = v;
      if (g[v] > g[ag]) ag = v;
    }
    argmax_agree += ar == ag;
  }
  const double rel = std::sqrt(num / std::max(den, 1e-30));
  const bool ok = rel <= tol;
  std::printf("e2e logits rel_l2=%.3e max_abs=%.3e ref_max_abs=%.3e argmax_agree=%d/%lld tol=%.1e ok=%d\n", rel, max_abs, ref_max,
              argmax_agree, static_cast<long long>(n), tol, ok ? 1 : 0);
  std::fflush(stdout);
  return ok;
}

const char* RoutingName(MoeRouting r) { return r == MoeRouting::kOnDevice ? "device" : "host"; }

// One prefill + decode step with each routing from identical caches: the decode logits must agree.
// Prints the `e2e decode routing check` line and returns whether they agree within `tol` (rel L2).
bool DecodeRoutingCheck(const Model& model, Backend& b, const std::vector<std::vector<int32_t>>& prompts,
                        const std::vector<const ExpertOverlay*>& overlays,
                        std::vector<std::unique_ptr<KvCache>>& caches, double tol) {
  std::vector<std::vector<float>> logits;
  const std::vector<int32_t> next = {17};
  for (MoeRouting routing : {MoeRouting::kHostPlan, MoeRouting::kOnDevice}) {
    for (auto& c : caches) c->Reset();
    std::vector<SequenceInput> batch;
    for (size_t i = 0; i < prompts.size(); ++i) batch.push_back(SequenceInput{prompts[i], overlays[i], caches[i].get()});
    Must(model.Forward(batch), "check prefill Forward");
    for (SequenceInput& in : batch) in.tokens = next;
    ForwardOptions opt;
    opt.moe_routing = routing;
    ForwardResult fr = Must(model.Forward(batch, opt), "check decode Forward");
    logits.push_back(Must(b.ToHostF32(fr.logits), "check logits"));
  }
  double num = 0, den = 0;
  for (size_t i = 0; i < logits[0].size(); ++i) {
    const double d = static_cast<double>(logits[1][i]) - logits[0][i];
    num += d * d;
    den += static_cast<double>(logits[0][i]) * logits[0][i];
  }
  const double rel = std::sqrt(num / std::max(den, 1e-30));
  const bool ok = std::isfinite(rel) && rel <= tol;
  std::printf("e2e decode routing check (device vs host plan, one step) rel_l2=%.3e tol=%.1e ok=%d\n", rel, tol, ok ? 1 : 0);
  std::fflush(stdout);
  return ok;
}

int Run(const Args& a) {
  // --device=cpu runs the same program on the CPU backend: a smoke test of this benchmark's own code
  // (bf16, training through masters, --profile) on a machine without a GPU; its numbers mean nothing.
  auto made = a.device == "cpu" ? absl::StatusOr<std::unique_ptr<Backend>>(MakeCpuBackend()) : MakeCudaBackend(0);
  if (!made.ok()) {
    std::printf("SKIP: no CUDA device: %s\n", std::string(made.status().message()).c_str());
    return 0;
  }
  Backend& dev = **made;
  // Everything below runs through `b`, a ProfilingBackend over the device: disabled (a pass-through)
  // except in the --profile runs, which come after the timed ones.
  ProfilingBackend b(&dev);
  // The model's index tensors come from its own routing plan: skip the per-op synchronizing range checks
  // (bad indices would still be reported at the next synchronization).
  if (a.device != "cpu") {
    CHECK_OK(SetCudaEagerIndexChecks(dev, false));
    CHECK_OK(SetCudaAllowTf32(dev, a.tf32));
  }
  ModelConfig config = a.config == "qwen3-moe-2048"
                           ? BigConfig()
                           : (a.config.rfind("builtin:", 0) == 0 ? Must(ModelConfig::Builtin(a.config), "config")
                                                                 : Must(ModelConfig::FromFile(a.config), "config"));
  CHECK_OK(config.Validate());
  auto t0 = std::chrono::steady_clock::now();
  ModelWeights weights = a.weights.empty() ? Must(ModelWeights::RandomInit(config, 1234, &b), "RandomInit")
                                           : Must(ModelWeights::LoadFromPath(config, a.weights, &b), "LoadFromPath");
  if (a.bf16) weights = Must(weights.WithMatrixDtype(config, DType::kBF16, &b), "WithMatrixDtype");
  std::unique_ptr<Model> model = Must(Model::Create(config, std::move(weights), &b), "Model::Create");
  const DType mdt = model->weights().matrix_dtype();
  CHECK_OK(b.Synchronize());
  std::printf("e2e device=%s config=%s params=%lld weights=%s load_s=%.1f dtype=%s\n", b.name().c_str(),
              a.config.c_str(), static_cast<long long>(config.NumParameters()),
              a.weights.empty() ? "random" : a.weights.c_str(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), a.bf16 ? "bf16" : a.tf32 ? "f32+tf32" : "f32");
  std::fflush(stdout);
  if (!a.logits_ref.empty()) {
    const bool ok = CompareLogits(*model, b, a.logits_ref, a.logits_tol);
    if (!ok) return 1;
    if (a.logits_only) return 0;
  }
  std::mt19937 rng(99);

  // ---- prefill / decode ----
  std::vector<std::unique_ptr<KvCache>> caches;
  for (int64_t i = 0; i < a.batch; ++i) {
    caches.push_back(Must(KvCache::Create(config, a.prompt + a.new_tokens + 1, &b, mdt), "KvCache::Create"));
  }
  std::vector<std::vector<int32_t>> prompts;
  for (int64_t i = 0; i < a.batch; ++i) prompts.push_back(RandomTokens(a.prompt, config.vocab_size, rng));
  std::vector<const ExpertOverlay*> no_overlay(a.batch, nullptr);
  std::vector<MoeRouting> routings;
  if (a.decode_routing != "device") routings.push_back(MoeRouting::kHostPlan);
  if (a.decode_routing != "host") {
    const bool ok = DecodeRoutingCheck(*model, b, prompts, no_overlay, caches, 2e-2);
    if (ok) {
      routings.push_back(MoeRouting::kOnDevice);
    } else if (routings.empty()) {
      std::fprintf(stderr, "FAILED: --decode-routing=device and the device routing check failed\n");
      return 1;
    }
  }
  double prefill_tps = 0.0, decode_tps = 0.0;
  MoeRouting best = routings.front();
  for (MoeRouting routing : routings) {
    PrefillDecode(*model, b, prompts, no_overlay, 2, routing, caches, rng);  // warm-up
    std::vector<double> pre, dec;
    for (int r = 0; r < a.reps; ++r) {
      auto [p, d] = PrefillDecode(*model, b, prompts, no_overlay, a.new_tokens, routing, caches, rng);
      pre.push_back(p);
      dec.push_back(d);
    }
    prefill_tps = std::max(prefill_tps, a.batch * a.prompt / (Median(pre) * 1e-3));
    const double tps = a.batch * a.new_tokens / (Median(dec) * 1e-3);
    if (tps > decode_tps) {
      decode_tps = tps;
      best = routing;
    }
    std::printf("e2e decode routing=%s batch=%lld new_tokens=%lld ms=%.2f tokens_per_s=%.1f\n", RoutingName(routing),
                static_cast<long long>(a.batch), static_cast<long long>(a.new_tokens), Median(dec), tps);
    std::fflush(stdout);
  }
  std::printf("e2e prefill batch=%lld prompt=%lld tokens_per_s=%.1f\n", static_cast<long long>(a.batch),
              static_cast<long long>(a.prompt), prefill_tps);
  std::printf("e2e decode best routing=%s tokens_per_s=%.1f\n", RoutingName(best), decode_tps);
  if (a.profile) {
    for (MoeRouting routing : routings) {
      std::string reports[2];
      const auto [p, d] = PrefillDecode(*model, b, prompts, no_overlay, 4, routing, caches, rng, &b, reports);
      if (routing == routings.front()) {
        std::printf("e2e profile prefill (ops serialized: each op waits for the device) wall_ms=%.2f\n%s", p,
                    reports[0].c_str());
      }
      std::printf("e2e profile decode routing=%s 4 steps (ops serialized) wall_ms=%.2f\n%s", RoutingName(routing), d,
                  reports[1].c_str());
    }
  }
  std::fflush(stdout);
  caches.clear();

  // ---- training step on ~10% of the expert slots ----
  double train_tps = 0.0;
  if (!a.skip_train) {
    const int64_t total = config.num_layers * config.num_experts;
    std::vector<int64_t> order(total);
    for (int64_t i = 0; i < total; ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<SlotId> slots;
    for (int64_t i = 0; i < std::max<int64_t>(1, static_cast<int64_t>(total * a.trainable_fraction)); ++i) {
      slots.push_back(SlotId{static_cast<int32_t>(order[i] / config.num_experts),
                             static_cast<int32_t>(order[i] % config.num_experts)});
    }
    std::sort(slots.begin(), slots.end());
    auto overlay = Must(ExpertOverlay::CopyOfBase(config, model->weights(), slots, &b), "CopyOfBase");
    Gradients grads = Must(Gradients::Create(config, TrainableSet::Slots(slots), &b), "Gradients::Create");
    // AdamW state per trainable tensor (train::AdamWState: an f32 master for bf16 weights); the overlay's
    // tensors are shared handles, updated in place.
    struct Trained {
      Tensor param, grad;
      train::AdamWState opt;
    };
    std::vector<Trained> trained;
    for (const auto& [slot, w] : overlay->slots()) {
      const ExpertWeights& g = grads.slots.at(slot);
      for (auto [p, gr] : {std::pair{w.gate, g.gate}, std::pair{w.up, g.up}, std::pair{w.down, g.down}}) {
        trained.push_back(Trained{p, gr, Must(train::AdamWState::Create(b, p), "AdamWState::Create")});
      }
    }
    std::vector<std::vector<int32_t>> seqs;
    for (int64_t i = 0; i < a.train_batch; ++i) seqs.push_back(RandomTokens(a.train_seq, config.vocab_size, rng));
    std::vector<SequenceInput> batch;
    std::vector<int32_t> targets;
    for (const auto& s : seqs) {
      batch.push_back(SequenceInput{s, overlay.get(), nullptr});
      for (size_t t = 0; t < s.size(); ++t) targets.push_back(t + 1 < s.size() ? s[t + 1] : -1);
    }
    ForwardOptions fo;
    fo.logits = LogitsMode::kAll;
    fo.save_activations = true;
    int64_t step = 0;
    auto train_step = [&] {
      ForwardResult fr = Must(model->Forward(batch, fo), "train Forward");
      Must(model->Backward(fr, LossTargets{targets}, &grads), "Backward");
      AdamWParams p;
      p.lr = 1e-5f;
      p.step = ++step;
      std::vector<AdamWTensor> entries;  // the whole update in one launch, as the product's Trainer does
      for (Trained& t : trained) entries.push_back(t.opt.Entry(t.param, t.grad, p.weight_decay));
      CHECK_OK(b.AdamWMany(entries, p));
      CHECK_OK(grads.Zero(&b));
    };
    const double ms = TimeMs(b, a.reps, train_step);
    if (a.profile) {
      CHECK_OK(b.Synchronize());
      b.set_enabled(true);
      const auto t0 = std::chrono::steady_clock::now();
      train_step();
      CHECK_OK(b.Synchronize());
      const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      b.set_enabled(false);
      std::printf("e2e profile train step (ops serialized) wall_ms=%.2f\n%s", wall * 1e3, b.Report(wall).c_str());
      b.Reset();
    }
    train_tps = a.train_batch * a.train_seq / (ms * 1e-3);
    std::printf("e2e train batch=%lld seq=%lld trainable_slots=%zu/%lld step_ms=%.2f tokens_per_s=%.1f\n",
                static_cast<long long>(a.train_batch), static_cast<long long>(a.train_seq), slots.size(),
                static_cast<long long>(total), ms, train_tps);
    std::fflush(stdout);
  }

  // ---- overlay load (a tenant's version arriving from the registry) ----
  {
    std::vector<SlotId> s;
    for (int32_t i = 0; i < 8; ++i) s.push_back(SlotId{i % static_cast<int32_t>(config.num_layers), i});
    std::sort(s.begin(), s.end());
    auto ov = Must(ExpertOverlay::CopyOfBase(config, model->weights(), s, &b), "CopyOfBase");
    const std::string bytes = Must(ov->Serialize(), "Serialize");
    const double ms = TimeMs(b, a.reps, [&] {
      Must(ExpertOverlay::FromSafetensors(config, bytes, &b, ov->digest(), mdt), "FromSafetensors");
    });
    std::printf("e2e overlay_load slots=%zu mb=%.1f ms=%.2f gb_per_s=%.2f\n", s.size(), bytes.size() / 1e6, ms,
                bytes.size() / 1e6 / ms);
    std::fflush(stdout);
  }

  // ---- mixed tenants ----
  double tenants_ratio = 0.0;
  if (!a.skip_tenants) {
    std::vector<std::unique_ptr<KvCache>> tc;
    for (int64_t i = 0; i < a.tenant_batch; ++i) {
      tc.push_back(Must(KvCache::Create(config, a.tenant_prompt + a.tenant_steps + 1, &b, mdt), "KvCache::Create"));
    }
    std::vector<std::vector<int32_t>> tp;
    for (int64_t i = 0; i < a.tenant_batch; ++i) tp.push_back(RandomTokens(a.tenant_prompt, config.vocab_size, rng));
    std::map<int, double> tps;
    for (int tenants : {1, 8, 64, 256}) {
      std::vector<std::shared_ptr<const ExpertOverlay>> ovs;
      std::uniform_int_distribution<int32_t> pick_e(0, static_cast<int32_t>(config.num_experts - 1));
      for (int t = 0; t < tenants; ++t) {
        std::vector<SlotId> s;
        for (int32_t l = 0; l < config.num_layers; l += 8) {
          for (int k = 0; k < 2; ++k) s.push_back(SlotId{l, pick_e(rng)});
        }
        std::sort(s.begin(), s.end());
        s.erase(std::unique(s.begin(), s.end()), s.end());
        ovs.push_back(Must(ExpertOverlay::CopyOfBase(config, model->weights(), s, &b), "CopyOfBase"));
      }
      std::vector<const ExpertOverlay*> per_seq(a.tenant_batch);
      for (int64_t i = 0; i < a.tenant_batch; ++i) per_seq[i] = ovs[i % tenants].get();
      PrefillDecode(*model, b, tp, per_seq, 2, best, tc, rng);  // warm-up
      std::vector<double> d;
      for (int r = 0; r < a.reps; ++r) d.push_back(PrefillDecode(*model, b, tp, per_seq, a.tenant_steps, best, tc, rng).second);
      tps[tenants] = a.tenant_batch * a.tenant_steps / (Median(d) * 1e-3);
      std::printf("e2e tenants=%d batch=%lld routing=%s decode_tokens_per_s=%.1f\n", tenants,
                  static_cast<long long>(a.tenant_batch), RoutingName(best), tps[tenants]);
      std::fflush(stdout);
    }
    tenants_ratio = tps[1] > 0 ? tps[64] / tps[1] : 0.0;
  }

  const double peer_train = PeerNumber(a.peer_json, "train"), peer_decode = PeerNumber(a.peer_json, "decode");
  const double peer_prefill = PeerNumber(a.peer_json, "prefill");
  std::printf("e2e peer train_tokens_per_s=%.1f prefill_tokens_per_s=%.1f decode_tokens_per_s=%.1f (from %s)\n",
              peer_train, peer_prefill, peer_decode, a.peer_json.empty() ? "none" : a.peer_json.c_str());
  std::printf("train_speedup=%.3f decode_speedup=%.3f tenants64_ratio=%.3f grouped_vs_dense=%.3f\n",
              peer_train > 0 ? train_tps / peer_train : 0.0, peer_decode > 0 ? decode_tps / peer_decode : 0.0,
              tenants_ratio, a.grouped_vs_dense);
  return 0;
}

}  // namespace
}  // namespace tessera

namespace {

constexpr char kUsage[] = R"(usage: bench_gpu_e2e [options]
Tessera's model on the CUDA backend: prefill, decode (host plan vs device MoE routing), a training step
on ~10% of the expert slots, an overlay load, and mixed-tenant decode; compared with torch_peer.py's
numbers. The last line is `train_speedup=<x> decode_speedup=<x> tenants64_ratio=<x> grouped_vs_dense=<x>`.
Prints `SKIP: ...` and exits 0 without a CUDA device (unless --device=cpu).
  --config=FILE          HF config.json (default: the Qwen3-MoE-style config of issue 6)
  --weights=DIR          HF safetensors folder (default: random weights)
  --bf16                 bf16 weight matrices, KV caches and GEMM operands (f32 otherwise)
  --tf32                 f32 GEMMs on TF32 tensor cores
  --device=cpu           run on the CPU backend (a smoke test of this program)
  --profile              per-op breakdown of a prefill, 4 decode steps and a training step
  --decode-routing=R     host, device or both (default both: checked against each other, faster counted)
  --batch=N --prompt=N --new-tokens=N        prefill/decode shape (default 8, 512, 128)
  --train-batch=N --train-seq=N              training step shape (default 8, 512)
  --tenant-batch=N       sequences in the mixed-tenant decode runs (default 64)
  --reps=N               repetitions per measurement, median reported (default 3)
  --skip-train --skip-tenants                leave those phases out
  --peer-json=FILE       torch_peer.py --json-out numbers for the speedups
  --grouped-vs-dense=X   bench_gpu_grouped_gemm's ratio, echoed on the last line
  --logits-ref=FILE      compare logits with torch_peer.py --logits-out (exit 1 when off)
  --logits-tol=X         relative L2 tolerance for --logits-ref (default 2e-2)
  --logits-only          stop after the logits check
)";

}  // namespace

int main(int argc, char** argv) {
  tessera::Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    auto val = [&](const char* key) -> const char* {
      const size_t n = std::strlen(key);
      return arg.compare(0, n, key) == 0 ? argv[i] + n : nullptr;
    };
    if (const char* v = val("--config=")) a.config = v;
    else if (const char* v = val("--weights=")) a.weights = v;
    else if (const char* v = val("--peer-json=")) a.peer_json = v;
    else if (const char* v = val("--logits-ref=")) a.logits_ref = v;
    else if (arg == "--logits-only") a.logits_only = true;
    else if (const char* v = val("--logits-tol=")) a.logits_tol = std::atof(v);
    else if (arg == "--tf32") a.tf32 = true;
    else if (arg == "--bf16") a.bf16 = true;
    else if (arg == "--profile") a.profile = true;
    else if (const char* v = val("--device=")) a.device = v;
    else if (const char* v = val("--grouped-vs-dense=")) a.grouped_vs_dense = std::atof(v);
    else if (const char* v = val("--batch=")) a.batch = std::atoll(v);
    else if (const char* v = val("--prompt=")) a.prompt = std::atoll(v);
    else if (const char* v = val("--new-tokens=")) a.new_tokens = std::atoll(v);
    else if (const char* v = val("--train-batch=")) a.train_batch = std::atoll(v);
    else if (const char* v = val("--train-seq=")) a.train_seq = std::atoll(v);
    else if (const char* v = val("--tenant-batch=")) a.tenant_batch = std::atoll(v);
    else if (const char* v = val("--reps=")) a.reps = std::atoi(v);
    else if (arg == "--skip-train") a.skip_train = true;
    else if (arg == "--skip-tenants") a.skip_tenants = true;
    else if (const char* v = val("--decode-routing=")) a.decode_routing = v;
    else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (a.decode_routing != "host" && a.decode_routing != "device" && a.decode_routing != "both") {
    std::fprintf(stderr, "--decode-routing=%s: expected host, device or both\n", a.decode_routing.c_str());
    return 2;
  }
  return tessera::Run(a);
}
