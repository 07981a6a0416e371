// Model::Create and the forward pass (see model.h for the call list and contracts).
#include "core/model/model.h"

#include <cmath>
#include <cstring>
#include <deque>
#include <set>

#include "absl/strings/str_cat.h"
#include "core/model/hf_names.h"
#include "core/model/host_router.h"
#include "core/model/mla_attention.h"
#include "core/model/model_internal.h"
#include "core/model/moe_plan.h"
#include "core/util/status_macros.h"

namespace tessera {
namespace {

// Router outputs as views of one word buffer (AlignWords / WordView in model_internal.h): top-k
// indices [N, k] i32, top-k weights [N, k] f32, probabilities [N, E] f32.
struct RouterOutputs {
  Tensor all, topk_idx, topk_w, probs;
  int64_t w_at = 0, p_at = 0;  // word offsets of the weights and the probabilities
};

int64_t RouterBufferWords(int64_t n, int64_t k, int64_t e) { return 2 * AlignWords(n * k) + n * e; }

absl::StatusOr<RouterOutputs> RouterBuffer(absl::StatusOr<Tensor> buf, int64_t n, int64_t k, int64_t e) {
  if (!buf.ok()) return buf.status();
  RouterOutputs r;
  r.all = *std::move(buf);
  r.w_at = AlignWords(n * k);
  r.p_at = 2 * r.w_at;
  r.topk_idx = WordView(r.all, 0, {n, k}, DType::kI32);
  r.topk_w = WordView(r.all, r.w_at, {n, k}, DType::kF32);
  r.probs = WordView(r.all, r.p_at, {n, e}, DType::kF32);
  return r;
}

// The router outputs' parts from a host copy of their word buffer (`words` starts at r.all's first word).
void UnpackRouterOutputs(const int32_t* words, const RouterOutputs& r, bool with_probs, std::vector<int32_t>* idx,
                         std::vector<float>* w, std::vector<float>* probs) {
  const int64_t nk = r.topk_idx.numel();
  idx->assign(words, words + nk);
  w->resize(static_cast<size_t>(nk));
  std::memcpy(w->data(), words + r.w_at, static_cast<size_t>(nk) * sizeof(float));
  if (with_probs) {
    probs->resize(static_cast<size_t>(r.probs.numel()));
    std::memcpy(probs->data(), words + r.p_at, probs->size() * sizeof(float));
  }
}

// One device-to-host transfer of the indices and weights (and the probabilities when asked).
absl::Status ReadRouterOutputs(Backend* be, const RouterOutputs& r, bool with_probs, std::vector<int32_t>* idx,
                               std::vector<float>* w, std::vector<float>* probs) {
  const int64_t words = with_probs ? r.p_at + r.probs.numel() : r.w_at + r.topk_idx.numel();
  std::vector<int32_t> host(static_cast<size_t>(words));
  RETURN_IF_ERROR(be->CopyToHost(r.all.Rows(0, words), host.data(), host.size() * sizeof(int32_t)));
  UnpackRouterOutputs(host.data(), r, with_probs, idx, w, probs);
  return absl::OkStatus();
}

// One layer's routing as the statistics see it: assignment a = t * k + j chose expert idx[a] with gate
// weight w[a] and was served by weight set set_of[a] in [0, set_is_overlay.size()).
struct LayerAssignments {
  const std::vector<int32_t>* idx = nullptr;
  const std::vector<float>* w = nullptr;
  std::vector<int32_t> set_of;
  const std::vector<uint8_t>* set_is_overlay = nullptr;
};

// The host plan's groups as sets: group g of `plan` is set g.
LayerAssignments FromPlan(const MoePlan& plan, const std::vector<int32_t>& idx, const std::vector<float>& w,
                          std::vector<uint8_t>* set_is_overlay) {
  LayerAssignments la{&idx, &w, std::vector<int32_t>(idx.size()), set_is_overlay};
  set_is_overlay->clear();
  for (size_t g = 0; g < plan.groups.size(); ++g) {
    const MoeGroup& grp = plan.groups[g];
    set_is_overlay->push_back(grp.overlay != nullptr ? 1 : 0);
    for (int64_t i = grp.row_begin; i < grp.row_begin + grp.rows; ++i) la.set_of[plan.source[i]] = static_cast<int32_t>(g);
  }
  return la;
}

// The device tables' sets (no sort: what the device computed, read from its tables on the host).
LayerAssignments FromTables(const MoeDeviceTables& tables, int64_t l, int64_t e_count, int64_t k,
                            const std::vector<int32_t>& idx, const std::vector<float>& w) {
  const MoeDeviceTables::Layer& tl = tables.layers[l];
  LayerAssignments la{&idx, &w, std::vector<int32_t>(idx.size()), &tl.set_is_overlay};
  for (size_t a = 0; a < idx.size(); ++a) {
    la.set_of[a] = tl.weight_table_host[tables.token_rank_host[a / k] * e_count + idx[a]];
  }
  return la;
}

// Adds layer l's routing to the result: its group counts (distinct sets used) and, when `probs` is given
// ([N, E] on the host), each sequence's routing statistics, accumulated in assignment order.
void RecordLayerRouting(int64_t l, int64_t e_count, int64_t k, const LayerAssignments& la,
                        const std::vector<float>* probs, const std::vector<int64_t>& token_seq, ForwardResult& result) {
  std::vector<uint8_t> used(la.set_is_overlay->size(), 0);
  int64_t groups = 0, overlay_groups = 0;
  for (int32_t s : la.set_of) {
    if (used[s]) continue;
    used[s] = 1;
    ++groups;
    overlay_groups += (*la.set_is_overlay)[s];
  }
  result.groups_per_layer.push_back(groups);
  result.overlay_groups_per_layer.push_back(overlay_groups);
  if (probs == nullptr) return;
  for (size_t t = 0; t < token_seq.size(); ++t) {
    RoutingStats& rs = result.routing[token_seq[t]];
    double ent = 0.0;
    for (int64_t e = 0; e < e_count; ++e) {
      const double p = (*probs)[t * e_count + e];
      if (p > 0.0) ent -= p * std::log(p);
    }
    rs.entropy_sum[l] += ent;
  }
  for (size_t a = 0; a < la.set_of.size(); ++a) {
    RoutingStats& rs = result.routing[token_seq[a / k]];
    const int64_t slot = l * e_count + (*la.idx)[a];
    rs.tokens_routed[slot] += 1;
    if ((*la.set_is_overlay)[la.set_of[a]]) rs.overlay_tokens[slot] += 1;
    rs.gate_weight_sum[slot] += (*la.w)[a];
  }
}

// [n] i32 0..n-1.
absl::StatusOr<Tensor> RowIndices(Backend* be, int64_t n) {
  std::vector<int32_t> iota(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) iota[i] = static_cast<int32_t>(i);
  return be->FromHost(iota, {n});
}

}  // namespace

void RoutingStats::Init(int64_t layers, int64_t experts) {
  num_layers = layers;
  num_experts = experts;
  tokens = 0;
  tokens_routed.assign(layers * experts, 0);
  overlay_tokens.assign(layers * experts, 0);
  gate_weight_sum.assign(layers * experts, 0.0);
  entropy_sum.assign(layers, 0.0);
}

void RoutingStats::Merge(const RoutingStats& o) {
  if (num_layers == 0 && num_experts == 0) Init(o.num_layers, o.num_experts);
  tokens += o.tokens;
  for (size_t i = 0; i < tokens_routed.size() && i < o.tokens_routed.size(); ++i) {
    tokens_routed[i] += o.tokens_routed[i];
    overlay_tokens[i] += o.overlay_tokens[i];
    gate_weight_sum[i] += o.gate_weight_sum[i];
  }
  for (size_t i = 0; i < entropy_sum.size() && i < o.entropy_sum.size(); ++i) entropy_sum[i] += o.entropy_sum[i];
}

absl::StatusOr<std::unique_ptr<Model>> Model::Create(const ModelConfig& config, ModelWeights weights,
                                                     Backend* backend) {
  if (backend == nullptr) return absl::InvalidArgumentError("Model::Create: backend is null");
  RETURN_IF_ERROR(config.Validate());
  const DType mdt = weights.matrix_dtype();
  if (mdt != DType::kF32 && mdt != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("Model::Create: weight matrices must be f32 or bf16, got ",
                                                   DTypeName(mdt)));
  }
  absl::Status shapes = weights.CheckShapes(config, backend->device(), mdt);
  if (!shapes.ok()) return absl::InvalidArgumentError(absl::StrCat("Model::Create: ", shapes.message()));
  std::unique_ptr<Model> m(new Model());
  m->config_ = config;
  m->weights_ = std::move(weights);
  m->backend_ = backend;
  if (config.router_bias) {  // read once: host routing adds it to every token's scores
    m->router_bias_host_.resize(config.num_layers);
    for (int64_t l = 0; l < config.num_layers; ++l) {
      if (config.IsDenseLayer(l)) continue;
      ASSIGN_OR_RETURN(m->router_bias_host_[l], backend->ToHostF32(m->weights_.layers[l].router_bias));
    }
  } else {
    m->router_bias_host_.assign(config.num_layers, {});
  }
  if (config.rope_scaling.type != RopeScaling::Type::kNone) {
    m->rope_inv_freq_ = RopeInverseFrequencies(config.rope_scaling, config.rope_theta, config.head_dim);
  }
  if (config.mla()) {
    ASSIGN_OR_RETURN(MlaWeights mla, BuildMlaWeights(config, m->weights_, backend));
    m->mla_ = std::make_shared<const MlaWeights>(std::move(mla));
    m->rope_inv_freq_ = MlaInverseFrequencies(config);
  }
  return m;
}

