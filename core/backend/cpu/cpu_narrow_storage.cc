// NarrowStorageBackend (see cpu_narrow_storage.h): each op stages its narrow float arguments as f32
// stand-ins, runs the f32 kernel and rounds the outputs back.
#include "core/backend/cpu/cpu_narrow_storage.h"

#include <deque>
#include <forward_list>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/backend/cpu/cpu_backend_internal.h"
#include "core/backend/cpu/cpu_check.h"
#include "core/util/status_macros.h"

namespace tessera::cpu {
namespace {

bool IsNarrow(const Tensor& t) { return t.defined() && (t.dtype() == DType::kBF16 || t.dtype() == DType::kF16); }

// The f32 stand-ins of one op's arguments. An f32 (or index, or undefined) argument stands for itself.
// One narrow tensor passed several times (a weight gradient shared by groups, a weight used by several
// groups, out aliasing an input) gets ONE stand-in, so every contribution to a shared accumulator lands
// in it, as in the f32 kernels; narrow outputs that overlap without being the same tensor are refused
// (their stand-ins could not reproduce the overlap).
class Staging {
 public:
  Staging(Backend& kernels, absl::string_view op) : k_(kernels), op_(op) {}

  // An input: t, or an f32 copy of it.
  absl::StatusOr<const Tensor*> In(const Tensor& t) {
    if (!IsNarrow(t)) return &t;
    ASSIGN_OR_RETURN(Entry * e, Stage(t, /*out=*/false));
    return e->wide;
  }
  // An output (also in-out: the copy starts with t's values): t, or an f32 copy that Commit() rounds back.
  absl::StatusOr<Tensor*> Out(Tensor& t) {
    if (!IsNarrow(t)) return &t;
    ASSIGN_OR_RETURN(Entry * e, Stage(t, /*out=*/true));
    e->narrow_out = &t;
    return e->wide;
  }
  absl::StatusOr<Tensor*> OutOrNull(Tensor* t) {
    if (t == nullptr) return t;
    return Out(*t);
  }
  // After the kernel succeeded: every output stand-in into its storage.
  absl::Status Commit() {
    for (Entry& e : entries_) {
      if (e.narrow_out != nullptr) RETURN_IF_ERROR(k_.Copy(*e.wide, *e.narrow_out));
    }
    return absl::OkStatus();
  }

 private:
  struct Entry {
    const Tensor* narrow = nullptr;    // the first argument seen with this storage
    Tensor* wide = nullptr;
    Tensor* narrow_out = nullptr;      // set when any occurrence is an output
  };
  static bool Same(const Tensor& a, const Tensor& b) {
    return a.raw() == b.raw() && a.dtype() == b.dtype() && a.shape() == b.shape();
  }

  absl::StatusOr<Entry*> Stage(const Tensor& t, bool out) {
    for (Entry& e : entries_) {
      if (Same(*e.narrow, t)) return &e;
      if ((out || e.narrow_out != nullptr) && Overlaps(*e.narrow, t)) {
        return absl::InvalidArgumentError(absl::StrCat(op_, ": ", DTypeName(t.dtype()),
                                                       " arguments that partially overlap an output are not supported"));
      }
    }
    ASSIGN_OR_RETURN(Tensor wide, k_.Alloc(t.shape(), DType::kF32));
    RETURN_IF_ERROR(k_.Copy(t, wide));
    temps_.push_front(std::move(wide));
    entries_.push_back(Entry{&t, &temps_.front(), nullptr});
    return &entries_.back();
  }

