// Multi-head latent attention's projections and their backward (see mla_attention.h).
#include "core/model/mla_attention.h"

#include <algorithm>
#include <cmath>

#include "core/model/rope_scaling.h"
#include "core/util/status_macros.h"

namespace tessera {
namespace {

// A host f32 matrix onto the backend in `dtype` (f32 or bf16: rounded by Backend::Copy).
absl::StatusOr<Tensor> Upload(Backend* be, const std::vector<float>& host, std::vector<int64_t> shape, DType dtype) {
  ASSIGN_OR_RETURN(Tensor f, be->FromHost(host, shape));
  if (dtype == DType::kF32) return f;
  ASSIGN_OR_RETURN(Tensor t, be->Alloc(std::move(shape), dtype));
  RETURN_IF_ERROR(be->Copy(f, t));
  return t;
}

}  // namespace

std::vector<int64_t> MlaHeadPermutation(const ModelConfig& c) {
  const int64_t hd = c.head_dim, half = hd / 2, nope = c.qk_nope_head_dim, n2 = nope / 2,
                r2 = c.qk_rope_head_dim / 2;
  std::vector<int64_t> perm(hd);
  for (int64_t t = 0; t < half; ++t) {
    if (t < n2) {
      perm[t] = t;
      perm[t + half] = n2 + t;
    } else {  // rope pair j: its first element at t, its second at t + half
      const int64_t j = t - n2;
      perm[t] = nope + (c.rope_interleave ? 2 * j : j);
      perm[t + half] = nope + (c.rope_interleave ? 2 * j + 1 : r2 + j);
    }
  }
  return perm;
}

std::vector<float> MlaInverseFrequencies(const ModelConfig& c) {
  const int64_t n2 = c.qk_nope_head_dim / 2;
  // The rope dims' own frequencies (rope_scaling.h; the default rotation when there is no scaling).
  const std::vector<float> rope = RopeInverseFrequencies(c.rope_scaling, c.rope_theta, c.qk_rope_head_dim);
  std::vector<float> f(n2, 0.0f);
  f.insert(f.end(), rope.begin(), rope.end());
  return f;
}

absl::StatusOr<MlaWeights> BuildMlaWeights(const ModelConfig& c, const ModelWeights& w, Backend* be) {
  const DType dt = w.matrix_dtype();
  const int64_t h = c.num_heads, hd = c.head_dim, nope = c.qk_nope_head_dim, vd = c.v_head_dim,
                rope = c.qk_rope_head_dim, r = c.kv_lora_rank, d = c.hidden_size;
  const std::vector<int64_t> perm = MlaHeadPermutation(c);
  // yarn's attention factor multiplies cos and sin, i.e. only the rope dims of q and k: folded into q's
  // rope rows and the rope key's placement.
  const float af = static_cast<float>(RopeAttentionFactor(c.rope_scaling));
  MlaWeights out;
  std::vector<float> place(h * hd * rope, 0.0f);
  for (int64_t hh = 0; hh < h; ++hh) {
    for (int64_t t = 0; t < hd; ++t) {
      if (perm[t] >= nope) place[(hh * hd + t) * rope + (perm[t] - nope)] = af;
    }
  }
  ASSIGN_OR_RETURN(out.place, Upload(be, place, {h * hd, rope}, dt));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    MlaLayerWeights m;
    const int64_t q_in = lw.q_proj.shape()[1];
    ASSIGN_OR_RETURN(std::vector<float> q, be->ToHostF32(lw.q_proj));
    ASSIGN_OR_RETURN(std::vector<float> kvb, be->ToHostF32(lw.kv_b_proj));
    ASSIGN_OR_RETURN(std::vector<float> o, be->ToHostF32(lw.o_proj));
    std::vector<float> qw(h * hd * q_in), kw(h * hd * r, 0.0f), vw(h * hd * r, 0.0f), ow(d * h * hd, 0.0f);
    for (int64_t hh = 0; hh < h; ++hh) {
      for (int64_t t = 0; t < hd; ++t) {
        const int64_t dst = hh * hd + t, src = hh * hd + perm[t];
        const float qs = perm[t] >= nope ? af : 1.0f;
        for (int64_t i = 0; i < q_in; ++i) qw[dst * q_in + i] = q[src * q_in + i] * qs;
        if (perm[t] < nope) std::copy_n(kvb.begin() + (hh * (nope + vd) + perm[t]) * r, r, kw.begin() + dst * r);
        if (t < vd) std::copy_n(kvb.begin() + (hh * (nope + vd) + nope + t) * r, r, vw.begin() + dst * r);
      }
      for (int64_t i = 0; i < d; ++i) {
        for (int64_t t = 0; t < vd; ++t) ow[i * h * hd + hh * hd + t] = o[i * h * vd + hh * vd + t];
      }
    }
    ASSIGN_OR_RETURN(m.q_w, Upload(be, qw, {h * hd, q_in}, dt));
    ASSIGN_OR_RETURN(m.k_w, Upload(be, kw, {h * hd, r}, dt));
    ASSIGN_OR_RETURN(m.v_w, Upload(be, vw, {h * hd, r}, dt));
    ASSIGN_OR_RETURN(m.o_w, Upload(be, ow, {d, h * hd}, dt));
    m.c_a = lw.kv_a_proj.Rows(0, r);
    m.pe_a = lw.kv_a_proj.Rows(r, rope);
    out.layers.push_back(std::move(m));
  }
  return out;
}

