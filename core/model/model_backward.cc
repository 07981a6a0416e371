// Model::Backward: reverse of the forward call list (model.h), llm.c style.
//
// Activation gradients flow through every layer: LM head, final norm, and per layer (top to bottom)
// the MoE (experts through the grouped GEMMs, the gate-weight path dL/dw_i = <dh[token], y_i> into
// RouterBackward and the router matmul), post-attention norm, o_proj, attention (with dK/dV), inverse
// RoPE, q/k norm, q/k/v projections, input norm, and finally the embedding. Weight gradients are
// computed only for the trainable set; in slots mode the pass stops below the lowest trainable layer
// (nothing beneath it can influence those gradients).
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/model/hf_names.h"
#include "core/model/model.h"
#include "core/model/model_internal.h"
#include "core/model/mla_attention.h"
#include "core/util/status_macros.h"

namespace tessera {

absl::StatusOr<Gradients> Gradients::Create(const ModelConfig& config, const TrainableSet& trainable,
                                            Backend* backend) {
  if (backend == nullptr) return absl::InvalidArgumentError("Gradients: backend is null");
  Gradients g;
  g.trainable = trainable;
  if (trainable.all_parameters) {
    ASSIGN_OR_RETURN(g.full, ModelWeights::Allocate(config, backend));
  } else {
    if (trainable.slots.empty()) return absl::InvalidArgumentError("Gradients: no trainable slots");
    for (SlotId s : trainable.slots) {
      RETURN_IF_ERROR(ValidateSlot(config, s));
      if (g.slots.count(s) != 0) {
        return absl::InvalidArgumentError(absl::StrCat("Gradients: slot ", s.ToString(), " listed twice"));
      }
      g.slots[s] = ExpertWeights();
    }
    constexpr int64_t kAlignElems = 64;  // 256 bytes of f32, as a fresh device allocation is aligned
    const int64_t part = config.expert_dim * config.hidden_size;
    const int64_t stride = (part + kAlignElems - 1) / kAlignElems * kAlignElems;
    ASSIGN_OR_RETURN(g.flat, backend->Alloc({3 * stride * static_cast<int64_t>(g.slots.size())}, DType::kF32));
    int64_t offset = 0;
    for (auto& [s, w] : g.slots) {
      Tensor* parts[] = {&w.gate, &w.up, &w.down};
      for (int i = 0; i < 3; ++i) {
        *parts[i] = g.flat.Rows(offset, part).Reshape(ExpertPartShape(config, i));
        offset += stride;
      }
    }
  }
  RETURN_IF_ERROR(g.Zero(backend));
  return g;
}

std::vector<NamedParam> Gradients::Named(const ModelConfig& config) {
  if (trainable.all_parameters) return full.Parameters(config);
  std::vector<NamedParam> out;
  for (auto& [s, w] : slots) {
    out.push_back({hf::ExpertName(config.family, s.layer, s.expert, hf::ExpertPart::kGate), &w.gate});
    out.push_back({hf::ExpertName(config.family, s.layer, s.expert, hf::ExpertPart::kUp), &w.up});
    out.push_back({hf::ExpertName(config.family, s.layer, s.expert, hf::ExpertPart::kDown), &w.down});
  }
  return out;
}

absl::Status Gradients::Zero(Backend* backend) {
  auto zero = [&](Tensor& t) { return t.defined() ? backend->Fill(t, 0.0f) : absl::OkStatus(); };
  if (trainable.all_parameters) {
    RETURN_IF_ERROR(zero(full.embed));
    RETURN_IF_ERROR(zero(full.final_norm));
    RETURN_IF_ERROR(zero(full.lm_head));
    for (LayerWeights& l : full.layers) {
      for (Tensor* t : {&l.input_norm, &l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.q_norm, &l.k_norm,
                        &l.post_norm, &l.router, &l.q_bias, &l.k_bias, &l.v_bias, &l.mlp.gate, &l.mlp.up,
                        &l.mlp.down, &l.shared_gate, &l.router_bias}) {
        RETURN_IF_ERROR(zero(*t));
      }
      for (ExpertWeights& e : l.experts) {
        RETURN_IF_ERROR(zero(e.gate));
        RETURN_IF_ERROR(zero(e.up));
        RETURN_IF_ERROR(zero(e.down));
      }
    }
  }
  if (flat.defined()) return zero(flat);  // every slot gradient (and the padding between them)
  for (auto& [s, w] : slots) {
    RETURN_IF_ERROR(zero(w.gate));
    RETURN_IF_ERROR(zero(w.up));
    RETURN_IF_ERROR(zero(w.down));
  }
  return absl::OkStatus();
}

int64_t Gradients::NumElements() const {
  int64_t n = 0;
  Gradients& self = const_cast<Gradients&>(*this);
  if (trainable.all_parameters) {
    // Parameters() needs a config only for names and the q/k norm / tie layout; count tensors directly.
    n += full.embed.numel() + full.final_norm.numel();
    if (full.lm_head.defined() && full.lm_head.raw() != full.embed.raw()) n += full.lm_head.numel();
    for (const LayerWeights& l : full.layers) {
      for (const Tensor* t : {&l.input_norm, &l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.q_norm, &l.k_norm,
                              &l.post_norm, &l.router, &l.q_bias, &l.k_bias, &l.v_bias, &l.mlp.gate, &l.mlp.up,
                              &l.mlp.down, &l.shared_gate, &l.router_bias}) {
        if (t->defined()) n += t->numel();
      }
      for (const ExpertWeights& e : l.experts) n += e.gate.numel() + e.up.numel() + e.down.numel();
    }
  }
  for (auto& [s, w] : self.slots) n += w.gate.numel() + w.up.numel() + w.down.numel();
  return n;
}

absl::StatusOr<double> Model::Backward(const ForwardResult& forward, const LossTargets& targets,
                                       Gradients* grads) const {
  if (forward.activations == nullptr || !forward.logits.defined()) {
    return absl::FailedPreconditionError("Backward: the forward did not save activations");
  }
  const int64_t n = forward.logits.dim(0);
  if (static_cast<int64_t>(targets.targets.size()) != n) {
    return absl::InvalidArgumentError(absl::StrCat("Backward: targets has ", targets.targets.size(),
                                                   " entries, the forward has ", n, " rows"));
  }
  int64_t count = 0;
  for (int32_t t : targets.targets) {
    if (t >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("Backward: target ", t, " outside the vocabulary"));
    }
    count += t >= 0 ? 1 : 0;
  }
  if (count == 0) return absl::InvalidArgumentError("Backward: no supervised rows (all targets < 0)");
  Backend* be = backend_;
  std::vector<int32_t> tv(targets.targets.begin(), targets.targets.end());
  ASSIGN_OR_RETURN(Tensor tgt, be->FromHost(tv, {n}));
  ASSIGN_OR_RETURN(Tensor loss, be->Alloc({n}, DType::kF32));
  ASSIGN_OR_RETURN(Tensor lse, be->Alloc({n}, DType::kF32));
  RETURN_IF_ERROR(be->CrossEntropyForward(forward.logits, tgt, loss, &lse));
  ASSIGN_OR_RETURN(std::vector<float> loss_h, be->ToHostF32(loss));
  double total = 0.0;
  for (float x : loss_h) total += x;
  ASSIGN_OR_RETURN(Tensor dloss, be->Alloc({n}, DType::kF32));
  RETURN_IF_ERROR(be->Fill(dloss, static_cast<float>(1.0 / static_cast<double>(count))));
  // In the GEMM operand dtype: the LM head's backward reads it as is (see BackwardFromLogits).
  ASSIGN_OR_RETURN(Tensor dlogits, be->Alloc({n, config_.vocab_size}, weights_.matrix_dtype()));
  RETURN_IF_ERROR(be->CrossEntropyBackward(forward.logits, tgt, lse, dloss, dlogits));
  RETURN_IF_ERROR(BackwardFromLogits(forward, dlogits, grads));
  return total / static_cast<double>(count);
}