  Backend& k_;
  absl::string_view op_;
  std::forward_list<Tensor> temps_;  // stable addresses; allocates nothing while every argument is f32
  std::deque<Entry> entries_;        // stable addresses (Stage returns pointers into it)
};

// The groups with stand-ins: weights as inputs and, for the weight-gradient op, weight gradients as
// (accumulating) outputs (the other ops ignore them).
absl::StatusOr<std::vector<GemmGroup>> StageGroups(Staging& st, absl::Span<const GemmGroup> groups, bool grads) {
  std::vector<GemmGroup> out(groups.begin(), groups.end());
  for (GemmGroup& g : out) {
    if (g.weight != nullptr) { ASSIGN_OR_RETURN(g.weight, st.In(*g.weight)); }
    if (grads && g.weight_grad != nullptr) { ASSIGN_OR_RETURN(g.weight_grad, st.Out(*g.weight_grad)); }
  }
  return out;
}

// The kernels' "must not overlap" rules, checked on the arguments themselves: the stand-ins of narrow
// arguments never overlap, so the kernels cannot see it.
absl::Status Disjoint(const Tensor& a, const Tensor& b, absl::string_view message) {
  if (a.defined() && b.defined() && Overlaps(a, b)) return absl::InvalidArgumentError(message);
  return absl::OkStatus();
}

// The matmul dtype rule for every group of a grouped call: lhs with each weight (or, for weight
// gradients, dy with x into each weight_grad).
absl::Status CheckGroupedDtypes(DType lhs, DType out, absl::Span<const GemmGroup> groups, absl::string_view op) {
  for (const GemmGroup& g : groups) {
    if (g.weight != nullptr) RETURN_IF_ERROR(CheckMatmulDtypes(lhs, g.weight->dtype(), out, op));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status NarrowStorageBackend::Add(const Tensor& a, const Tensor& b, Tensor& out) {
  Staging st(*k_, "Add");
  ASSIGN_OR_RETURN(const Tensor* a2, st.In(a));
  ASSIGN_OR_RETURN(const Tensor* b2, st.In(b));
  ASSIGN_OR_RETURN(Tensor * out2, st.Out(out));
  RETURN_IF_ERROR(k_->Add(*a2, *b2, *out2));
  return st.Commit();
}

absl::Status NarrowStorageBackend::Axpy(float alpha, const Tensor& x, Tensor& y) {
  Staging st(*k_, "Axpy");
  ASSIGN_OR_RETURN(const Tensor* x2, st.In(x));
  ASSIGN_OR_RETURN(Tensor * y2, st.Out(y));
  RETURN_IF_ERROR(k_->Axpy(alpha, *x2, *y2));
  return st.Commit();
}

absl::Status NarrowStorageBackend::Scale(Tensor& x, float alpha) {
  Staging st(*k_, "Scale");
  ASSIGN_OR_RETURN(Tensor * x2, st.Out(x));
  RETURN_IF_ERROR(k_->Scale(*x2, alpha));
  return st.Commit();
}

absl::StatusOr<double> NarrowStorageBackend::SumSquares(const Tensor& x) {
  Staging st(*k_, "SumSquares");
  ASSIGN_OR_RETURN(const Tensor* x2, st.In(x));
  return k_->SumSquares(*x2);
}

absl::Status NarrowStorageBackend::Matmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c,
                                          float alpha, float beta) {
  RETURN_IF_ERROR(CheckMatmulDtypes(a.dtype(), b.dtype(), c.dtype(), "Matmul"));
  if (Bf16DirectMatmul(a, trans_a, b, trans_b, c, alpha, beta)) return absl::OkStatus();  // decode fast path
  Staging st(*k_, "Matmul");
  ASSIGN_OR_RETURN(const Tensor* a2, st.In(a));
  ASSIGN_OR_RETURN(const Tensor* b2, st.In(b));
  ASSIGN_OR_RETURN(Tensor * c2, st.Out(c));
  RETURN_IF_ERROR(k_->Matmul(*a2, trans_a, *b2, trans_b, *c2, alpha, beta));
  return st.Commit();
}

absl::Status NarrowStorageBackend::GroupedMatmul(const Tensor& x, absl::Span<const GemmGroup> groups, Tensor& y) {
  RETURN_IF_ERROR(CheckGroupedDtypes(x.dtype(), y.dtype(), groups, "GroupedMatmul"));
  if (Bf16DirectGroupedMatmul(x, groups, y)) return absl::OkStatus();  // decode fast path
  Staging st(*k_, "GroupedMatmul");
  ASSIGN_OR_RETURN(std::vector<GemmGroup> g2, StageGroups(st, groups, /*grads=*/false));
  ASSIGN_OR_RETURN(const Tensor* x2, st.In(x));
  ASSIGN_OR_RETURN(Tensor * y2, st.Out(y));
  RETURN_IF_ERROR(k_->GroupedMatmul(*x2, g2, *y2));
  return st.Commit();
}

absl::Status NarrowStorageBackend::GroupedMatmulInputGrad(const Tensor& dy, absl::Span<const GemmGroup> groups,
                                                          Tensor& dx) {
  RETURN_IF_ERROR(CheckGroupedDtypes(dy.dtype(), dx.dtype(), groups, "GroupedMatmulInputGrad"));
  Staging st(*k_, "GroupedMatmulInputGrad");
  ASSIGN_OR_RETURN(std::vector<GemmGroup> g2, StageGroups(st, groups, /*grads=*/false));
  ASSIGN_OR_RETURN(const Tensor* dy2, st.In(dy));
  ASSIGN_OR_RETURN(Tensor * dx2, st.Out(dx));
  RETURN_IF_ERROR(k_->GroupedMatmulInputGrad(*dy2, g2, *dx2));
  return st.Commit();
}

absl::Status NarrowStorageBackend::GroupedMatmulWeightGrad(const Tensor& x, const Tensor& dy,
                                                           absl::Span<const GemmGroup> groups) {
  for (const GemmGroup& g : groups) {
    if (g.weight_grad != nullptr) {
      RETURN_IF_ERROR(CheckMatmulDtypes(dy.dtype(), x.dtype(), g.weight_grad->dtype(), "GroupedMatmulWeightGrad"));
    }
  }
  Staging st(*k_, "GroupedMatmulWeightGrad");
  ASSIGN_OR_RETURN(std::vector<GemmGroup> g2, StageGroups(st, groups, /*grads=*/true));  // weights fix the shapes
  ASSIGN_OR_RETURN(const Tensor* x2, st.In(x));
  ASSIGN_OR_RETURN(const Tensor* dy2, st.In(dy));
  RETURN_IF_ERROR(k_->GroupedMatmulWeightGrad(*x2, *dy2, g2));
  return st.Commit();
}

absl::Status NarrowStorageBackend::GatherRows(const Tensor& src, const Tensor& idx, const Tensor* scale, Tensor& dst) {
  RETURN_IF_ERROR(Disjoint(src, dst, "GatherRows: dst must not overlap src"));
  Staging st(*k_, "GatherRows");
  ASSIGN_OR_RETURN(const Tensor* src2, st.In(src));
  ASSIGN_OR_RETURN(Tensor * dst2, st.Out(dst));
  RETURN_IF_ERROR(k_->GatherRows(*src2, idx, scale, *dst2));
  return st.Commit();
}

absl::Status NarrowStorageBackend::ScatterAddRows(const Tensor& src, const Tensor& idx, const Tensor* scale,
                                                  Tensor& dst) {
  RETURN_IF_ERROR(Disjoint(src, dst, "ScatterAddRows: dst must not overlap src"));
  Staging st(*k_, "ScatterAddRows");
  ASSIGN_OR_RETURN(const Tensor* src2, st.In(src));
  ASSIGN_OR_RETURN(Tensor * dst2, st.Out(dst));
  RETURN_IF_ERROR(k_->ScatterAddRows(*src2, idx, scale, *dst2));
  return st.Commit();
}

absl::Status NarrowStorageBackend::RowDotGather(const Tensor& a, const Tensor& b, const Tensor& idx, Tensor& out) {
  Staging st(*k_, "RowDotGather");
  ASSIGN_OR_RETURN(const Tensor* a2, st.In(a));
  ASSIGN_OR_RETURN(const Tensor* b2, st.In(b));
  ASSIGN_OR_RETURN(Tensor * out2, st.Out(out));
  RETURN_IF_ERROR(k_->RowDotGather(*a2, *b2, idx, *out2));
  return st.Commit();
}

absl::Status NarrowStorageBackend::EmbeddingForward(const Tensor& table, const Tensor& ids, Tensor& out) {
  Staging st(*k_, "EmbeddingForward");
  // A narrow table is staged as just the rows `ids` names (in order, with ids 0..n-1), not all V rows
  // (a 32k-row bf16 table widened whole cost ~170 ms per decode step). Ids that are not all valid take
  // the whole-table path, whose kernel reports them.
  if (IsNarrow(table) && table.rank() == 2 && table.device() == DeviceKind::kCpu && ids.defined() &&
      ids.dtype() == DType::kI32 && ids.device() == DeviceKind::kCpu) {
    const int64_t n = ids.numel(), v = table.dim(0), d = table.dim(1);
    const int32_t* pi = ids.data<int32_t>();
    bool valid = true;
    for (int64_t i = 0; i < n && valid; ++i) valid = pi[i] >= 0 && pi[i] < v;
    if (valid) {
      ASSIGN_OR_RETURN(Tensor rows, k_->Alloc({n, d}, DType::kF32));
      ASSIGN_OR_RETURN(Tensor iota, k_->Alloc({n}, DType::kI32));
      const size_t esz = DTypeSize(table.dtype());
      const char* src = static_cast<const char*>(table.raw());
      for (int64_t i = 0; i < n; ++i) {
        Tensor row(table.owner(), const_cast<char*>(src) + static_cast<size_t>(pi[i]) * d * esz, {d}, table.dtype(),
                   DeviceKind::kCpu);
        Tensor dst = rows.Rows(i, 1).Reshape({d});
        RETURN_IF_ERROR(k_->Copy(row, dst));  // widens
        iota.data<int32_t>()[i] = static_cast<int32_t>(i);
      }
      ASSIGN_OR_RETURN(Tensor * out2, st.Out(out));
      RETURN_IF_ERROR(k_->EmbeddingForward(rows, iota, *out2));
      return st.Commit();
    }
  }
  ASSIGN_OR_RETURN(const Tensor* table2, st.In(table));
  ASSIGN_OR_RETURN(Tensor * out2, st.Out(out));
  RETURN_IF_ERROR(k_->EmbeddingForward(*table2, ids, *out2));
  return st.Commit();
}

absl::Status NarrowStorageBackend::EmbeddingBackward(const Tensor& ids, const Tensor& dout, Tensor& dtable) {
  Staging st(*k_, "EmbeddingBackward");
  ASSIGN_OR_RETURN(const Tensor* dout2, st.In(dout));
  ASSIGN_OR_RETURN(Tensor * dtable2, st.Out(dtable));
  RETURN_IF_ERROR(k_->EmbeddingBackward(ids, *dout2, *dtable2));
  return st.Commit();
}

absl::Status NarrowStorageBackend::RmsNormForward(const Tensor& x, const Tensor& weight, float eps, Tensor& out,
                                                  Tensor* rstd) {
  Staging st(*k_, "RmsNormForward");
  ASSIGN_OR_RETURN(const Tensor* x2, st.In(x));
  ASSIGN_OR_RETURN(const Tensor* w2, st.In(weight));
  ASSIGN_OR_RETURN(Tensor * out2, st.Out(out));
  RETURN_IF_ERROR(k_->RmsNormForward(*x2, *w2, eps, *out2, rstd));
  return st.Commit();
}

absl::Status NarrowStorageBackend::RmsNormBackward(const Tensor& x, const Tensor& weight, const Tensor& rstd,
                                                   const Tensor& dout, Tensor& dx, Tensor* dweight) {
  if (dweight != nullptr) RETURN_IF_ERROR(Disjoint(*dweight, dx, "RmsNormBackward: dweight overlaps dx"));
  Staging st(*k_, "RmsNormBackward");
  ASSIGN_OR_RETURN(const Tensor* x2, st.In(x));
  ASSIGN_OR_RETURN(const Tensor* w2, st.In(weight));
  ASSIGN_OR_RETURN(const Tensor* dout2, st.In(dout));
  ASSIGN_OR_RETURN(Tensor * dx2, st.Out(dx));
  ASSIGN_OR_RETURN(Tensor * dw2, st.OutOrNull(dweight));
  RETURN_IF_ERROR(k_->RmsNormBackward(*x2, *w2, rstd, *dout2, *dx2, dw2));
  return st.Commit();
}

absl::Status NarrowStorageBackend::Rope(Tensor& x, const Tensor& positions, float theta, bool inverse) {
  Staging st(*k_, "Rope");
  ASSIGN_OR_RETURN(Tensor * x2, st.Out(x));
  RETURN_IF_ERROR(k_->Rope(*x2, positions, theta, inverse));
  return st.Commit();
}

absl::Status NarrowStorageBackend::AttentionForward(const Tensor& q, absl::Span<const AttentionSeq> seqs, float scale,
                                                    Tensor& out, Tensor* lse) {
  RETURN_IF_ERROR(Disjoint(q, out, "AttentionForward: out overlaps q"));
  Staging st(*k_, "AttentionForward");
  std::vector<AttentionSeq> s2(seqs.begin(), seqs.end());
  // Narrow K/V caches are staged as their first kv_len rows only (the rows the op reads), not the whole
  // capacity; a kv_len the cache cannot hold keeps the whole tensor, so the kernel reports it.
  std::deque<Tensor> prefixes;
  auto prefix = [&](const Tensor* t, int64_t kv_len) -> const Tensor* {
    if (!IsNarrow(*t) || t->rank() < 1 || kv_len <= 0 || kv_len >= t->dim(0)) return t;
    prefixes.push_back(t->Rows(0, kv_len));
    return &prefixes.back();
  };
  // A narrow paged sequence: its blocks' rows widened into a contiguous f32 copy (staging the whole
  // block pool would convert every other sequence's keys too).
  std::deque<Tensor> widened;
  // A per-row (decode) sequence with bf16 keys and values: the f32 kernel reads them in place
  // (cpu_attention.cc), so neither its blocks nor its prefix are widened.
  for (AttentionSeq& s : s2) {
    if (AttentionReadsBf16InPlace(s)) continue;
    if (s.block_tokens > 0 && s.k != nullptr && s.v != nullptr && (IsNarrow(*s.k) || IsNarrow(*s.v)) &&
        s.k->rank() == 3 && static_cast<int64_t>(s.blocks.size()) * s.block_tokens >= s.kv_len) {
      const int64_t bt = s.block_tokens;
      std::deque<Tensor> views;
      std::vector<CopyPair> pairs;
      for (const Tensor** t : {&s.k, &s.v}) {
        ASSIGN_OR_RETURN(Tensor wide, k_->Alloc({s.kv_len, (*t)->dim(1), (*t)->dim(2)}, DType::kF32));
        widened.push_back(std::move(wide));
        for (int64_t j = 0; j < s.kv_len; j += bt) {
          const int64_t n = std::min(bt, s.kv_len - j);
          views.push_back((*t)->Rows(static_cast<int64_t>(s.blocks[j / bt]) * bt, n));
          const Tensor* from = &views.back();
          views.push_back(widened.back().Rows(j, n));
          pairs.push_back(CopyPair{from, &views.back()});
        }
        *t = &widened.back();
      }
      RETURN_IF_ERROR(k_->CopyMany(pairs));
      s.blocks = {};
      s.block_tokens = 0;
    }
  }
  for (AttentionSeq& s : s2) {
    if (s.block_tokens > 0 || AttentionReadsBf16InPlace(s)) continue;  // f32 paged or bf16 per-row: read in place
    if (s.k != nullptr) { ASSIGN_OR_RETURN(s.k, st.In(*prefix(s.k, s.kv_len))); }
    if (s.v != nullptr) { ASSIGN_OR_RETURN(s.v, st.In(*prefix(s.v, s.kv_len))); }
  }
  ASSIGN_OR_RETURN(const Tensor* q2, st.In(q));
  ASSIGN_OR_RETURN(Tensor * out2, st.Out(out));
  RETURN_IF_ERROR(k_->AttentionForward(*q2, s2, scale, *out2, lse));
  return st.Commit();
}

absl::Status NarrowStorageBackend::AttentionBackward(const Tensor& q, absl::Span<const AttentionSeq> seqs, float scale,
                                                     const Tensor& out, const Tensor& lse, const Tensor& dout,
                                                     Tensor& dq) {
  for (const Tensor* t : {&q, &out, &lse, &dout}) {
    RETURN_IF_ERROR(Disjoint(*t, dq, "AttentionBackward: dq overlaps an input"));
  }
  for (const AttentionSeq& s : seqs) {
    if (s.dk != nullptr && s.dv != nullptr) RETURN_IF_ERROR(Disjoint(*s.dk, *s.dv, "AttentionBackward: dk overlaps dv"));
  }
  Staging st(*k_, "AttentionBackward");
  std::vector<AttentionSeq> s2(seqs.begin(), seqs.end());
  for (AttentionSeq& s : s2) {
    if (s.k != nullptr) { ASSIGN_OR_RETURN(s.k, st.In(*s.k)); }
    if (s.v != nullptr) { ASSIGN_OR_RETURN(s.v, st.In(*s.v)); }
    ASSIGN_OR_RETURN(s.dk, st.OutOrNull(s.dk));  // null stays null: the kernel names it
    ASSIGN_OR_RETURN(s.dv, st.OutOrNull(s.dv));
  }
  ASSIGN_OR_RETURN(const Tensor* q2, st.In(q));
  ASSIGN_OR_RETURN(const Tensor* out2, st.In(out));
  ASSIGN_OR_RETURN(const Tensor* dout2, st.In(dout));
  ASSIGN_OR_RETURN(Tensor * dq2, st.Out(dq));
  RETURN_IF_ERROR(k_->AttentionBackward(*q2, s2, scale, *out2, lse, *dout2, *dq2));
  return st.Commit();
}

absl::Status NarrowStorageBackend::RouterForward(const Tensor& logits, int k, bool normalize, Tensor& probs,
                                                 Tensor& topk_idx, Tensor& topk_w) {
  Staging st(*k_, "RouterForward");
  ASSIGN_OR_RETURN(const Tensor* logits2, st.In(logits));
  ASSIGN_OR_RETURN(Tensor * probs2, st.Out(probs));
  RETURN_IF_ERROR(k_->RouterForward(*logits2, k, normalize, *probs2, topk_idx, topk_w));
  return st.Commit();
}

absl::Status NarrowStorageBackend::RouterBackward(const Tensor& probs, const Tensor& topk_idx, const Tensor& topk_w,
                                                  bool normalize, const Tensor& dtopk_w, Tensor& dlogits) {
  RETURN_IF_ERROR(Disjoint(probs, dlogits, "RouterBackward: dlogits overlaps probs"));
  Staging st(*k_, "RouterBackward");
  ASSIGN_OR_RETURN(const Tensor* probs2, st.In(probs));
  ASSIGN_OR_RETURN(Tensor * dlogits2, st.Out(dlogits));
  RETURN_IF_ERROR(k_->RouterBackward(*probs2, topk_idx, topk_w, normalize, dtopk_w, *dlogits2));
  return st.Commit();
}

absl::Status NarrowStorageBackend::SwiGluForward(const Tensor& gate, const Tensor& up, Tensor& out) {
  Staging st(*k_, "SwiGluForward");
  ASSIGN_OR_RETURN(const Tensor* gate2, st.In(gate));
  ASSIGN_OR_RETURN(const Tensor* up2, st.In(up));
  ASSIGN_OR_RETURN(Tensor * out2, st.Out(out));
  RETURN_IF_ERROR(k_->SwiGluForward(*gate2, *up2, *out2));
  return st.Commit();
}

absl::Status NarrowStorageBackend::SwiGluBackward(const Tensor& gate, const Tensor& up, const Tensor& dout,
                                                  Tensor& dgate, Tensor& dup) {
  Staging st(*k_, "SwiGluBackward");
  ASSIGN_OR_RETURN(const Tensor* gate2, st.In(gate));
  ASSIGN_OR_RETURN(const Tensor* up2, st.In(up));
  ASSIGN_OR_RETURN(const Tensor* dout2, st.In(dout));
  ASSIGN_OR_RETURN(Tensor * dgate2, st.Out(dgate));
  ASSIGN_OR_RETURN(Tensor * dup2, st.Out(dup));
  RETURN_IF_ERROR(k_->SwiGluBackward(*gate2, *up2, *dout2, *dgate2, *dup2));
  return st.Commit();
}

absl::Status NarrowStorageBackend::LogSoftmax(const Tensor& logits, Tensor& out) {
  Staging st(*k_, "LogSoftmax");
  ASSIGN_OR_RETURN(const Tensor* logits2, st.In(logits));
  ASSIGN_OR_RETURN(Tensor * out2, st.Out(out));
  RETURN_IF_ERROR(k_->LogSoftmax(*logits2, *out2));
  return st.Commit();
}

absl::Status NarrowStorageBackend::CrossEntropyForward(const Tensor& logits, const Tensor& targets, Tensor& loss,
                                                       Tensor* lse) {
  Staging st(*k_, "CrossEntropyForward");
  ASSIGN_OR_RETURN(const Tensor* logits2, st.In(logits));
  ASSIGN_OR_RETURN(Tensor * loss2, st.Out(loss));
  RETURN_IF_ERROR(k_->CrossEntropyForward(*logits2, targets, *loss2, lse));
  return st.Commit();
}

absl::Status NarrowStorageBackend::CrossEntropyBackward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                                        const Tensor& dloss, Tensor& dlogits) {
  Staging st(*k_, "CrossEntropyBackward");
  ASSIGN_OR_RETURN(const Tensor* logits2, st.In(logits));
  ASSIGN_OR_RETURN(const Tensor* dloss2, st.In(dloss));
  ASSIGN_OR_RETURN(Tensor * dlogits2, st.Out(dlogits));
  RETURN_IF_ERROR(k_->CrossEntropyBackward(*logits2, targets, lse, *dloss2, *dlogits2));
  return st.Commit();
}

absl::Status NarrowStorageBackend::AdamW(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                                         const AdamWParams& p) {
  Staging st(*k_, "AdamW");
  ASSIGN_OR_RETURN(Tensor * param2, st.Out(param));
  ASSIGN_OR_RETURN(const Tensor* grad2, st.In(grad));
  RETURN_IF_ERROR(k_->AdamW(*param2, *grad2, m, v, p));
  return st.Commit();
}

}  // namespace tessera::cpu
