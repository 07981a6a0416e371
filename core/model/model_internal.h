// Private to core/model: what Forward saves for Backward.
#pragma once

#include <vector>

#include "core/backend/backend.h"
#include "core/model/host_router.h"
#include "core/model/mla_attention.h"
#include "core/model/moe_plan.h"
#include "core/model/overlay.h"

namespace tessera {

// Small arrays that cross between host and device together (router outputs, the routing plan) share one
// buffer of 4-byte words, so they move in one transfer; each part starts at a 64-word (256-byte) boundary.
inline int64_t AlignWords(int64_t words) { return (words + 63) / 64 * 64; }
// The part of word buffer `buf` (kI32) starting at word `at`, as `shape` of `dtype` (kI32 or kF32).
inline Tensor WordView(const Tensor& buf, int64_t at, std::vector<int64_t> shape, DType dtype) {
  return Tensor(buf.owner(), const_cast<int32_t*>(buf.data<int32_t>()) + at, std::move(shape), dtype, buf.device());
}

// The always-on MLP of a layer (shared expert or dense MLP; see config.h).
struct MlpActivations {
  Tensor g, u, act;        // [N, F'] gate / up projections and SwiGLU
  Tensor out;              // [N, D] its output before the gate
  Tensor scale;            // [N] f32: sigmoid gate * residual multiplier (gated shared experts only)
  std::vector<float> gate;  // [N] the sigmoid gate on the host (gated shared experts only)
};

struct LayerActivations {
  Tensor h_in;            // [N, D] residual stream entering the layer
  Tensor xn1, rstd1;      // input_layernorm output [N, D] and rstd [N]
  Tensor q_pre, k_pre;    // projections before q/k norm [N, H*hd], [N, KVH*hd] (only with q/k norm)
  Tensor q_rstd, k_rstd;  // q/k norm rstd ([N*H]/[N*KVH] per-head, [N] full)
  MlaActivations mla;     // multi-head latent attention's intermediates (config.mla())
  Tensor q, k, v;         // attention inputs after norm + RoPE: [N, H, hd], [N, KVH, hd], [N, KVH, hd]
  Tensor attn, lse;       // attention output [N, H, hd] and log-sum-exp [N, H]
  Tensor h_mid;           // [N, D] after the attention residual
  Tensor xn2, rstd2;      // post_attention_layernorm output and rstd
  Tensor probs, topk_idx, topk_w;  // router: [N, E], [N, k], [N, k]
  MoePlan plan;
  Tensor xg, g, u, act, y;  // [M, D] gathered input, [M, F] gate/up/SwiGLU, [M, D] expert outputs (scaled)
  MlpActivations mlp;
  HostRouting host_route;  // host-routed configs (host_router.h)
};

struct Activations {
  int64_t num_tokens = 0;
  Tensor ids;                         // [N] i32
  Tensor positions;                   // [N] i32
  std::vector<int64_t> seq_begin, seq_len;
  std::vector<const ExpertOverlay*> seq_overlay;
  std::vector<LayerActivations> layers;
  Tensor h_final, rstd_final, hf;     // final norm input/rstd/output
  Tensor logits;                      // [N, V]
};

}  // namespace tessera