absl::Status Model::ApplyRope(Tensor& x, const Tensor& positions, bool inverse) const {
  if (rope_inv_freq_.empty()) return backend_->Rope(x, positions, config_.rope_theta, inverse);
  return backend_->RopeFreqs(x, positions, rope_inv_freq_, inverse);
}

absl::StatusOr<ForwardResult> Model::Forward(absl::Span<const SequenceInput> batch,
                                             const ForwardOptions& options) const {
  const ModelConfig& c = config_;
  Backend* be = backend_;
  if (batch.empty()) return absl::InvalidArgumentError("Forward: empty batch");
  if (options.save_activations && options.logits != LogitsMode::kAll) {
    return absl::InvalidArgumentError("Forward: save_activations requires logits == kAll");
  }
  const bool device_routing = options.moe_routing == MoeRouting::kOnDevice;
  if (options.save_activations && device_routing) {
    return absl::InvalidArgumentError("Forward: save_activations requires MoeRouting::kHostPlan (Backward reads the plan)");
  }
  // Precision: activations that feed a GEMM are in the weights' matrix dtype `cdt` (cuBLAS needs both
  // operands in one dtype; bf16 runs on tensor cores with fp32 accumulation); the residual stream h,
  // router logits/probabilities, norm statistics and logits stay f32. With f32 weights all are f32.
  const DType cdt = weights_.matrix_dtype();
  // ---- Validate and lay out the batch --------------------------------------------------------
  const int64_t num_seqs = static_cast<int64_t>(batch.size());
  ForwardResult result;
  std::vector<int32_t> ids, positions;
  std::vector<const ExpertOverlay*> token_overlay;
  std::set<const KvCache*> caches;
  for (int64_t s = 0; s < num_seqs; ++s) {
    const SequenceInput& in = batch[s];
    const int64_t n = static_cast<int64_t>(in.tokens.size());
    if (n == 0) return absl::InvalidArgumentError(absl::StrCat("Forward: sequence ", s, " has no tokens"));
    int64_t start = 0;
    if (in.cache != nullptr) {
      if (options.save_activations) {
        return absl::InvalidArgumentError("Forward: save_activations does not support KV caches");
      }
      if (!caches.insert(in.cache).second) {
        return absl::InvalidArgumentError(absl::StrCat("Forward: sequence ", s, " reuses a KV cache"));
      }
      if (in.cache->num_layers_ != c.num_layers) {
        return absl::InvalidArgumentError(absl::StrCat("Forward: sequence ", s, "'s KV cache has the wrong layout"));
      }
      start = in.cache->length();
      if (start + n > in.cache->capacity()) {
        return absl::ResourceExhaustedError(absl::StrCat("Forward: sequence ", s, " needs ", start + n,
                                                         " KV cache positions, capacity is ",
                                                         in.cache->capacity()));
      }
      // A paged cache takes the blocks its new positions need now (kv_cache.h).
      if (absl::Status reserved = in.cache->Reserve(start + n); !reserved.ok()) {
        return absl::Status(reserved.code(), absl::StrCat("Forward: sequence ", s, ": ", reserved.message()));
      }
    }
    if (in.overlay != nullptr && !(in.overlay->config() == c)) {
      return absl::InvalidArgumentError(absl::StrCat("Forward: sequence ", s, "'s overlay was built for another config"));
    }
    if (in.overlay != nullptr && !in.overlay->slots().empty() && in.overlay->dtype() != cdt) {
      return absl::InvalidArgumentError(absl::StrCat("Forward: sequence ", s, "'s overlay is ",
                                                     DTypeName(in.overlay->dtype()), ", the model's weights are ",
                                                     DTypeName(cdt)));
    }
    result.seq_row_begin.push_back(static_cast<int64_t>(ids.size()));
    result.seq_len.push_back(n);
    for (int64_t i = 0; i < n; ++i) {
      const int32_t t = in.tokens[i];
      if (t < 0 || t >= c.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("Forward: sequence ", s, " token ", i, " = ", t,
                                                       " is outside the vocabulary [0, ", c.vocab_size, ")"));
      }
      ids.push_back(t);
      positions.push_back(static_cast<int32_t>(start + i));
      token_overlay.push_back(in.overlay);
    }
  }
  const int64_t n_tok = static_cast<int64_t>(ids.size());
  const int64_t d = c.hidden_size, hd = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads;
  const int64_t k = c.top_k, e_count = c.num_experts, f = c.expert_dim;
  const bool save = options.save_activations;

  std::shared_ptr<Activations> act;
  if (save) {
    act = std::make_shared<Activations>();
    act->num_tokens = n_tok;
    act->seq_begin = result.seq_row_begin;
    act->seq_len = result.seq_len;
    for (const SequenceInput& in : batch) act->seq_overlay.push_back(in.overlay);
    act->layers.resize(c.num_layers);
  }
  if (options.collect_routing) {
    result.routing.resize(num_seqs);
    for (int64_t s = 0; s < num_seqs; ++s) {
      result.routing[s].Init(c.num_layers, e_count);
      result.routing[s].tokens = result.seq_len[s];
    }
  }
  std::vector<int64_t> token_seq(n_tok);
  for (int64_t s = 0; s < num_seqs; ++s) {
    for (int64_t i = 0; i < result.seq_len[s]; ++i) token_seq[result.seq_row_begin[s] + i] = s;
  }

  ASSIGN_OR_RETURN(Tensor ids_t, be->FromHost(ids, {n_tok}));
  ASSIGN_OR_RETURN(Tensor pos_t, be->FromHost(positions, {n_tok}));
  ASSIGN_OR_RETURN(Tensor h, be->Alloc({n_tok, d}, DType::kF32));
  RETURN_IF_ERROR(be->EmbeddingForward(weights_.embed, ids_t, h));
  if (save) {
    act->ids = ids_t;
    act->positions = pos_t;
  }
  if (c.embedding_multiplier != 1.0f) RETURN_IF_ERROR(be->Scale(h, c.embedding_multiplier));
  const float attn_scale = c.AttentionScale();
  const float routed_scale = c.routed_scaling_factor * c.residual_multiplier;
  Tensor rows_iota;  // [N] i32 0..N-1: per-row scaling through GatherRows / ScatterAddRows
  Tensor ones_col;   // [N, 1] of 1 in the GEMM dtype: biases are added as a rank-1 GEMM ones x bias
  auto add_bias = [&](const Tensor& bias, Tensor& out) -> absl::Status {
    if (!ones_col.defined()) {
      ASSIGN_OR_RETURN(ones_col, be->Alloc({n_tok, 1}, cdt));
      RETURN_IF_ERROR(be->Fill(ones_col, 1.0f));
    }
    Tensor row = bias.Reshape({1, bias.numel()});
    if (row.dtype() != cdt) {
      ASSIGN_OR_RETURN(Tensor narrow, be->Alloc({1, bias.numel()}, cdt));
      RETURN_IF_ERROR(be->Copy(row, narrow));
      row = narrow;
    }
    return be->Matmul(ones_col, false, row, false, out, 1.0f, 1.0f);
  };

  // Without save_activations every layer reuses the same intermediate buffers (same shapes per
  // layer), so a forward allocates them once; with it, each layer's intermediates are kept.
  enum Slot { kXn1, kQ, kK, kV, kQn, kKn, kAttn, kO, kXn2, kRl, kRoute, kSorted, kXg, kG, kU, kAct, kY, kMg, kMu, kMa, kMo,
              kSlots };
  std::vector<Tensor> scratch(kSlots);
  auto buffer = [&](Slot slot, std::vector<int64_t> shape, DType dtype = DType::kF32) -> absl::StatusOr<Tensor> {
    Tensor& cached = scratch[slot];
    if (!save && cached.defined() && cached.shape() == shape && cached.dtype() == dtype) return cached;
    ASSIGN_OR_RETURN(Tensor t, be->Alloc(std::move(shape), dtype));
    if (!save) cached = t;
    return t;
  };

  // Device routing: the weight-set tables (one upload per forward) and one router buffer per layer, read
  // back together after the last layer.
  MoeDeviceTables tables;
  Tensor route_all;
  const int64_t route_words = AlignWords(RouterBufferWords(n_tok, k, e_count));  // slices stay 256-byte aligned
  if (device_routing) {
    ASSIGN_OR_RETURN(tables, BuildMoeDeviceTables(c.num_layers, e_count, weights_, token_overlay, be));
    ASSIGN_OR_RETURN(route_all, be->Alloc({c.num_layers * route_words}, DType::kI32));
  }

  // Paged KV caches: a backend with paged attention (SupportsPagedKv: the CPU) reads their blocks through
  // the block table. For any other (CUDA, whose kernels read contiguous keys), each paged sequence's
  // keys/values are gathered per layer from its blocks (and this step's new rows) into these buffers,
  // allocated once per forward and reused by every layer: [kv_len, KVH, head_dim] per paged sequence in
  // its cache's dtype. That copy costs one read and write of the sequence's KV per layer, its memory one
  // layer's KV of the step's sequences.
  const bool paged_attention = be->SupportsPagedKv();
  std::vector<Tensor> paged_k(num_seqs), paged_v(num_seqs);
  for (int64_t s = 0; s < num_seqs; ++s) {
    const KvCache* cache = batch[s].cache;
    if (paged_attention || cache == nullptr || !cache->paged()) continue;
    const int64_t kv_len = cache->length() + result.seq_len[s];
    ASSIGN_OR_RETURN(paged_k[s], be->Alloc({kv_len, nkv, hd}, cache->k(0).dtype()));
    ASSIGN_OR_RETURN(paged_v[s], be->Alloc({kv_len, nkv, hd}, cache->v(0).dtype()));
  }

  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = weights_.layers[l];
    // ---- Attention block ----------------------------------------------------------------------
    ASSIGN_OR_RETURN(Tensor xn1, buffer(kXn1, {n_tok, d}, cdt));
    Tensor rstd1;
    if (save) { ASSIGN_OR_RETURN(rstd1, be->Alloc({n_tok}, DType::kF32)); }
    RETURN_IF_ERROR(be->RmsNormForward(h, w.input_norm, c.rms_norm_eps, xn1, save ? &rstd1 : nullptr));
    ASSIGN_OR_RETURN(Tensor q, buffer(kQ, {n_tok, c.q_dim()}, cdt));
    ASSIGN_OR_RETURN(Tensor kk, buffer(kK, {n_tok, c.kv_dim()}, cdt));
    ASSIGN_OR_RETURN(Tensor vv, buffer(kV, {n_tok, c.kv_dim()}, cdt));
    MlaActivations mla_act;
    if (c.mla()) {
      RETURN_IF_ERROR(MlaProject(be, c, w, mla_->layers[l], mla_->place, xn1, q, kk, vv, save ? &mla_act : nullptr));
    } else {
      RETURN_IF_ERROR(be->Matmul(xn1, false, w.q_proj, true, q));
      RETURN_IF_ERROR(be->Matmul(xn1, false, w.k_proj, true, kk));
      RETURN_IF_ERROR(be->Matmul(xn1, false, w.v_proj, true, vv));
    }
    if (c.qkv_bias) {
      RETURN_IF_ERROR(add_bias(w.q_bias, q));
      RETURN_IF_ERROR(add_bias(w.k_bias, kk));
      RETURN_IF_ERROR(add_bias(w.v_bias, vv));
    }
    Tensor q_pre, k_pre, q_rstd, k_rstd;
    if (c.qk_norm != QkNorm::kNone) {
      q_pre = q;
      k_pre = kk;
      ASSIGN_OR_RETURN(q, buffer(kQn, {n_tok, c.q_dim()}, cdt));
      ASSIGN_OR_RETURN(kk, buffer(kKn, {n_tok, c.kv_dim()}, cdt));
      const bool per_head = c.qk_norm == QkNorm::kPerHead;
      const int64_t q_rows = per_head ? n_tok * nh : n_tok;
      const int64_t k_rows = per_head ? n_tok * nkv : n_tok;
      if (save) {
        ASSIGN_OR_RETURN(q_rstd, be->Alloc({q_rows}, DType::kF32));
        ASSIGN_OR_RETURN(k_rstd, be->Alloc({k_rows}, DType::kF32));
      }
      const int64_t q_cols = c.q_dim() * n_tok / q_rows, k_cols = c.kv_dim() * n_tok / k_rows;
      Tensor qo = q.Reshape({q_rows, q_cols}), ko = kk.Reshape({k_rows, k_cols});
      RETURN_IF_ERROR(be->RmsNormForward(q_pre.Reshape({q_rows, q_cols}), w.q_norm, c.rms_norm_eps, qo,
                                         save ? &q_rstd : nullptr));
      RETURN_IF_ERROR(be->RmsNormForward(k_pre.Reshape({k_rows, k_cols}), w.k_norm, c.rms_norm_eps, ko,
                                         save ? &k_rstd : nullptr));
    }
    Tensor q3 = q.Reshape({n_tok, nh, hd});
    Tensor k3 = kk.Reshape({n_tok, nkv, hd});
    Tensor v3 = vv.Reshape({n_tok, nkv, hd});
    RETURN_IF_ERROR(ApplyRope(q3, pos_t, false));
    RETURN_IF_ERROR(ApplyRope(k3, pos_t, false));
    // This step's keys/values into each sequence's cache (and, for a paged one, its gathered copy),
    // all in one CopyMany: the copies read cache rows below `start` and write rows from `start` on.
    std::deque<Tensor> kv_views;  // stable addresses: AttentionSeq and CopyPair point into it
    std::vector<CopyPair> kv_appends;
    auto copy = [&](Tensor src, Tensor dst) {
      kv_views.push_back(std::move(src));
      const Tensor* from = &kv_views.back();
      kv_views.push_back(std::move(dst));
      kv_appends.push_back(CopyPair{from, &kv_views.back()});
    };
    std::vector<AttentionSeq> seqs(num_seqs);
    for (int64_t s = 0; s < num_seqs; ++s) {
      const int64_t b = result.seq_row_begin[s], n = result.seq_len[s];
      AttentionSeq& as = seqs[s];
      as.q_begin = b;
      as.q_len = n;
      as.window = c.AttentionWindow(l);
      KvCache* cache = batch[s].cache;
      if (cache != nullptr) {
        const int64_t start = cache->length();
        for (const KvSegment& seg : cache->Segments(start, start + n)) {
          const int64_t from = b + seg.position - start;
          copy(k3.Rows(from, seg.count), cache->mutable_k(l).Rows(seg.row, seg.count));
          copy(v3.Rows(from, seg.count), cache->mutable_v(l).Rows(seg.row, seg.count));
        }
        as.kv_len = start + n;
        if (cache->paged() && paged_attention) {
          as.k = &cache->k(l);
          as.v = &cache->v(l);
          as.blocks = cache->blocks();
          as.block_tokens = cache->block_tokens();
        } else if (cache->paged()) {
          for (const KvSegment& seg : cache->Segments(0, start)) {
            copy(cache->k(l).Rows(seg.row, seg.count), paged_k[s].Rows(seg.position, seg.count));
            copy(cache->v(l).Rows(seg.row, seg.count), paged_v[s].Rows(seg.position, seg.count));
          }
          copy(k3.Rows(b, n), paged_k[s].Rows(start, n));
          copy(v3.Rows(b, n), paged_v[s].Rows(start, n));
          as.k = &paged_k[s];
          as.v = &paged_v[s];
        } else {
          as.k = &cache->k(l);
          as.v = &cache->v(l);
        }
      } else {
        kv_views.push_back(k3.Rows(b, n));
        as.k = &kv_views.back();
        kv_views.push_back(v3.Rows(b, n));
        as.v = &kv_views.back();
        as.kv_len = n;
      }
    }
    RETURN_IF_ERROR(be->CopyMany(kv_appends));
    ASSIGN_OR_RETURN(Tensor attn, buffer(kAttn, {n_tok, nh, hd}, cdt));
    Tensor lse;
    if (save) { ASSIGN_OR_RETURN(lse, be->Alloc({n_tok, nh}, DType::kF32)); }
    RETURN_IF_ERROR(be->AttentionForward(q3, seqs, attn_scale, attn, save ? &lse : nullptr));
    ASSIGN_OR_RETURN(Tensor o, buffer(kO, {n_tok, d}));
    RETURN_IF_ERROR(be->Matmul(attn.Reshape({n_tok, c.q_dim()}), false, c.mla() ? mla_->layers[l].o_w : w.o_proj, true, o));
    if (c.residual_multiplier != 1.0f) RETURN_IF_ERROR(be->Scale(o, c.residual_multiplier));
    Tensor h_mid = h;
    if (save) { ASSIGN_OR_RETURN(h_mid, be->Alloc({n_tok, d}, DType::kF32)); }
    RETURN_IF_ERROR(be->Add(h, o, h_mid));

    // ---- MoE block --------------------------------------------------------------------------------
    ASSIGN_OR_RETURN(Tensor xn2, buffer(kXn2, {n_tok, d}, cdt));
    Tensor rstd2;
    if (save) { ASSIGN_OR_RETURN(rstd2, be->Alloc({n_tok}, DType::kF32)); }
    RETURN_IF_ERROR(be->RmsNormForward(h_mid, w.post_norm, c.rms_norm_eps, xn2, save ? &rstd2 : nullptr));
    Tensor h_out = h_mid;
    if (save) {
      ASSIGN_OR_RETURN(h_out, be->Alloc({n_tok, d}, DType::kF32));
      RETURN_IF_ERROR(be->Copy(h_mid, h_out));
    }
    // Routed experts (sparse layers; a dense layer has no router and no expert slots).
    const bool dense = c.IsDenseLayer(l);
    RouterOutputs route;
    Tensor probs, topk_idx, topk_w;
    MoePlan plan;  // host plan only
    Tensor xg, g, u, a, y;
    HostRouting host_route;  // host-routed configs only
    if (dense) {
      if (!device_routing) {  // (device routing records every layer after the last one)
        result.groups_per_layer.push_back(0);
        result.overlay_groups_per_layer.push_back(0);
      }
    } else {
      ASSIGN_OR_RETURN(Tensor rlogits, buffer(kRl, {n_tok, e_count}));
      RETURN_IF_ERROR(be->Matmul(xn2, false, w.router, true, rlogits));
      // The router's outputs share one buffer [top-k indices | top-k weights | probabilities], so the host
      // reads what the plan needs (and, when collecting routing, the probabilities) in ONE transfer per layer
      // (host plan) or per forward (device routing): on a GPU each read-back drains the stream. Parts start
      // at 256-byte boundaries.
      ASSIGN_OR_RETURN(route,
                       RouterBuffer(device_routing ? absl::StatusOr<Tensor>(WordView(route_all, l * route_words,
                                                                                     {route_words}, DType::kI32))
                                                   : buffer(kRoute, {route_words}, DType::kI32),
                                    n_tok, k, e_count));
      probs = route.probs;
      topk_idx = route.topk_idx;
      topk_w = route.topk_w;
      if (c.HostRouting()) {
        // Sigmoid / grouped routers (host_router.h): the logits to the host, the outputs back into the
        // router buffer (as RouterForward would have written them).
        ASSIGN_OR_RETURN(std::vector<float> logits_h, be->ToHostF32(rlogits));
        host_route = RouteOnHost(c, logits_h, router_bias_host_[l], n_tok);
        std::vector<int32_t> words(static_cast<size_t>(route.p_at + n_tok * e_count), 0);
        std::copy(host_route.idx.begin(), host_route.idx.end(), words.begin());
        std::memcpy(words.data() + route.w_at, host_route.w.data(), host_route.w.size() * sizeof(float));
        std::memcpy(words.data() + route.p_at, host_route.probs.data(), host_route.probs.size() * sizeof(float));
        Tensor head = route.all.Rows(0, static_cast<int64_t>(words.size()));
        RETURN_IF_ERROR(be->CopyFromHost(words.data(), words.size() * sizeof(int32_t), head));
      } else {
        RETURN_IF_ERROR(be->RouterForward(rlogits, static_cast<int>(k), c.norm_topk_prob, probs, topk_idx, topk_w));
      }

      // Group the M = N * k assignments by weight: token_idx/gate_w give each sorted row's token and gate.
      const int64_t m = n_tok * k;
      Tensor token_idx, gate_w, offsets;
      if (!device_routing) {
        std::vector<int32_t> idx_h;
        std::vector<float> w_h, p_h;
        if (c.HostRouting()) {
          idx_h = host_route.idx;
          w_h = host_route.w;
          p_h = host_route.probs;
        } else {
          RETURN_IF_ERROR(ReadRouterOutputs(be, route, options.collect_routing, &idx_h, &w_h, &p_h));
        }
        ASSIGN_OR_RETURN(plan, BuildMoePlan(l, e_count, k, weights_, idx_h, w_h, token_overlay, be));
        std::vector<uint8_t> set_is_overlay;
        RecordLayerRouting(l, e_count, k, FromPlan(plan, idx_h, w_h, &set_is_overlay),
                           options.collect_routing ? &p_h : nullptr, token_seq, result);
        token_idx = plan.token_idx;
        gate_w = plan.gate_w;
      } else {
        const MoeDeviceTables::Layer& tl = tables.layers[l];
        const int64_t sets = static_cast<int64_t>(tl.part[0].size());
        ASSIGN_OR_RETURN(Tensor sorted, buffer(kSorted, {2 * AlignWords(m) + sets + 1}, DType::kI32));
        token_idx = WordView(sorted, 0, {m}, DType::kI32);
        gate_w = WordView(sorted, AlignWords(m), {m}, DType::kF32);
        offsets = WordView(sorted, 2 * AlignWords(m), {sets + 1}, DType::kI32);
        RETURN_IF_ERROR(be->MoeSortAssignments(topk_idx, topk_w, tables.token_rank, tl.weight_table, token_idx, gate_w,
                                               offsets));
      }
      // Experts: gather -> gate & up -> SwiGLU -> down, over the groups.
      auto grouped = [&](const Tensor& x_in, int part, Tensor& out) {
        return device_routing ? be->GroupedMatmulByOffsets(x_in, tables.layers[l].part[part], offsets, out)
                              : be->GroupedMatmul(x_in, plan.GemmGroups(part), out);
      };
      ASSIGN_OR_RETURN(xg, buffer(kXg, {m, d}, cdt));
      RETURN_IF_ERROR(be->GatherRows(xn2, token_idx, nullptr, xg));
      ASSIGN_OR_RETURN(g, buffer(kG, {m, f}, cdt));
      ASSIGN_OR_RETURN(u, buffer(kU, {m, f}, cdt));
      RETURN_IF_ERROR(grouped(xg, 0, g));
      RETURN_IF_ERROR(grouped(xg, 1, u));
      ASSIGN_OR_RETURN(a, buffer(kAct, {m, f}, cdt));
      RETURN_IF_ERROR(be->SwiGluForward(g, u, a));
      ASSIGN_OR_RETURN(y, buffer(kY, {m, d}, cdt));
      RETURN_IF_ERROR(grouped(a, 2, y));
      if (routed_scale != 1.0f) RETURN_IF_ERROR(be->Scale(y, routed_scale));
      RETURN_IF_ERROR(be->ScatterAddRows(y, token_idx, &gate_w, h_out));
    }
    // The always-on MLP: a dense layer's MLP, or a sparse layer's shared expert (times its sigmoid gate).
    MlpActivations mlp;
    if (const int64_t mf = c.MlpDim(l); mf > 0) {
      ASSIGN_OR_RETURN(mlp.g, buffer(kMg, {n_tok, mf}, cdt));
      ASSIGN_OR_RETURN(mlp.u, buffer(kMu, {n_tok, mf}, cdt));
      ASSIGN_OR_RETURN(mlp.act, buffer(kMa, {n_tok, mf}, cdt));
      ASSIGN_OR_RETURN(mlp.out, buffer(kMo, {n_tok, d}, cdt));
      RETURN_IF_ERROR(be->Matmul(xn2, false, w.mlp.gate, true, mlp.g));
      RETURN_IF_ERROR(be->Matmul(xn2, false, w.mlp.up, true, mlp.u));
      RETURN_IF_ERROR(be->SwiGluForward(mlp.g, mlp.u, mlp.act));
      RETURN_IF_ERROR(be->Matmul(mlp.act, false, w.mlp.down, true, mlp.out));
      if (dense || !c.shared_expert_gate) {
        RETURN_IF_ERROR(be->Axpy(c.residual_multiplier, mlp.out, h_out));
      } else {
        // gate = sigmoid(xn2 . w_g) per token, on the host (N values), folded with the residual multiplier.
        ASSIGN_OR_RETURN(Tensor gl, be->Alloc({n_tok, 1}, DType::kF32));
        RETURN_IF_ERROR(be->Matmul(xn2, false, w.shared_gate, true, gl));
        ASSIGN_OR_RETURN(std::vector<float> gate_h, be->ToHostF32(gl));
        std::vector<float> scale(gate_h.size());
        for (size_t i = 0; i < gate_h.size(); ++i) {
          gate_h[i] = static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(gate_h[i]))));
          scale[i] = gate_h[i] * c.residual_multiplier;
        }
        ASSIGN_OR_RETURN(mlp.scale, be->FromHost(scale, {n_tok}));
        if (!rows_iota.defined()) { ASSIGN_OR_RETURN(rows_iota, RowIndices(be, n_tok)); }
        RETURN_IF_ERROR(be->ScatterAddRows(mlp.out, rows_iota, &mlp.scale, h_out));
        mlp.gate = std::move(gate_h);
      }
    }

    if (save) {
      LayerActivations& la = act->layers[l];
      la.h_in = h;
      la.xn1 = xn1;
      la.rstd1 = rstd1;
      la.q_pre = q_pre;
      la.k_pre = k_pre;
      la.q_rstd = q_rstd;
      la.k_rstd = k_rstd;
      la.q = q3;
      la.k = k3;
      la.v = v3;
      la.attn = attn;
      la.mla = std::move(mla_act);
      la.lse = lse;
      la.h_mid = h_mid;
      la.xn2 = xn2;
      la.rstd2 = rstd2;
      la.probs = probs;
      la.topk_idx = topk_idx;
      la.topk_w = topk_w;
      la.plan = std::move(plan);
      la.xg = xg;
      la.g = g;
      la.u = u;
      la.act = a;
      la.y = y;
      la.mlp = std::move(mlp);
      la.host_route = std::move(host_route);
    }
    h = h_out;
  }

  // ---- Final norm and LM head ----------------------------------------------------------------------
  if (options.logits != LogitsMode::kNone) {
    Tensor rows = h;
    int64_t n_rows = n_tok;
    if (options.logits == LogitsMode::kLast) {
      std::vector<int32_t> last(num_seqs);
      for (int64_t s = 0; s < num_seqs; ++s) {
        last[s] = static_cast<int32_t>(result.seq_row_begin[s] + result.seq_len[s] - 1);
      }
      ASSIGN_OR_RETURN(Tensor last_t, be->FromHost(last, {num_seqs}));
      ASSIGN_OR_RETURN(rows, be->Alloc({num_seqs, d}, DType::kF32));
      RETURN_IF_ERROR(be->GatherRows(h, last_t, nullptr, rows));
      n_rows = num_seqs;
    }
    ASSIGN_OR_RETURN(Tensor hf, be->Alloc({n_rows, d}, cdt));
    Tensor rstd_f;
    if (save) { ASSIGN_OR_RETURN(rstd_f, be->Alloc({n_rows}, DType::kF32)); }
    RETURN_IF_ERROR(be->RmsNormForward(rows, weights_.final_norm, c.rms_norm_eps, hf, save ? &rstd_f : nullptr));
    ASSIGN_OR_RETURN(result.logits, be->Alloc({n_rows, c.vocab_size}, DType::kF32));
    RETURN_IF_ERROR(be->Matmul(hf, false, weights_.lm_head, true, result.logits, 1.0f / c.logits_scaling));
    if (save) {
      act->h_final = rows;
      act->rstd_final = rstd_f;
      act->hf = hf;
      act->logits = result.logits;
    }
  }

  // Device routing: every layer's router outputs in one transfer (after the LM head is queued, so the
  // device is busy while the host waits); the group counts and routing statistics come from the host
  // copies of the tables the device grouped with (no sort).
  if (device_routing) {
    const bool with_probs = options.collect_routing;
    std::vector<int32_t> host(static_cast<size_t>(route_all.numel()));
    RETURN_IF_ERROR(be->CopyToHost(route_all, host.data(), host.size() * sizeof(int32_t)));
    for (int64_t l = 0; l < c.num_layers; ++l) {
      if (c.IsDenseLayer(l)) {
        result.groups_per_layer.push_back(0);
        result.overlay_groups_per_layer.push_back(0);
        continue;
      }
      ASSIGN_OR_RETURN(RouterOutputs route, RouterBuffer(WordView(route_all, l * route_words, {route_words}, DType::kI32),
                                                         n_tok, k, e_count));
      std::vector<int32_t> idx_h;
      std::vector<float> w_h, p_h;
      UnpackRouterOutputs(host.data() + l * route_words, route, with_probs, &idx_h, &w_h, &p_h);
      RecordLayerRouting(l, e_count, k, FromTables(tables, l, e_count, k, idx_h, w_h), with_probs ? &p_h : nullptr,
                         token_seq, result);
    }
  }

  // Only now that everything succeeded do the caches advance.
  for (int64_t s = 0; s < num_seqs; ++s) {
    if (batch[s].cache != nullptr) batch[s].cache->set_length(batch[s].cache->length() + result.seq_len[s]);
  }
  result.activations = std::move(act);
  return result;
}

