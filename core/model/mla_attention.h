// Multi-head latent attention (DeepSeek-V2/V3 "MLA"), the projections around the model's ordinary
// causal attention. Per token x (the input_layernorm output), H heads, nope/rope/v head widths:
//   q      = q_proj(x)                          (q_lora_rank 0)
//          = q_b_proj(rmsnorm_qa(q_a_proj(x)))  (q_lora_rank > 0)          [H, nope + rope]
//   [c|kpe] = kv_a_proj_with_mqa(x)             c: [kv_lora_rank], kpe: [rope] (shared by all heads)
//   [kn|v]  = kv_b_proj(rmsnorm_kv(c))          per head [nope | v]
//   k_h = [kn_h | rope(kpe)], q_h = [q_nope_h | rope(q_pe_h)], out_h = softmax(q_h.k_h * scale) v_h,
//   o = o_proj(concat_h out_h), scale = (nope + rope)^-0.5 (times yarn's mscale(factor, mscale_all_dim)^2).
// rope_scaling (rope_scaling.h) sets the rope dims' frequencies over the rope width; yarn's attention
// factor multiplies the rotated q_pe and k_pe (folded into q_w's rope rows and `place`).
// With rope_interleave (deepseek_v3's default, and deepseek_v2's complex rotation) the rope pairs are
// dims (2i, 2i+1); otherwise (i, i + rope/2).
//
// How it maps onto the existing ops (no new kernel; every backend runs it):
//  * Layout: each head's q/k dims are permuted once, in the weights (MlaWeights, built at Model::Create),
//    so that the nope dims form rotation pairs with frequency 0 and the rope dims pairs with their
//    frequencies; Backend::RopeFreqs over the whole head (MlaInverseFrequencies) is then exactly MLA's
//    rotation (cos 0 = 1, sin 0 = 0 leave the nope dims bit-identical). Scores q.k are invariant under
//    one permutation of both.
//  * k = rmsnorm_kv(c) @ k_w^T + kpe @ place^T: k_w holds kv_b_proj's k rows at their permuted
//    positions (zeros at the rope ones), `place` ([H*hd, rope] of 0/1) broadcasts kpe into every head.
//  * v is zero-padded to the q/k head width (v_w: kv_b_proj's v rows then zeros) so the attention op and
//    the KV cache keep one head_dim; o_proj gets zero columns for the padding (o_w). Cost: attention's
//    PV product, the v cache and o_proj read hd / v_head_dim times the data of unpadded v; the KV cache
//    holds decompressed per-head k and v: 2 * H * hd values per token and layer (not the compressed
//    kv_lora_rank + rope).
// The backward (MlaBackward) is the transpose of every step: activation gradients through the frozen
// projections and both norms (full-parameter training of MLA weights is refused by Model::Backward).
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/backend/backend.h"
#include "core/model/config.h"
#include "core/model/weights.h"

namespace tessera {

struct MlaLayerWeights {
  Tensor q_w;    // [H*hd, q_in]: q_proj / q_b_proj with each head's rows permuted
  Tensor k_w;    // [H*hd, kv_lora_rank]
  Tensor v_w;    // [H*hd, kv_lora_rank]
  Tensor o_w;    // [D, H*hd]
  Tensor c_a;    // view: kv_a_proj rows [0, kv_lora_rank)
  Tensor pe_a;   // view: kv_a_proj rows [kv_lora_rank, kv_lora_rank + rope)
};

struct MlaWeights {
  std::vector<MlaLayerWeights> layers;
  Tensor place;  // [H*hd, rope] in the matrix dtype
};

// What MlaProject saves for MlaBackward.
struct MlaActivations {
  Tensor qa, qa_rstd, qa_n;    // q_lora_rank > 0: q_a_proj(x) [N, r], its rstd [N], its norm [N, r]
  Tensor c, c_rstd, c_n;       // the latent [N, kv_lora_rank], rstd, norm
};

// The per-head permutation: target dim t of a head reads source dim perm[t] (HF layout [nope | rope]).
std::vector<int64_t> MlaHeadPermutation(const ModelConfig& c);
// head_dim / 2 inverse frequencies for RopeFreqs: 0 for the nope pairs, theta^(-2i/rope) for rope pair i.
std::vector<float> MlaInverseFrequencies(const ModelConfig& c);
// Builds the derived tensors (in the weights' matrix dtype) from the checkpoint's MLA weights.
absl::StatusOr<MlaWeights> BuildMlaWeights(const ModelConfig& c, const ModelWeights& w, Backend* be);

// q, k, v: [N, H*hd] (the matrix dtype), written before RoPE; `save` (may be nullptr) receives the
// intermediates for the backward.
absl::Status MlaProject(Backend* be, const ModelConfig& c, const LayerWeights& w, const MlaLayerWeights& m,
                        const Tensor& place, const Tensor& x, Tensor& q, Tensor& k, Tensor& v, MlaActivations* save);
// dq, dk, dv: [N, H*hd] (the matrix dtype), after inverse RoPE; dx [N, D] f32 is overwritten.
absl::Status MlaBackward(Backend* be, const ModelConfig& c, const LayerWeights& w, const MlaLayerWeights& m,
                         const Tensor& place, const MlaActivations& a, const Tensor& dq, const Tensor& dk,
                         const Tensor& dv, Tensor& dx);

}  // namespace tessera
