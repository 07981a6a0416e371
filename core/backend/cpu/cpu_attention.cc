// CPU causal attention with GQA over a batch of sequences (AttentionSeq), forward and backward.
//
// Math, per sequence, query head h (kv head g = h / (H / KVH)), query i at absolute position
// p = kv_len - q_len + i, keys j in [0, p]:
//   s_j = scale * q_i . k_j,  m = max_j s_j,  l = sum_j exp(s_j - m)
//   out_i = sum_j exp(s_j - m) v_j / l,  lse_i = m + log(l)          (two-pass softmax per row)
// Backward (P recomputed from q, k and lse; D_i = dout_i . out_i):
//   P_ij = exp(s_j - lse_i); dv_j += P_ij dout_i; dP_ij = dout_i . v_j; dS_ij = P_ij (dP_ij - D_i)
//   dq_i = scale * sum_j dS_ij k_j;  dk_j += scale * dS_ij q_i
//
// Memory: q/out/dq/dout [Nq,H,hd], lse [Nq,H]; each seq's k/v/dk/dv [>= kv_len, KVH, hd]. Query row
// ranges of different seqs must be disjoint. Forward writes only the out/lse rows of the sequences;
// backward overwrites all of dq (rows outside every sequence get 0, their true gradient).
//
// Threading: forward parallelizes over (query row, head) pairs, all independent. Backward
// parallelizes over (sequence, kv head): the query heads sharing a kv head run in the same task, so
// every dk/dv row is written by exactly one thread. When different sequences' dk/dv overlap in
// memory, sequences run one after another (parallel over kv heads only).
#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/backend/cpu/cpu_backend_internal.h"
#include "core/backend/cpu/cpu_check.h"
#include "core/backend/cpu/cpu_kernels.h"
#include "core/util/parallel.h"
#include "core/util/status_macros.h"

