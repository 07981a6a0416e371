// Small MoE models for training tests.
#pragma once

#include <vector>

#include "core/backend/backend.h"
#include "core/model/config.h"
#include "core/model/model.h"
#include "core/model/weights.h"

namespace tessera::train::testing {

inline ModelConfig SmallMoeConfig(int64_t vocab = 32) {
  ModelConfig c;
  c.family = ModelFamily::kQwen3Moe;
  c.hidden_size = 16;
  c.num_layers = 2;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 8;
  c.num_experts = 8;
  c.top_k = 2;
  c.expert_dim = 8;
  c.vocab_size = vocab;
  c.norm_topk_prob = true;
  c.tie_word_embeddings = false;
  c.qk_norm = QkNorm::kPerHead;
  return c;
}

inline void SetHost(Backend* be, Tensor& t, const std::vector<float>& values) {
  (void)be->CopyFromHost(values.data(), values.size() * sizeof(float), t);
}

// A model whose routing is known by construction: token t's embedding is the unit vector along
// dimension t % 4; attention and expert outputs are zero (o_proj and down = 0), so every layer's
// router sees rmsnorm(embed[t]); router row 2d is 10 * e_d and row 2d+1 is 9 * e_d. So a token of
// class d = t % 4 goes to experts {2d, 2d+1} in every layer (router logits 40 and 36, as
// rmsnorm(e_d) = 4 e_d), with renormalized gate weights sigmoid(4) and 1 - sigmoid(4).
inline ModelWeights KnownRoutingWeights(const ModelConfig& c, Backend* be) {
  ModelWeights w = *ModelWeights::RandomInit(c, 3, be);
  const int64_t D = c.hidden_size, V = c.vocab_size, E = c.num_experts;
  std::vector<float> embed(V * D, 0.0f);
  for (int64_t t = 0; t < V; ++t) embed[t * D + t % 4] = 1.0f;
  SetHost(be, w.embed, embed);
  for (LayerWeights& l : w.layers) {
    SetHost(be, l.o_proj, std::vector<float>(l.o_proj.numel(), 0.0f));
    std::vector<float> router(E * D, 0.0f);
    for (int64_t d = 0; d < 4; ++d) {
      router[(2 * d) * D + d] = 10.0f;
      router[(2 * d + 1) * D + d] = 9.0f;
    }
    SetHost(be, l.router, router);
    for (ExpertWeights& e : l.experts) SetHost(be, e.down, std::vector<float>(e.down.numel(), 0.0f));
  }
  return w;
}

}  // namespace tessera::train::testing
