// Test-only: a plain, obviously-correct double-precision forward of the MoE decoder (loops, no
// backend), used as the reference for Model::Forward. Written from the HF modeling code's math:
// RMSNorm, q/k norm per family, rotate-half RoPE, causal GQA softmax attention, softmax router
// with top-k (ties: lower index first) and optional renormalization, SwiGLU experts.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/backend/backend.h"
#include "core/model/config.h"
#include "core/model/hf_names.h"
#include "core/model/overlay.h"
#include "core/model/weights.h"

namespace tessera::testing {

using Vec = std::vector<double>;

struct RefWeights {
  std::map<std::string, Vec> t;  // HF name -> values
  const Vec& at(const std::string& name) const { return t.at(name); }
};
// slot -> {gate, up, down}
using RefOverlay = std::map<SlotId, std::array<Vec, 3>>;

inline Vec ToVec(const std::vector<float>& v) { return Vec(v.begin(), v.end()); }

inline RefWeights HostWeights(const ModelConfig& c, ModelWeights& w, Backend* be) {
  RefWeights out;
  for (const NamedParam& p : w.Parameters(c)) out.t[p.name] = ToVec(be->ToHostF32(*p.tensor).value());
  if (c.tie_word_embeddings) out.t[hf::LmHeadName()] = out.t[hf::EmbedName()];
  return out;
}

inline RefOverlay HostOverlay(const ExpertOverlay& o, Backend* be) {
  RefOverlay out;
  for (const auto& [slot, w] : o.slots()) {
    out[slot] = {ToVec(be->ToHostF32(w.gate).value()), ToVec(be->ToHostF32(w.up).value()),
                 ToVec(be->ToHostF32(w.down).value())};
  }
  return out;
}

// y[r] = sum_c W[r, c] x[c], W [rows, cols]
inline Vec MatVec(const Vec& w, const Vec& x, int64_t rows, int64_t cols) {
  Vec y(rows, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0;
    for (int64_t c = 0; c < cols; ++c) s += w[r * cols + c] * x[c];
    y[r] = s;
  }
  return y;
}

inline void RmsNormInPlace(double* x, const double* w, int64_t n, double eps) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const double r = 1.0 / std::sqrt(ss / n + eps);
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] * r * w[i];
}

inline void RopeInPlace(double* x, int64_t hd, int64_t pos, double theta) {
  const int64_t half = hd / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double inv = std::pow(theta, -2.0 * i / hd);
    // HF computes the angle in float32 (inv_freq float32, positions float32); mimic that so large
    // positions agree to float precision.
    const float a = static_cast<float>(pos) * static_cast<float>(inv);
    const double c = std::cos(static_cast<double>(a)), s = std::sin(static_cast<double>(a));
    const double x0 = x[i], x1 = x[i + half];
    x[i] = x0 * c - x1 * s;
    x[i + half] = x1 * c + x0 * s;
  }
}

struct RefOutput {
  Vec logits;                                // [T, V]
  std::vector<std::vector<int>> topk;        // [L][T * k] chosen experts (sorted by prob desc)
};