namespace tessera::cpu {
namespace {

absl::Status CheckSeqs(absl::string_view op, const Tensor& q, absl::Span<const AttentionSeq> seqs,
                       bool backward) {
  const int64_t nq = q.dim(0), h = q.dim(1), hd = q.dim(2);
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (size_t si = 0; si < seqs.size(); ++si) {
    const AttentionSeq& s = seqs[si];
    const std::string name = absl::StrCat("seqs[", si, "]");
    if (s.q_begin < 0 || s.q_len < 0 || s.q_begin + s.q_len > nq) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, " query rows [", s.q_begin, ", ",
                                                     s.q_begin + s.q_len, ") out of range [0, ", nq, ")"));
    }
    if (s.kv_len < s.q_len) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": ", name, ".kv_len = ", s.kv_len, " is less than q_len = ", s.q_len));
    }
    const Tensor* tensors[4] = {s.k, s.v, s.dk, s.dv};
    const char* names[4] = {".k", ".v", ".dk", ".dv"};
    const int count = backward ? 4 : 2;
    for (int t = 0; t < count; ++t) {
      if (tensors[t] == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, names[t], " is null"));
      }
      RETURN_IF_ERROR(CheckF32(op, name + names[t], *tensors[t]));
      const Tensor& k = *tensors[t];
      const bool ok = k.rank() == 3 && k.dim(0) >= s.kv_len && k.dim(1) > 0 && h % k.dim(1) == 0 &&
                      k.dim(2) == hd && (t == 0 || k.shape() == s.k->shape());
      if (!ok) {
        return absl::InvalidArgumentError(absl::StrCat(
            op, ": ", name, names[t], " has shape ", ShapeString(k.shape()), ", expected [>=", s.kv_len,
            ",KVH,", hd, "] with ", h, " % KVH == 0", t > 0 ? " and the shape of k" : ""));
      }
    }
    if (backward && Overlaps(*s.dk, *s.dv)) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, ".dk overlaps ", name, ".dv"));
    }
    if (s.q_len > 0) ranges.emplace_back(s.q_begin, s.q_begin + s.q_len);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": sequences overlap at query rows [", ranges[i].first, ", ", ranges[i - 1].second, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckQ(absl::string_view op, absl::string_view arg, const Tensor& t) {
  RETURN_IF_ERROR(CheckF32(op, arg, t));
  if (t.rank() != 3) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, " has shape ", ShapeString(t.shape()),
                                                   ", expected rank 3 [Nq,H,head_dim]"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CpuBackend::AttentionForward(const Tensor& q, absl::Span<const AttentionSeq> seqs, float scale,
                                          Tensor& out, Tensor* lse) {
  constexpr char kOp[] = "AttentionForward";
  RETURN_IF_ERROR(CheckQ(kOp, "q", q));
  RETURN_IF_ERROR(CheckF32(kOp, "out", out));
  RETURN_IF_ERROR(CheckShape(kOp, "out", out, q.shape()));
  const int64_t h = q.dim(1), hd = q.dim(2);
  if (lse != nullptr) {
    RETURN_IF_ERROR(CheckF32(kOp, "lse", *lse));
    RETURN_IF_ERROR(CheckShape(kOp, "lse", *lse, {q.dim(0), h}));
  }
  RETURN_IF_ERROR(CheckSeqs(kOp, q, seqs, false));
  if (Overlaps(q, out)) return absl::InvalidArgumentError("AttentionForward: out overlaps q");

  // Items are (sequence, query row, head), numbered seq by seq.
  std::vector<int64_t> first(seqs.size() + 1, 0);
  int64_t max_kv = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    first[s + 1] = first[s] + seqs[s].q_len * h;
    max_kv = std::max(max_kv, seqs[s].kv_len);
  }
  const float* pq = q.data<float>();
  float* po = out.data<float>();
  float* pl = lse ? lse->data<float>() : nullptr;
  const int64_t items = first.back();
  const int64_t avg_kv = items == 0 ? 1 : std::max<int64_t>(1, max_kv / 2);
  ParallelFor(items, GrainFor(2 * avg_kv * hd), [&](int64_t b, int64_t e) {
    std::vector<float> scores(max_kv), acc(hd);
    size_t s = std::upper_bound(first.begin(), first.end(), b) - first.begin() - 1;
    for (int64_t it = b; it < e; ++it) {
      while (it >= first[s + 1]) ++s;
      const AttentionSeq& seq = seqs[s];
      const int64_t local = it - first[s];
      const int64_t i = local / h, head = local % h;
      const int64_t kvh = seq.k->dim(1), g = head / (h / kvh);
      const int64_t keys = seq.kv_len - seq.q_len + i + 1;
      const int64_t row = seq.q_begin + i;
      const float* qv = pq + (row * h + head) * hd;
      const float* pk = seq.k->data<float>() + g * hd;
      const float* pv = seq.v->data<float>() + g * hd;
      const int64_t stride = kvh * hd;
      float m = -INFINITY;
      for (int64_t j = 0; j < keys; ++j) {
        scores[j] = scale * Dot(qv, pk + j * stride, hd);
        m = std::max(m, scores[j]);
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      float l = 0.0f;
      for (int64_t j = 0; j < keys; ++j) {
        const float p = std::exp(scores[j] - m);
        l += p;
        AxpyRow(p, pv + j * stride, acc.data(), hd);
      }
      float* ov = po + (row * h + head) * hd;
      const float inv = 1.0f / l;
      for (int64_t d = 0; d < hd; ++d) ov[d] = acc[d] * inv;
      if (pl) pl[row * h + head] = m + std::log(l);
    }
  });
  return absl::OkStatus();
}

absl::Status CpuBackend::AttentionBackward(const Tensor& q, absl::Span<const AttentionSeq> seqs, float scale,
                                           const Tensor& out, const Tensor& lse, const Tensor& dout,
                                           Tensor& dq) {
  constexpr char kOp[] = "AttentionBackward";
  RETURN_IF_ERROR(CheckQ(kOp, "q", q));
  RETURN_IF_ERROR(CheckF32(kOp, "out", out));
  RETURN_IF_ERROR(CheckF32(kOp, "lse", lse));
  RETURN_IF_ERROR(CheckF32(kOp, "dout", dout));
  RETURN_IF_ERROR(CheckF32(kOp, "dq", dq));
  RETURN_IF_ERROR(CheckShape(kOp, "out", out, q.shape()));
  RETURN_IF_ERROR(CheckShape(kOp, "lse", lse, {q.dim(0), q.dim(1)}));
  RETURN_IF_ERROR(CheckShape(kOp, "dout", dout, q.shape()));
  RETURN_IF_ERROR(CheckShape(kOp, "dq", dq, q.shape()));
  RETURN_IF_ERROR(CheckSeqs(kOp, q, seqs, true));
  for (const Tensor* t : {&q, &out, &lse, &dout}) {
    if (Overlaps(*t, dq)) return absl::InvalidArgumentError("AttentionBackward: dq overlaps an input");
  }
  const int64_t nq = q.dim(0), h = q.dim(1), hd = q.dim(2);
  const float* pq = q.data<float>();
  const float* po = out.data<float>();
  const float* pl = lse.data<float>();
  const float* pdo = dout.data<float>();
  float* pdq = dq.data<float>();

  // Rows outside every sequence have zero gradient.
  std::vector<char> covered(nq, 0);
  for (const AttentionSeq& s : seqs) std::fill_n(covered.begin() + s.q_begin, s.q_len, 1);
  for (int64_t r = 0; r < nq; ++r) {
    if (!covered[r]) std::fill_n(pdq + r * h * hd, h * hd, 0.0f);
  }

  auto run = [&](const AttentionSeq& seq, int64_t g) {
    const int64_t kvh = seq.k->dim(1), group = h / kvh, stride = kvh * hd;
    const float* pk = seq.k->data<float>() + g * hd;
    const float* pv = seq.v->data<float>() + g * hd;
    float* pdk = seq.dk->data<float>() + g * hd;
    float* pdv = seq.dv->data<float>() + g * hd;
    std::vector<float> acc(hd);
    for (int64_t head = g * group; head < (g + 1) * group; ++head) {
      for (int64_t i = 0; i < seq.q_len; ++i) {
        const int64_t row = seq.q_begin + i, off = (row * h + head) * hd;
        const int64_t keys = seq.kv_len - seq.q_len + i + 1;
        const float* qv = pq + off;
        const float* dov = pdo + off;
        const float l = pl[row * h + head];
        const float dsum = Dot(dov, po + off, hd);
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t j = 0; j < keys; ++j) {
          const float p = std::exp(scale * Dot(qv, pk + j * stride, hd) - l);
          AxpyRow(p, dov, pdv + j * stride, hd);
          const float ds = p * (Dot(dov, pv + j * stride, hd) - dsum);
          AxpyRow(ds, pk + j * stride, acc.data(), hd);
          AxpyRow(scale * ds, qv, pdk + j * stride, hd);
        }
        float* dqv = pdq + off;
        for (int64_t d = 0; d < hd; ++d) dqv[d] = scale * acc[d];
      }
    }
  };

  bool shared = false;
  for (size_t a = 0; a < seqs.size() && !shared; ++a) {
    for (size_t b = a + 1; b < seqs.size() && !shared; ++b) {
      shared = Overlaps(*seqs[a].dk, *seqs[b].dk) || Overlaps(*seqs[a].dv, *seqs[b].dv) ||
               Overlaps(*seqs[a].dk, *seqs[b].dv) || Overlaps(*seqs[a].dv, *seqs[b].dk);
    }
  }
  if (shared) {
    for (const AttentionSeq& seq : seqs) {
      ParallelFor(seq.k->dim(1), 1, [&](int64_t b, int64_t e) {
        for (int64_t g = b; g < e; ++g) run(seq, g);
      });
    }
    return absl::OkStatus();
  }
  std::vector<std::pair<int64_t, int64_t>> items;  // (seq, kv head)
  for (size_t s = 0; s < seqs.size(); ++s) {
    if (seqs[s].q_len == 0) continue;
    for (int64_t g = 0; g < seqs[s].k->dim(1); ++g) items.emplace_back(static_cast<int64_t>(s), g);
  }
  ParallelFor(static_cast<int64_t>(items.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) run(seqs[items[i].first], items[i].second);
  });
  return absl::OkStatus();
}

}  // namespace tessera::cpu
