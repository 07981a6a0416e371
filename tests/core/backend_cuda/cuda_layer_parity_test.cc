// A whole small MoE transformer block, forward and backward, written once against the Backend interface
// and run on the CPU and on CUDA with identical f32 weights: embedding, RMSNorm, q/k/v projections, RoPE,
// causal GQA attention over two sequences, output projection, residual, router (top-2, renormalized),
// token permute, grouped expert SwiGLU MLP, weighted unpermute, final norm, LM head, cross-entropy; then
// the full backward to every weight. Loss, logits and every gradient are compared.
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"
#include "tests/core/backend_cuda/cuda_test_util.h"

namespace tessera::testing_cuda {
namespace {

constexpr int64_t kT = 12, kD = 64, kH = 4, kKvh = 2, kHd = 16, kE = 8, kK = 2, kF = 32, kV = 50;
constexpr float kEps = 1e-6f, kTheta = 1e4f;

using HostWeights = std::map<std::string, std::vector<float>>;

struct LayerResult {
  std::vector<float> loss, logits;
  std::map<std::string, std::vector<float>> grads;
};

absl::StatusOr<LayerResult> RunLayer(Backend& b, const HostWeights& hw, const std::vector<int32_t>& ids,
                                     const std::vector<int32_t>& targets) {
  std::map<std::string, Tensor> w;
  auto shape_of = [](const std::string& name) -> std::vector<int64_t> {
    if (name == "emb" || name == "lm") return {kV, kD};
    if (name == "ln1" || name == "ln2" || name == "lnf") return {kD};
    if (name == "wq") return {kH * kHd, kD};
    if (name == "wk" || name == "wv") return {kKvh * kHd, kD};
    if (name == "wo") return {kD, kH * kHd};
    if (name == "wr") return {kE, kD};
    if (name[0] == 'd') return {kD, kF};  // down_e
    return {kF, kD};                       // gate_e / up_e
  };
  for (const auto& [name, v] : hw) {
    ASSIGN_OR_RETURN(w[name], b.FromHost(v, shape_of(name)));
  }
  auto expert = [&](const char* kind, int64_t e) -> Tensor* { return &w[absl::StrCat(kind, e)]; };
  ASSIGN_OR_RETURN(Tensor id, b.FromHost(ids, {kT}));
  ASSIGN_OR_RETURN(Tensor tg, b.FromHost(targets, {kT}));
  std::vector<int32_t> pos_h;
  for (int i = 0; i < 5; ++i) pos_h.push_back(i);
  for (int i = 0; i < 7; ++i) pos_h.push_back(i);
  ASSIGN_OR_RETURN(Tensor pos, b.FromHost(pos_h, {kT}));
  auto zeros = [&](std::vector<int64_t> s) { return b.Zeros(std::move(s)); };

  // ---- Forward ----
  ASSIGN_OR_RETURN(Tensor x, zeros({kT, kD}));
  RETURN_IF_ERROR(b.EmbeddingForward(w["emb"], id, x));
  ASSIGN_OR_RETURN(Tensor h1, zeros({kT, kD}));
  ASSIGN_OR_RETURN(Tensor rstd1, zeros({kT}));
  RETURN_IF_ERROR(b.RmsNormForward(x, w["ln1"], kEps, h1, &rstd1));
  ASSIGN_OR_RETURN(Tensor q, zeros({kT, kH, kHd}));
  ASSIGN_OR_RETURN(Tensor k, zeros({kT, kKvh, kHd}));
  ASSIGN_OR_RETURN(Tensor v, zeros({kT, kKvh, kHd}));
  Tensor q2 = q.Reshape({kT, kH * kHd}), k2 = k.Reshape({kT, kKvh * kHd}), v2 = v.Reshape({kT, kKvh * kHd});
  RETURN_IF_ERROR(b.Matmul(h1, false, w["wq"], true, q2));
  RETURN_IF_ERROR(b.Matmul(h1, false, w["wk"], true, k2));
  RETURN_IF_ERROR(b.Matmul(h1, false, w["wv"], true, v2));
  RETURN_IF_ERROR(b.Rope(q, pos, kTheta, false));
  RETURN_IF_ERROR(b.Rope(k, pos, kTheta, false));
  Tensor ka = k.Rows(0, 5), va = v.Rows(0, 5), kb = k.Rows(5, 7), vb = v.Rows(5, 7);
  ASSIGN_OR_RETURN(Tensor dk, zeros({kT, kKvh, kHd}));
  ASSIGN_OR_RETURN(Tensor dv, zeros({kT, kKvh, kHd}));
  Tensor dka = dk.Rows(0, 5), dva = dv.Rows(0, 5), dkb = dk.Rows(5, 7), dvb = dv.Rows(5, 7);
  const std::vector<AttentionSeq> seqs = {AttentionSeq{0, 5, 5, &ka, &va, &dka, &dva},
                                          AttentionSeq{5, 7, 7, &kb, &vb, &dkb, &dvb}};
  const float scale = 0.25f;  // 1/sqrt(16)
  ASSIGN_OR_RETURN(Tensor att, zeros({kT, kH, kHd}));
  ASSIGN_OR_RETURN(Tensor lse, zeros({kT, kH}));
  RETURN_IF_ERROR(b.AttentionForward(q, seqs, scale, att, &lse));
  Tensor att2 = att.Reshape({kT, kH * kHd});
  ASSIGN_OR_RETURN(Tensor o, zeros({kT, kD}));
  RETURN_IF_ERROR(b.Matmul(att2, false, w["wo"], true, o));
  ASSIGN_OR_RETURN(Tensor x2, zeros({kT, kD}));
  RETURN_IF_ERROR(b.Add(x, o, x2));
  ASSIGN_OR_RETURN(Tensor h2, zeros({kT, kD}));
  ASSIGN_OR_RETURN(Tensor rstd2, zeros({kT}));
  RETURN_IF_ERROR(b.RmsNormForward(x2, w["ln2"], kEps, h2, &rstd2));
  ASSIGN_OR_RETURN(Tensor rl, zeros({kT, kE}));
  RETURN_IF_ERROR(b.Matmul(h2, false, w["wr"], true, rl));
  ASSIGN_OR_RETURN(Tensor probs, zeros({kT, kE}));
  ASSIGN_OR_RETURN(Tensor tw, zeros({kT, kK}));
  ASSIGN_OR_RETURN(Tensor tidx, b.Alloc({kT, kK}, DType::kI32));
  RETURN_IF_ERROR(b.RouterForward(rl, kK, true, probs, tidx, tw));
  // Expert weight gradients (std::map nodes are stable, so the groups below may point into `w`).
  for (int64_t e = 0; e < kE; ++e) {
    for (const char* kind : {"g", "u", "d"}) {
      const std::string n = absl::StrCat("grad_", kind, e);
      ASSIGN_OR_RETURN(w[n], zeros(shape_of(absl::StrCat(kind, e))));
    }
  }
  // Permutation: slots grouped by expert.
  ASSIGN_OR_RETURN(std::vector<int32_t> idx_h, b.ToHostI32(tidx));
  ASSIGN_OR_RETURN(std::vector<float> w_h, b.ToHostF32(tw));
  std::vector<int32_t> perm_tok, perm_slot;
  std::vector<float> perm_w;
  std::vector<GemmGroup> gate_g, up_g, down_g;
  for (int64_t e = 0; e < kE; ++e) {
    const int64_t begin = static_cast<int64_t>(perm_tok.size());
    for (int64_t t = 0; t < kT; ++t) {
      for (int64_t j = 0; j < kK; ++j) {
        if (idx_h[t * kK + j] != e) continue;
        perm_tok.push_back(static_cast<int32_t>(t));
        perm_slot.push_back(static_cast<int32_t>(t * kK + j));
        perm_w.push_back(w_h[t * kK + j]);
      }
    }
    const int64_t rows = static_cast<int64_t>(perm_tok.size()) - begin;
    gate_g.push_back(GemmGroup{begin, rows, expert("g", e), &w[absl::StrCat("grad_g", e)]});
    up_g.push_back(GemmGroup{begin, rows, expert("u", e), &w[absl::StrCat("grad_u", e)]});
    down_g.push_back(GemmGroup{begin, rows, expert("d", e), &w[absl::StrCat("grad_d", e)]});
  }
  const int64_t s = static_cast<int64_t>(perm_tok.size());
  ASSIGN_OR_RETURN(Tensor ptok, b.FromHost(perm_tok, {s}));
  ASSIGN_OR_RETURN(Tensor pw, b.FromHost(perm_w, {s}));
  ASSIGN_OR_RETURN(Tensor xe, zeros({s, kD}));
  RETURN_IF_ERROR(b.GatherRows(h2, ptok, nullptr, xe));
  ASSIGN_OR_RETURN(Tensor g, zeros({s, kF}));
  ASSIGN_OR_RETURN(Tensor u, zeros({s, kF}));
  ASSIGN_OR_RETURN(Tensor act, zeros({s, kF}));
  ASSIGN_OR_RETURN(Tensor dn, zeros({s, kD}));
  RETURN_IF_ERROR(b.GroupedMatmul(xe, gate_g, g));
  RETURN_IF_ERROR(b.GroupedMatmul(xe, up_g, u));
  RETURN_IF_ERROR(b.SwiGluForward(g, u, act));
  RETURN_IF_ERROR(b.GroupedMatmul(act, down_g, dn));
  ASSIGN_OR_RETURN(Tensor x3, zeros({kT, kD}));
  RETURN_IF_ERROR(b.ScatterAddRows(dn, ptok, &pw, x3));
  RETURN_IF_ERROR(b.Add(x3, x2, x3));
  ASSIGN_OR_RETURN(Tensor h3, zeros({kT, kD}));
  ASSIGN_OR_RETURN(Tensor rstd3, zeros({kT}));
  RETURN_IF_ERROR(b.RmsNormForward(x3, w["lnf"], kEps, h3, &rstd3));
  ASSIGN_OR_RETURN(Tensor logits, zeros({kT, kV}));
  RETURN_IF_ERROR(b.Matmul(h3, false, w["lm"], true, logits));
  ASSIGN_OR_RETURN(Tensor loss, zeros({kT}));
  ASSIGN_OR_RETURN(Tensor lse_v, zeros({kT}));
  RETURN_IF_ERROR(b.CrossEntropyForward(logits, tg, loss, &lse_v));

  // ---- Backward (loss = mean over tokens) ----
  LayerResult r;
  ASSIGN_OR_RETURN(Tensor dloss, b.FromHost(std::vector<float>(kT, 1.0f / kT), {kT}));
  ASSIGN_OR_RETURN(Tensor dlogits, zeros({kT, kV}));
  RETURN_IF_ERROR(b.CrossEntropyBackward(logits, tg, lse_v, dloss, dlogits));
  ASSIGN_OR_RETURN(Tensor dh3, zeros({kT, kD}));
  RETURN_IF_ERROR(b.Matmul(dlogits, false, w["lm"], false, dh3));
  ASSIGN_OR_RETURN(Tensor dlm, zeros({kV, kD}));
  RETURN_IF_ERROR(b.Matmul(dlogits, true, h3, false, dlm));
  ASSIGN_OR_RETURN(Tensor dx3, zeros({kT, kD}));
  ASSIGN_OR_RETURN(Tensor dlnf, zeros({kD}));
  RETURN_IF_ERROR(b.RmsNormBackward(x3, w["lnf"], rstd3, dh3, dx3, &dlnf));
  ASSIGN_OR_RETURN(Tensor ddn, zeros({s, kD}));
  RETURN_IF_ERROR(b.GatherRows(dx3, ptok, &pw, ddn));
  ASSIGN_OR_RETURN(Tensor dpw, zeros({s}));
  RETURN_IF_ERROR(b.RowDotGather(dn, dx3, ptok, dpw));
  ASSIGN_OR_RETURN(Tensor dact, zeros({s, kF}));
  RETURN_IF_ERROR(b.GroupedMatmulInputGrad(ddn, down_g, dact));
  RETURN_IF_ERROR(b.GroupedMatmulWeightGrad(act, ddn, down_g));
  ASSIGN_OR_RETURN(Tensor dg, zeros({s, kF}));
  ASSIGN_OR_RETURN(Tensor du, zeros({s, kF}));
  RETURN_IF_ERROR(b.SwiGluBackward(g, u, dact, dg, du));
  ASSIGN_OR_RETURN(Tensor dxe, zeros({s, kD}));
  ASSIGN_OR_RETURN(Tensor dxe_u, zeros({s, kD}));
  RETURN_IF_ERROR(b.GroupedMatmulInputGrad(dg, gate_g, dxe));
  RETURN_IF_ERROR(b.GroupedMatmulInputGrad(du, up_g, dxe_u));
  RETURN_IF_ERROR(b.Add(dxe, dxe_u, dxe));
  RETURN_IF_ERROR(b.GroupedMatmulWeightGrad(xe, dg, gate_g));
  RETURN_IF_ERROR(b.GroupedMatmulWeightGrad(xe, du, up_g));
  ASSIGN_OR_RETURN(Tensor dh2, zeros({kT, kD}));
  RETURN_IF_ERROR(b.ScatterAddRows(dxe, ptok, nullptr, dh2));
  ASSIGN_OR_RETURN(std::vector<float> dpw_h, b.ToHostF32(dpw));
  std::vector<float> dtw_h(kT * kK, 0.0f);
  for (int64_t i = 0; i < s; ++i) dtw_h[perm_slot[i]] = dpw_h[i];
  ASSIGN_OR_RETURN(Tensor dtw, b.FromHost(dtw_h, {kT, kK}));
  ASSIGN_OR_RETURN(Tensor drl, zeros({kT, kE}));
  RETURN_IF_ERROR(b.RouterBackward(probs, tidx, tw, true, dtw, drl));
  RETURN_IF_ERROR(b.Matmul(drl, false, w["wr"], false, dh2, 1.0f, 1.0f));
  ASSIGN_OR_RETURN(Tensor dwr, zeros({kE, kD}));
  RETURN_IF_ERROR(b.Matmul(drl, true, h2, false, dwr));
  ASSIGN_OR_RETURN(Tensor dx2, zeros({kT, kD}));
  ASSIGN_OR_RETURN(Tensor dln2, zeros({kD}));
  RETURN_IF_ERROR(b.RmsNormBackward(x2, w["ln2"], rstd2, dh2, dx2, &dln2));
  RETURN_IF_ERROR(b.Add(dx2, dx3, dx2));
  ASSIGN_OR_RETURN(Tensor datt, zeros({kT, kH, kHd}));
  Tensor datt2 = datt.Reshape({kT, kH * kHd});
  RETURN_IF_ERROR(b.Matmul(dx2, false, w["wo"], false, datt2));
  ASSIGN_OR_RETURN(Tensor dwo, zeros({kD, kH * kHd}));
  RETURN_IF_ERROR(b.Matmul(dx2, true, att2, false, dwo));
  ASSIGN_OR_RETURN(Tensor dq, zeros({kT, kH, kHd}));
  RETURN_IF_ERROR(b.AttentionBackward(q, seqs, scale, att, lse, datt, dq));
  RETURN_IF_ERROR(b.Rope(dq, pos, kTheta, true));
  RETURN_IF_ERROR(b.Rope(dk, pos, kTheta, true));
  Tensor dq2 = dq.Reshape({kT, kH * kHd}), dk2 = dk.Reshape({kT, kKvh * kHd}), dv2 = dv.Reshape({kT, kKvh * kHd});
  ASSIGN_OR_RETURN(Tensor dh1, zeros({kT, kD}));
  RETURN_IF_ERROR(b.Matmul(dq2, false, w["wq"], false, dh1));
  RETURN_IF_ERROR(b.Matmul(dk2, false, w["wk"], false, dh1, 1.0f, 1.0f));
  RETURN_IF_ERROR(b.Matmul(dv2, false, w["wv"], false, dh1, 1.0f, 1.0f));
  ASSIGN_OR_RETURN(Tensor dwq, zeros({kH * kHd, kD}));
  ASSIGN_OR_RETURN(Tensor dwk, zeros({kKvh * kHd, kD}));
  ASSIGN_OR_RETURN(Tensor dwv, zeros({kKvh * kHd, kD}));
  RETURN_IF_ERROR(b.Matmul(dq2, true, h1, false, dwq));
  RETURN_IF_ERROR(b.Matmul(dk2, true, h1, false, dwk));
  RETURN_IF_ERROR(b.Matmul(dv2, true, h1, false, dwv));
  ASSIGN_OR_RETURN(Tensor dx, zeros({kT, kD}));
  ASSIGN_OR_RETURN(Tensor dln1, zeros({kD}));
  RETURN_IF_ERROR(b.RmsNormBackward(x, w["ln1"], rstd1, dh1, dx, &dln1));
  RETURN_IF_ERROR(b.Add(dx, dx2, dx));
  ASSIGN_OR_RETURN(Tensor demb, zeros({kV, kD}));
  RETURN_IF_ERROR(b.EmbeddingBackward(id, dx, demb));

  ASSIGN_OR_RETURN(r.loss, b.ToHostF32(loss));
  ASSIGN_OR_RETURN(r.logits, b.ToHostF32(logits));
  const std::vector<std::pair<std::string, Tensor*>> outs = {
      {"lm", &dlm}, {"lnf", &dlnf}, {"wr", &dwr}, {"ln2", &dln2}, {"wo", &dwo}, {"wq", &dwq},
      {"wk", &dwk}, {"wv", &dwv}, {"ln1", &dln1}, {"emb", &demb}};
  for (const auto& [name, t] : outs) {
    ASSIGN_OR_RETURN(r.grads[name], b.ToHostF32(*t));
  }
  for (int64_t e = 0; e < kE; ++e) {
    for (const char* kind : {"g", "u", "d"}) {
      const std::string n = absl::StrCat("grad_", kind, e);
      ASSIGN_OR_RETURN(r.grads[n], b.ToHostF32(w[n]));
    }
  }
  RETURN_IF_ERROR(b.Synchronize());
  return r;
}

TEST_F(CudaParityTest, MoeBlockForwardBackward) {
  HostWeights hw;
  auto add = [&](const std::string& name, size_t n, float lo, float hi) { hw[name] = Rand(n, lo, hi); };
  add("emb", kV * kD, -1, 1);
  add("lm", kV * kD, -0.2f, 0.2f);
  for (const char* ln : {"ln1", "ln2", "lnf"}) add(ln, kD, 0.8f, 1.2f);
  add("wq", kH * kHd * kD, -0.2f, 0.2f);
  add("wk", kKvh * kHd * kD, -0.2f, 0.2f);
  add("wv", kKvh * kHd * kD, -0.2f, 0.2f);
  add("wo", kD * kH * kHd, -0.2f, 0.2f);
  add("wr", kE * kD, -0.5f, 0.5f);
  for (int64_t e = 0; e < kE; ++e) {
    add(absl::StrCat("g", e), kF * kD, -0.2f, 0.2f);
    add(absl::StrCat("u", e), kF * kD, -0.2f, 0.2f);
    add(absl::StrCat("d", e), kD * kF, -0.2f, 0.2f);
  }
  const std::vector<int32_t> ids = RandInt(kT, 0, kV - 1);
  std::vector<int32_t> targets = RandInt(kT, 0, kV - 1);
  targets[4] = -1;  // end of the first sequence: no target
  auto c = RunLayer(*cpu_, hw, ids, targets);
  ASSERT_TRUE(c.ok()) << c.status();
  auto g = RunLayer(*gpu_, hw, ids, targets);
  ASSERT_TRUE(g.ok()) << g.status();
  constexpr double kTol = 1e-3;  // f32 end to end; errors compound through ~40 ops
  ExpectClose(g->loss, c->loss, kTol, "loss");
  ExpectClose(g->logits, c->logits, kTol, "logits");
  for (const auto& [name, want] : c->grads) ExpectClose(g->grads.at(name), want, kTol, absl::StrCat("grad ", name));
}

}  // namespace
}  // namespace tessera::testing_cuda