inline RefOutput RefForward(const ModelConfig& c, const RefWeights& w, const std::vector<int32_t>& tokens,
                            const RefOverlay* overlay = nullptr) {
  const int64_t T = tokens.size(), D = c.hidden_size, H = c.num_heads, KVH = c.num_kv_heads,
                hd = c.head_dim, E = c.num_experts, K = c.top_k, F = c.expert_dim, V = c.vocab_size;
  const double eps = c.rms_norm_eps;
  RefOutput out;
  std::vector<Vec> x(T, Vec(D));
  const Vec& emb = w.at(hf::EmbedName());
  for (int64_t t = 0; t < T; ++t) std::copy(emb.begin() + tokens[t] * D, emb.begin() + (tokens[t] + 1) * D, x[t].begin());
  for (int64_t l = 0; l < c.num_layers; ++l) {
    auto name = [&](hf::LayerTensor lt) { return hf::LayerTensorName(c.family, l, lt); };
    std::vector<Vec> q(T), k(T), v(T);
    for (int64_t t = 0; t < T; ++t) {
      Vec xn = x[t];
      RmsNormInPlace(xn.data(), w.at(name(hf::LayerTensor::kInputNorm)).data(), D, eps);
      q[t] = MatVec(w.at(name(hf::LayerTensor::kQProj)), xn, H * hd, D);
      k[t] = MatVec(w.at(name(hf::LayerTensor::kKProj)), xn, KVH * hd, D);
      v[t] = MatVec(w.at(name(hf::LayerTensor::kVProj)), xn, KVH * hd, D);
      if (c.qk_norm == QkNorm::kPerHead) {
        for (int64_t h = 0; h < H; ++h) RmsNormInPlace(&q[t][h * hd], w.at(name(hf::LayerTensor::kQNorm)).data(), hd, eps);
        for (int64_t h = 0; h < KVH; ++h) RmsNormInPlace(&k[t][h * hd], w.at(name(hf::LayerTensor::kKNorm)).data(), hd, eps);
      } else if (c.qk_norm == QkNorm::kFull) {
        RmsNormInPlace(q[t].data(), w.at(name(hf::LayerTensor::kQNorm)).data(), H * hd, eps);
        RmsNormInPlace(k[t].data(), w.at(name(hf::LayerTensor::kKNorm)).data(), KVH * hd, eps);
      }
      for (int64_t h = 0; h < H; ++h) RopeInPlace(&q[t][h * hd], hd, t, c.rope_theta);
      for (int64_t h = 0; h < KVH; ++h) RopeInPlace(&k[t][h * hd], hd, t, c.rope_theta);
    }
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    for (int64_t t = 0; t < T; ++t) {
      Vec att(H * hd, 0.0);
      for (int64_t h = 0; h < H; ++h) {
        const int64_t kh = h / (H / KVH);
        Vec s(t + 1);
        double mx = -1e300;
        for (int64_t j = 0; j <= t; ++j) {
          double d = 0;
          for (int64_t i = 0; i < hd; ++i) d += q[t][h * hd + i] * k[j][kh * hd + i];
          s[j] = d * scale;
          mx = std::max(mx, s[j]);
        }
        double z = 0;
        for (auto& e : s) z += (e = std::exp(e - mx));
        for (int64_t j = 0; j <= t; ++j) {
          for (int64_t i = 0; i < hd; ++i) att[h * hd + i] += s[j] / z * v[j][kh * hd + i];
        }
      }
      Vec o = MatVec(w.at(name(hf::LayerTensor::kOProj)), att, D, H * hd);
      for (int64_t i = 0; i < D; ++i) x[t][i] += o[i];
    }
    out.topk.emplace_back();
    for (int64_t t = 0; t < T; ++t) {
      Vec xn = x[t];
      RmsNormInPlace(xn.data(), w.at(name(hf::LayerTensor::kPostNorm)).data(), D, eps);
      Vec r = MatVec(w.at(name(hf::LayerTensor::kRouter)), xn, E, D);
      const double mx = *std::max_element(r.begin(), r.end());
      double z = 0;
      for (auto& e : r) z += (e = std::exp(e - mx));
      for (auto& e : r) e /= z;
      std::vector<int> order(E);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return r[a] > r[b]; });
      double wsum = 0;
      for (int64_t j = 0; j < K; ++j) wsum += r[order[j]];
      for (int64_t j = 0; j < K; ++j) {
        const int e = order[j];
        out.topk.back().push_back(e);
        const double gw = c.norm_topk_prob ? r[e] / wsum : r[e];
        const Vec* wg = &w.at(hf::ExpertName(c.family, l, e, hf::ExpertPart::kGate));
        const Vec* wu = &w.at(hf::ExpertName(c.family, l, e, hf::ExpertPart::kUp));
        const Vec* wd = &w.at(hf::ExpertName(c.family, l, e, hf::ExpertPart::kDown));
        if (overlay != nullptr) {
          auto it = overlay->find(SlotId{static_cast<int32_t>(l), e});
          if (it != overlay->end()) {
            wg = &it->second[0];
            wu = &it->second[1];
            wd = &it->second[2];
          }
        }
        Vec g = MatVec(*wg, xn, F, D), u = MatVec(*wu, xn, F, D);
        for (int64_t i = 0; i < F; ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
        Vec y = MatVec(*wd, g, D, F);
        for (int64_t i = 0; i < D; ++i) x[t][i] += gw * y[i];
      }
    }
  }
  out.logits.assign(T * V, 0.0);
  for (int64_t t = 0; t < T; ++t) {
    Vec xf = x[t];
    RmsNormInPlace(xf.data(), w.at(hf::FinalNormName()).data(), D, eps);
    Vec lg = MatVec(w.at(hf::LmHeadName()), xf, V, D);
    std::copy(lg.begin(), lg.end(), out.logits.begin() + t * V);
  }
  return out;
}