absl::Status Model::BackwardFromLogits(const ForwardResult& forward, const Tensor& dlogits,
                                       Gradients* grads) const {
  if (grads == nullptr) return absl::InvalidArgumentError("Backward: grads is null");
  return BackwardFromLogits(forward, dlogits, absl::MakeConstSpan(&grads, 1));
}

absl::Status Model::BackwardFromLogits(const ForwardResult& forward, const Tensor& dlogits,
                                       absl::Span<Gradients* const> grad_sets) const {
  const ModelConfig& c = config_;
  Backend* be = backend_;
  if (grad_sets.empty()) return absl::InvalidArgumentError("Backward: no gradient sets");
  for (Gradients* g : grad_sets) {
    if (g == nullptr) return absl::InvalidArgumentError("Backward: grads is null");
  }
  Gradients* grads = grad_sets[0];
  if (grad_sets.size() > 1) {
    std::vector<const ExpertOverlay*> owners;
    for (Gradients* g : grad_sets) {
      if (g->trainable.all_parameters || g->owner == nullptr ||
          std::find(owners.begin(), owners.end(), g->owner) != owners.end()) {
        return absl::InvalidArgumentError(
            "Backward: several gradient sets must all be slot sets with distinct owner overlays");
      }
      owners.push_back(g->owner);
    }
  }
  if (forward.activations == nullptr) {
    return absl::FailedPreconditionError("Backward: the forward did not save activations");
  }
  const Activations& act = *forward.activations;
  const int64_t n_tok = act.num_tokens;
  const int64_t d = c.hidden_size, hd = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads;
  const int64_t e_count = c.num_experts, k = c.top_k, f = c.expert_dim;
  if (dlogits.shape() != std::vector<int64_t>{n_tok, c.vocab_size}) {
    return absl::InvalidArgumentError(absl::StrCat("Backward: dlogits must be ",
                                                   ShapeString({n_tok, c.vocab_size}), ", got ",
                                                   ShapeString(dlogits.shape())));
  }
  const bool all = grads->trainable.all_parameters;
  if (all && c.mla()) {
    return absl::UnimplementedError(
        "Backward: full-parameter training of multi-head latent attention weights (deepseek_v3) is not implemented; "
        "train expert slots");
  }
  if (all) {
    if (static_cast<int64_t>(grads->full.layers.size()) != c.num_layers) {
      return absl::InvalidArgumentError("Backward: gradients were created for another config");
    }
    for (const ExpertOverlay* o : act.seq_overlay) {
      if (o != nullptr) {
        return absl::FailedPreconditionError(
            "Backward: all-parameters training does not support sequences with overlays");
      }
    }
  }
  // Slot gradient table (per (layer, expert): each set's buffer with its owner) and the lowest layer that
  // needs gradients.
  struct SlotTarget {
    const ExpertOverlay* owner;
    ExpertWeights* grad;
  };
  std::vector<std::vector<SlotTarget>> slot_grad(all ? 0 : c.num_layers * e_count);
  int64_t stop_layer = 0;
  if (!all) {
    stop_layer = c.num_layers;
    for (Gradients* set : grad_sets) {
      for (auto& [s, w] : set->slots) {
        RETURN_IF_ERROR(ValidateSlot(c, s));
        slot_grad[s.layer * e_count + s.expert].push_back({set->owner, &w});
        stop_layer = std::min<int64_t>(stop_layer, s.layer);
      }
    }
    if (stop_layer == c.num_layers) return absl::InvalidArgumentError("Backward: no trainable slots");
  }
  // The gradient buffer group (expert, overlay) of layer l accumulates into: the set owning that overlay's
  // copy of the slot, or a set without an owner (which takes every assignment routed to the slot).
  auto slot_target = [&](int64_t l, const MoeGroup& g) -> ExpertWeights* {
    for (const SlotTarget& t : slot_grad[l * e_count + g.expert]) {
      if (t.owner == nullptr || t.owner == g.overlay) return t.grad;
    }
    return nullptr;
  };
  ModelWeights* gw = all ? &grads->full : nullptr;
  // Precision (as in Forward): GEMM operands in the weights' matrix dtype `cdt`; the residual-stream
  // gradient dh, norm/attention key-value gradients and every weight gradient accumulate in f32.
  const DType cdt = weights_.matrix_dtype();
  auto as_cdt = [&](const Tensor& t) -> absl::StatusOr<Tensor> {
    if (t.dtype() == cdt) return t;
    ASSIGN_OR_RETURN(Tensor out, be->Alloc(t.shape(), cdt));
    RETURN_IF_ERROR(be->Copy(t, out));
    return out;
  };

  // ---- LM head and final norm ----------------------------------------------------------------------
  ASSIGN_OR_RETURN(const Tensor dlogits_c, as_cdt(dlogits));
  const float inv_logits_scaling = 1.0f / c.logits_scaling;  // logits = lm_head(hf) / logits_scaling
  if (all) RETURN_IF_ERROR(be->Matmul(dlogits_c, true, act.hf, false, gw->lm_head, inv_logits_scaling, 1.0f));
  ASSIGN_OR_RETURN(Tensor dhf, be->Alloc({n_tok, d}, DType::kF32));
  RETURN_IF_ERROR(be->Matmul(dlogits_c, false, weights_.lm_head, false, dhf, inv_logits_scaling));
  ASSIGN_OR_RETURN(Tensor dh, be->Alloc({n_tok, d}, DType::kF32));
  RETURN_IF_ERROR(be->RmsNormBackward(act.h_final, weights_.final_norm, act.rstd_final, dhf, dh,
                                      all ? &gw->final_norm : nullptr));
  const float attn_scale = c.AttentionScale();
  const float res = c.residual_multiplier;
  const float routed_scale = c.routed_scaling_factor * c.residual_multiplier;
  const int64_t num_seqs = static_cast<int64_t>(act.seq_begin.size());
  Tensor rows_iota, ones_col;  // as in Forward: per-row scaling, and biases' row sums
  if (c.shared_expert_gate) {
    std::vector<int32_t> iota(static_cast<size_t>(n_tok));
    for (int64_t i = 0; i < n_tok; ++i) iota[i] = static_cast<int32_t>(i);
    ASSIGN_OR_RETURN(rows_iota, be->FromHost(iota, {n_tok}));
  }
  if (all && c.qkv_bias) {
    ASSIGN_OR_RETURN(ones_col, be->Alloc({n_tok, 1}, cdt));
    RETURN_IF_ERROR(be->Fill(ones_col, 1.0f));
  }

  for (int64_t l = c.num_layers - 1; l >= stop_layer; --l) {
    const LayerActivations& la = act.layers[l];
    const LayerWeights& w = weights_.layers[l];
    LayerWeights* lg = all ? &gw->layers[l] : nullptr;
    const MoePlan& plan = la.plan;
    const int64_t m = n_tok * k;

    // ---- MoE: h_out = h_mid + sum_i w_i * y_i + shared/dense MLP ---------------------------------
    ASSIGN_OR_RETURN(Tensor dxn2, be->Zeros({n_tok, d}));
    if (!c.IsDenseLayer(l)) {
      ASSIGN_OR_RETURN(Tensor dy, be->Alloc({m, d}, cdt));
      RETURN_IF_ERROR(be->GatherRows(dh, plan.token_idx, &plan.gate_w, dy));
      if (routed_scale != 1.0f) RETURN_IF_ERROR(be->Scale(dy, routed_scale));  // y was scaled after the down GEMM
      ASSIGN_OR_RETURN(Tensor dgw_sorted, be->Alloc({m}, DType::kF32));
      RETURN_IF_ERROR(be->RowDotGather(la.y, dh, plan.token_idx, dgw_sorted));

      std::vector<GemmGroup> gate_groups = plan.GemmGroups(0), up_groups = plan.GemmGroups(1),
                             down_groups = plan.GemmGroups(2);
      bool any_weight_grad = false;
      for (size_t i = 0; i < plan.groups.size(); ++i) {
        const MoeGroup& g = plan.groups[i];
        ExpertWeights* target = all ? &lg->experts[g.expert] : slot_target(l, g);
        if (target == nullptr) continue;
        any_weight_grad = true;
        gate_groups[i].weight_grad = &target->gate;
        up_groups[i].weight_grad = &target->up;
        down_groups[i].weight_grad = &target->down;
      }
      ASSIGN_OR_RETURN(Tensor dact, be->Alloc({m, f}, cdt));
      RETURN_IF_ERROR(be->GroupedMatmulInputGrad(dy, down_groups, dact));
      if (any_weight_grad) RETURN_IF_ERROR(be->GroupedMatmulWeightGrad(la.act, dy, down_groups));
      ASSIGN_OR_RETURN(Tensor dg, be->Alloc({m, f}, cdt));
      ASSIGN_OR_RETURN(Tensor du, be->Alloc({m, f}, cdt));
      RETURN_IF_ERROR(be->SwiGluBackward(la.g, la.u, dact, dg, du));
      if (any_weight_grad) {
        RETURN_IF_ERROR(be->GroupedMatmulWeightGrad(la.xg, dg, gate_groups));
        RETURN_IF_ERROR(be->GroupedMatmulWeightGrad(la.xg, du, up_groups));
      }
      if (l == stop_layer && !all) break;  // nothing below contributes to the trainable slots

      ASSIGN_OR_RETURN(Tensor dxg, be->Alloc({m, d}, cdt));
      ASSIGN_OR_RETURN(Tensor dxg_up, be->Alloc({m, d}, cdt));
      RETURN_IF_ERROR(be->GroupedMatmulInputGrad(dg, gate_groups, dxg));
      RETURN_IF_ERROR(be->GroupedMatmulInputGrad(du, up_groups, dxg_up));
      RETURN_IF_ERROR(be->Add(dxg, dxg_up, dxg));
      RETURN_IF_ERROR(be->ScatterAddRows(dxg, plan.token_idx, nullptr, dxn2));

      // Router: dL/dtopk_w back to the [N, k] layout, gathered on the device through the inverse of the
      // plan's permutation (the host knows it from the forward, so the backward never waits for the
      // device here), then through top-k renorm + softmax + matmul.
      std::vector<int32_t> sorted_pos(m);
      for (int64_t i = 0; i < m; ++i) sorted_pos[plan.source[i]] = static_cast<int32_t>(i);
      ASSIGN_OR_RETURN(const Tensor sorted_pos_idx, be->FromHost(sorted_pos, {m}));
      ASSIGN_OR_RETURN(Tensor dtopk_w, be->Alloc({n_tok, k}, DType::kF32));
      Tensor dtopk_rows = dtopk_w.Reshape({m, 1});
      RETURN_IF_ERROR(be->GatherRows(dgw_sorted.Reshape({m, 1}), sorted_pos_idx, nullptr, dtopk_rows));
      ASSIGN_OR_RETURN(Tensor dlr, be->Alloc({n_tok, e_count}, cdt));
      if (c.HostRouting()) {
        ASSIGN_OR_RETURN(std::vector<float> dw_h, be->ToHostF32(dtopk_w));
        ASSIGN_OR_RETURN(Tensor dl, be->FromHost(HostRouterBackward(c, la.host_route, dw_h, n_tok), {n_tok, e_count}));
        RETURN_IF_ERROR(be->Copy(dl, dlr));
      } else {
        RETURN_IF_ERROR(be->RouterBackward(la.probs, la.topk_idx, la.topk_w, c.norm_topk_prob, dtopk_w, dlr));
      }
      RETURN_IF_ERROR(be->Matmul(dlr, false, w.router, false, dxn2, 1.0f, 1.0f));
      if (all) RETURN_IF_ERROR(be->Matmul(dlr, true, la.xn2, false, lg->router, 1.0f, 1.0f));
    }
    if (const int64_t mf = c.MlpDim(l); mf > 0) {
      // The always-on MLP: h_out += scale * down(silu(gate n2) * up n2), scale = r (dense layer, ungated
      // shared expert) or r * sigmoid(n2 . w_g) per token (gated shared expert).
      const MlpActivations& ma = la.mlp;
      ASSIGN_OR_RETURN(Tensor dmo, be->Alloc({n_tok, d}, cdt));
      if (ma.scale.defined()) {
        RETURN_IF_ERROR(be->GatherRows(dh, rows_iota, &ma.scale, dmo));
        // d gate_logit = r * <dh, out> * g (1 - g), on the host like the gate itself.
        ASSIGN_OR_RETURN(Tensor dot, be->Alloc({n_tok}, DType::kF32));
        RETURN_IF_ERROR(be->RowDotGather(ma.out, dh, rows_iota, dot));
        ASSIGN_OR_RETURN(std::vector<float> dot_h, be->ToHostF32(dot));
        for (int64_t i = 0; i < n_tok; ++i) dot_h[i] *= res * ma.gate[i] * (1.0f - ma.gate[i]);
        ASSIGN_OR_RETURN(Tensor dgl, be->FromHost(dot_h, {n_tok, 1}));
        ASSIGN_OR_RETURN(dgl, as_cdt(dgl));
        RETURN_IF_ERROR(be->Matmul(dgl, false, w.shared_gate, false, dxn2, 1.0f, 1.0f));
        if (all) RETURN_IF_ERROR(be->Matmul(dgl, true, la.xn2, false, lg->shared_gate, 1.0f, 1.0f));
      } else {
        RETURN_IF_ERROR(be->Copy(dh, dmo));
        if (res != 1.0f) RETURN_IF_ERROR(be->Scale(dmo, res));
      }
      if (all) RETURN_IF_ERROR(be->Matmul(dmo, true, ma.act, false, lg->mlp.down, 1.0f, 1.0f));
      ASSIGN_OR_RETURN(Tensor dma, be->Alloc({n_tok, mf}, cdt));
      RETURN_IF_ERROR(be->Matmul(dmo, false, w.mlp.down, false, dma));
      ASSIGN_OR_RETURN(Tensor dmg, be->Alloc({n_tok, mf}, cdt));
      ASSIGN_OR_RETURN(Tensor dmu, be->Alloc({n_tok, mf}, cdt));
      RETURN_IF_ERROR(be->SwiGluBackward(ma.g, ma.u, dma, dmg, dmu));
      RETURN_IF_ERROR(be->Matmul(dmg, false, w.mlp.gate, false, dxn2, 1.0f, 1.0f));
      RETURN_IF_ERROR(be->Matmul(dmu, false, w.mlp.up, false, dxn2, 1.0f, 1.0f));
      if (all) {
        RETURN_IF_ERROR(be->Matmul(dmg, true, la.xn2, false, lg->mlp.gate, 1.0f, 1.0f));
        RETURN_IF_ERROR(be->Matmul(dmu, true, la.xn2, false, lg->mlp.up, 1.0f, 1.0f));
      }
    }

    ASSIGN_OR_RETURN(Tensor tmp, be->Alloc({n_tok, d}, DType::kF32));
    RETURN_IF_ERROR(be->RmsNormBackward(la.h_mid, w.post_norm, la.rstd2, dxn2, tmp, all ? &lg->post_norm : nullptr));
    RETURN_IF_ERROR(be->Add(dh, tmp, dh));  // dh is now dL/dh_mid

    // ---- Attention: h_mid = h_in + o_proj(attn) ----------------------------------------------------
    const Tensor attn2d = la.attn.Reshape({n_tok, c.q_dim()});
    ASSIGN_OR_RETURN(const Tensor dh_c, as_cdt(dh));
    if (all) RETURN_IF_ERROR(be->Matmul(dh_c, true, attn2d, false, lg->o_proj, res, 1.0f));
    ASSIGN_OR_RETURN(Tensor dattn, be->Alloc({n_tok, nh, hd}, cdt));
    Tensor dattn2d = dattn.Reshape({n_tok, c.q_dim()});
    RETURN_IF_ERROR(be->Matmul(dh_c, false, c.mla() ? mla_->layers[l].o_w : w.o_proj, false, dattn2d, res));
    ASSIGN_OR_RETURN(Tensor dk, be->Zeros({n_tok, nkv, hd}));
    ASSIGN_OR_RETURN(Tensor dv, be->Zeros({n_tok, nkv, hd}));
    std::vector<Tensor> views;
    views.reserve(4 * num_seqs);
    std::vector<AttentionSeq> seqs(num_seqs);
    for (int64_t s = 0; s < num_seqs; ++s) {
      const int64_t b = act.seq_begin[s], n = act.seq_len[s];
      AttentionSeq& as = seqs[s];
      as.q_begin = b;
      as.q_len = n;
      as.kv_len = n;
      as.window = c.AttentionWindow(l);
      views.push_back(la.k.Rows(b, n));
      as.k = &views.back();
      views.push_back(la.v.Rows(b, n));
      as.v = &views.back();
      views.push_back(dk.Rows(b, n));
      as.dk = &views.back();
      views.push_back(dv.Rows(b, n));
      as.dv = &views.back();
    }
    ASSIGN_OR_RETURN(Tensor dq, be->Alloc({n_tok, nh, hd}, cdt));
    RETURN_IF_ERROR(be->AttentionBackward(la.q, seqs, attn_scale, la.attn, la.lse, dattn, dq));
    RETURN_IF_ERROR(ApplyRope(dq, act.positions, true));
    RETURN_IF_ERROR(ApplyRope(dk, act.positions, true));
    Tensor dq2 = dq.Reshape({n_tok, c.q_dim()}), dk2 = dk.Reshape({n_tok, c.kv_dim()});
    if (c.qk_norm != QkNorm::kNone) {
      const bool per_head = c.qk_norm == QkNorm::kPerHead;
      const int64_t q_rows = per_head ? n_tok * nh : n_tok, k_rows = per_head ? n_tok * nkv : n_tok;
      const int64_t q_cols = c.q_dim() * n_tok / q_rows, k_cols = c.kv_dim() * n_tok / k_rows;
      ASSIGN_OR_RETURN(Tensor dq_pre, be->Alloc({n_tok, c.q_dim()}, cdt));
      ASSIGN_OR_RETURN(Tensor dk_pre, be->Alloc({n_tok, c.kv_dim()}, cdt));
      Tensor dqp = dq_pre.Reshape({q_rows, q_cols}), dkp = dk_pre.Reshape({k_rows, k_cols});
      RETURN_IF_ERROR(be->RmsNormBackward(la.q_pre.Reshape({q_rows, q_cols}), w.q_norm, la.q_rstd,
                                          dq2.Reshape({q_rows, q_cols}), dqp, all ? &lg->q_norm : nullptr));
      RETURN_IF_ERROR(be->RmsNormBackward(la.k_pre.Reshape({k_rows, k_cols}), w.k_norm, la.k_rstd,
                                          dk2.Reshape({k_rows, k_cols}), dkp, all ? &lg->k_norm : nullptr));
      dq2 = dq_pre;
      dk2 = dk_pre;
    }
    ASSIGN_OR_RETURN(dk2, as_cdt(dk2));
    ASSIGN_OR_RETURN(const Tensor dv2, as_cdt(dv.Reshape({n_tok, c.kv_dim()})));
    ASSIGN_OR_RETURN(Tensor dxn1, be->Alloc({n_tok, d}, DType::kF32));
    if (c.mla()) {
      RETURN_IF_ERROR(MlaBackward(be, c, w, mla_->layers[l], mla_->place, la.mla, dq2, dk2, dv2, dxn1));
      RETURN_IF_ERROR(be->RmsNormBackward(la.h_in, w.input_norm, la.rstd1, dxn1, tmp, nullptr));
      RETURN_IF_ERROR(be->Add(dh, tmp, dh));
      continue;
    }
    RETURN_IF_ERROR(be->Matmul(dq2, false, w.q_proj, false, dxn1));
    RETURN_IF_ERROR(be->Matmul(dk2, false, w.k_proj, false, dxn1, 1.0f, 1.0f));
    RETURN_IF_ERROR(be->Matmul(dv2, false, w.v_proj, false, dxn1, 1.0f, 1.0f));
    if (all) {
      RETURN_IF_ERROR(be->Matmul(dq2, true, la.xn1, false, lg->q_proj, 1.0f, 1.0f));
      RETURN_IF_ERROR(be->Matmul(dk2, true, la.xn1, false, lg->k_proj, 1.0f, 1.0f));
      RETURN_IF_ERROR(be->Matmul(dv2, true, la.xn1, false, lg->v_proj, 1.0f, 1.0f));
      if (c.qkv_bias) {  // a bias's gradient is the column sum of its output's gradient
        ASSIGN_OR_RETURN(const Tensor dq2_c, as_cdt(dq2));
        Tensor qb = lg->q_bias.Reshape({1, c.q_dim()}), kb = lg->k_bias.Reshape({1, c.kv_dim()}),
               vb = lg->v_bias.Reshape({1, c.kv_dim()});
        RETURN_IF_ERROR(be->Matmul(ones_col, true, dq2_c, false, qb, 1.0f, 1.0f));
        RETURN_IF_ERROR(be->Matmul(ones_col, true, dk2, false, kb, 1.0f, 1.0f));
        RETURN_IF_ERROR(be->Matmul(ones_col, true, dv2, false, vb, 1.0f, 1.0f));
      }
    }
    RETURN_IF_ERROR(be->RmsNormBackward(la.h_in, w.input_norm, la.rstd1, dxn1, tmp, all ? &lg->input_norm : nullptr));
    RETURN_IF_ERROR(be->Add(dh, tmp, dh));  // dh is now dL/dh_in
  }
  if (all) {
    if (c.embedding_multiplier != 1.0f) RETURN_IF_ERROR(be->Scale(dh, c.embedding_multiplier));
    RETURN_IF_ERROR(be->EmbeddingBackward(act.ids, dh, gw->embed));
  }
  return absl::OkStatus();
}

}  // namespace tessera