absl::Status MlaProject(Backend* be, const ModelConfig& c, const LayerWeights& w, const MlaLayerWeights& m,
                        const Tensor& place, const Tensor& x, Tensor& q, Tensor& k, Tensor& v, MlaActivations* save) {
  const int64_t n = x.shape()[0], r = c.kv_lora_rank;
  const DType dt = q.dtype();
  MlaActivations a;
  if (c.q_lora_rank > 0) {
    ASSIGN_OR_RETURN(a.qa, be->Alloc({n, c.q_lora_rank}, dt));
    ASSIGN_OR_RETURN(a.qa_n, be->Alloc({n, c.q_lora_rank}, dt));
    ASSIGN_OR_RETURN(a.qa_rstd, be->Alloc({n}, DType::kF32));
    RETURN_IF_ERROR(be->Matmul(x, false, w.q_a_proj, true, a.qa));
    RETURN_IF_ERROR(be->RmsNormForward(a.qa, w.q_a_norm, c.rms_norm_eps, a.qa_n, &a.qa_rstd));
    RETURN_IF_ERROR(be->Matmul(a.qa_n, false, m.q_w, true, q));
  } else {
    RETURN_IF_ERROR(be->Matmul(x, false, m.q_w, true, q));
  }
  ASSIGN_OR_RETURN(a.c, be->Alloc({n, r}, dt));
  ASSIGN_OR_RETURN(a.c_n, be->Alloc({n, r}, dt));
  ASSIGN_OR_RETURN(a.c_rstd, be->Alloc({n}, DType::kF32));
  ASSIGN_OR_RETURN(Tensor pe, be->Alloc({n, c.qk_rope_head_dim}, dt));
  RETURN_IF_ERROR(be->Matmul(x, false, m.c_a, true, a.c));
  RETURN_IF_ERROR(be->Matmul(x, false, m.pe_a, true, pe));
  RETURN_IF_ERROR(be->RmsNormForward(a.c, w.kv_a_norm, c.rms_norm_eps, a.c_n, &a.c_rstd));
  RETURN_IF_ERROR(be->Matmul(a.c_n, false, m.k_w, true, k));
  RETURN_IF_ERROR(be->Matmul(pe, false, place, true, k, 1.0f, 1.0f));
  RETURN_IF_ERROR(be->Matmul(a.c_n, false, m.v_w, true, v));
  if (save != nullptr) *save = std::move(a);
  return absl::OkStatus();
}

absl::Status MlaBackward(Backend* be, const ModelConfig& c, const LayerWeights& w, const MlaLayerWeights& m,
                         const Tensor& place, const MlaActivations& a, const Tensor& dq, const Tensor& dk,
                         const Tensor& dv, Tensor& dx) {
  const int64_t n = dq.shape()[0], r = c.kv_lora_rank;
  const DType dt = dq.dtype();
  if (c.q_lora_rank > 0) {
    ASSIGN_OR_RETURN(Tensor dqa_n, be->Alloc({n, c.q_lora_rank}, dt));
    ASSIGN_OR_RETURN(Tensor dqa, be->Alloc({n, c.q_lora_rank}, dt));
    RETURN_IF_ERROR(be->Matmul(dq, false, m.q_w, false, dqa_n));
    RETURN_IF_ERROR(be->RmsNormBackward(a.qa, w.q_a_norm, a.qa_rstd, dqa_n, dqa, nullptr));
    RETURN_IF_ERROR(be->Matmul(dqa, false, w.q_a_proj, false, dx));
  } else {
    RETURN_IF_ERROR(be->Matmul(dq, false, m.q_w, false, dx));
  }
  ASSIGN_OR_RETURN(Tensor dc_n, be->Alloc({n, r}, DType::kF32));
  RETURN_IF_ERROR(be->Matmul(dk, false, m.k_w, false, dc_n));
  RETURN_IF_ERROR(be->Matmul(dv, false, m.v_w, false, dc_n, 1.0f, 1.0f));
  ASSIGN_OR_RETURN(Tensor dc_n_c, be->Alloc({n, r}, dt));
  RETURN_IF_ERROR(be->Copy(dc_n, dc_n_c));
  ASSIGN_OR_RETURN(Tensor dc, be->Alloc({n, r}, dt));
  RETURN_IF_ERROR(be->RmsNormBackward(a.c, w.kv_a_norm, a.c_rstd, dc_n_c, dc, nullptr));
  ASSIGN_OR_RETURN(Tensor dpe, be->Alloc({n, c.qk_rope_head_dim}, dt));
  RETURN_IF_ERROR(be->Matmul(dk, false, place, false, dpe));
  RETURN_IF_ERROR(be->Matmul(dc, false, m.c_a, false, dx, 1.0f, 1.0f));
  RETURN_IF_ERROR(be->Matmul(dpe, false, m.pe_a, false, dx, 1.0f, 1.0f));
  return absl::OkStatus();
}

}  // namespace tessera