// Small configs of each family exercising head_dim != hidden/heads, GQA, tied/untied, and
// normalized/unnormalized top-k.
inline ModelConfig SmallConfig(ModelFamily family) {
  ModelConfig c;
  c.family = family;
  c.hidden_size = 32;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 12;
  c.num_experts = 6;
  c.top_k = 2;
  c.expert_dim = 16;
  c.vocab_size = 37;
  c.rms_norm_eps = 1e-6f;
  c.rope_theta = 10000.0f;
  switch (family) {
    case ModelFamily::kQwen3Moe:
      c.qk_norm = QkNorm::kPerHead;
      c.norm_topk_prob = true;
      c.tie_word_embeddings = false;
      break;
    case ModelFamily::kOlmoe:
      c.qk_norm = QkNorm::kFull;
      c.norm_topk_prob = false;
      c.tie_word_embeddings = true;
      break;
    case ModelFamily::kMixtral:
      c.qk_norm = QkNorm::kNone;
      c.norm_topk_prob = true;
      c.tie_word_embeddings = false;
      c.head_dim = 8;
      break;
    case ModelFamily::kQwen2Moe:  // q/k/v biases, a gated shared expert, layer 2 dense
      c.qk_norm = QkNorm::kNone;
      c.norm_topk_prob = false;
      c.tie_word_embeddings = false;
      c.num_layers = 3;
      c.qkv_bias = true;
      c.shared_expert_dim = 10;
      c.shared_expert_gate = true;
      c.dense_layers = {2};
      c.dense_dim = 20;
      break;
    case ModelFamily::kDots1:  // sigmoid router with bias and groups, shared expert, layer 0 dense
      c.qk_norm = QkNorm::kPerHead;
      c.norm_topk_prob = true;
      c.tie_word_embeddings = false;
      c.num_layers = 3;
      c.dense_layers = {0};
      c.dense_dim = 20;
      c.shared_expert_dim = 16;
      c.routed_scaling_factor = 2.0f;
      c.router_scoring = ModelConfig::RouterScoring::kSigmoid;
      c.router_bias = true;
      c.n_group = 3;
      c.topk_group = 2;
      break;
    case ModelFamily::kGraniteMoe:  // every multiplier away from 1
      c.qk_norm = QkNorm::kNone;
      c.norm_topk_prob = true;
      c.tie_word_embeddings = true;
      c.head_dim = 8;
      c.embedding_multiplier = 2.0f;
      c.attention_scale = 0.3f;
      c.residual_multiplier = 0.7f;
      c.logits_scaling = 1.6f;
      break;
  }
  return c;
}

// Fills every parameter with U(-scale, scale) (norm weights 1 + U(-0.2, 0.2)) so that the test
// signal is far above float rounding and routing is decisive.
inline void RandomizeWeights(const ModelConfig& c, ModelWeights& w, Backend* be, uint32_t seed,
                             float scale = 0.3f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (const NamedParam& p : w.Parameters(c)) {
    std::vector<float> host(p.tensor->numel());
    const bool norm = p.tensor->rank() == 1;
    for (float& x : host) x = norm ? 1.0f + 0.2f * u(rng) : scale * u(rng);
    (void)be->CopyFromHost(host.data(), host.size() * 4, *p.tensor);
  }
}

inline std::vector<int32_t> RandomTokens(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

}  // namespace tessera::testing