absl::StatusOr<std::vector<std::vector<float>>> Model::ScoreTokens(absl::Span<const SequenceInput> batch,
                                                                   std::vector<RoutingStats>* routing) const {
  ForwardOptions opt;
  opt.logits = LogitsMode::kAll;
  opt.collect_routing = routing != nullptr;
  ASSIGN_OR_RETURN(ForwardResult fr, Forward(batch, opt));
  const int64_t n = fr.logits.dim(0);
  std::vector<int32_t> targets(n, -1);
  for (size_t s = 0; s < batch.size(); ++s) {
    for (int64_t i = 0; i + 1 < fr.seq_len[s]; ++i) targets[fr.seq_row_begin[s] + i] = batch[s].tokens[i + 1];
  }
  ASSIGN_OR_RETURN(Tensor tgt, backend_->FromHost(targets, {n}));
  ASSIGN_OR_RETURN(Tensor loss, backend_->Alloc({n}, DType::kF32));
  RETURN_IF_ERROR(backend_->CrossEntropyForward(fr.logits, tgt, loss, nullptr));
  ASSIGN_OR_RETURN(std::vector<float> loss_h, backend_->ToHostF32(loss));
  std::vector<std::vector<float>> out(batch.size());
  for (size_t s = 0; s < batch.size(); ++s) {
    for (int64_t i = 0; i + 1 < fr.seq_len[s]; ++i) out[s].push_back(-loss_h[fr.seq_row_begin[s] + i]);
  }
  if (routing != nullptr) *routing = std::move(fr.routing);
  return out;
}

}  // namespace tessera
