// CPU causal attention with GQA over a batch of sequences (AttentionSeq), forward and backward.
//
// Math, per sequence, query head h (kv head g = h / (H / KVH)), query i at absolute position
// p = kv_len - q_len + i, keys j in [lo(p), p] with lo(p) = 0 (causal) or max(0, p - window + 1) (sliding
// window: the window counts the query's own key, as transformers' sliding_window_overlay does):
//   s_j = scale * q_i . k_j,  m = max_j s_j,  l = sum_j exp(s_j - m)
//   out_i = sum_j exp(s_j - m) v_j / l,  lse_i = m + log(l)          (two-pass softmax per row)
// Backward (P recomputed from q, k and lse; D_i = dout_i . out_i):
//   P_ij = exp(s_j - lse_i); dv_j += P_ij dout_i; dP_ij = dout_i . v_j; dS_ij = P_ij (dP_ij - D_i)
//   dq_i = scale * sum_j dS_ij k_j;  dk_j += scale * dS_ij q_i
//
// Keys before lo(p) are never read: the per-row kernel starts at lo(p), the blocked kernel at the key
// block holding lo of the block's first row (rows mask the rest), so a windowed sequence costs
// O(q_len * window) instead of O(q_len * kv_len).
//
// Memory: q/out/dq/dout [Nq,H,hd], lse [Nq,H]; each seq's k/v/dk/dv [>= kv_len, KVH, hd]. Query row
// ranges of different seqs must be disjoint. Forward writes only the out/lse rows of the sequences;
// backward overwrites all of dq (rows outside every sequence get 0, their true gradient).
//
// Two kernels compute the same math. Sequences with q_len >= kBlockedMinQ (prefill, training) use a
// blocked, flash-attention style kernel: query blocks of Bq rows against key blocks of kBk = 64 keys,
// the block products (S = Q K^T, O += P V; backward dV += P^T dO, dP = dO V^T, dQ += dS K,
// dK += dS^T Q) done by cblas_sgemm and the forward softmax kept online (running max and sum per row).
// Bq is chosen so that Bq * kBk * head_dim <= 262144, the size up to which OpenBLAS runs a gemm on the
// calling thread; the gemms therefore run inside our ParallelFor workers without nested threading.
// Short query runs (decode) use a per-row kernel (dot products over the keys), which avoids gemm call
// overhead for one or a few rows.
//
// Paged keys/values (AttentionSeq::block_tokens > 0, forward only): the per-row kernel reads each key
// through the block table, a block's run of rows at a time, so it reads exactly what it would read from
// a contiguous copy, in the same order (bit-identical results, nothing copied: a decode step's attention
// touches each key once). A blocked (prefill) sequence is first gathered into a contiguous copy, once per
// call, and then runs the contiguous kernel: its copy costs O(kv_len) against the kernel's
// O(q_len * kv_len), and its results are bit-identical too.
//
// bf16 keys and values (forward, per-row sequences only; paged or not): the per-row kernel reads them in
// bf16 and widens each element as it goes (exact), so a bf16 model's decode step does not first widen its
// whole KV history into an f32 copy every step (NarrowStorageBackend passes such sequences through). That
// copy was 10% of a bf16 Mixtral-shaped decode step at batch 1 (ops/bench/RESULTS.md "Decode against
// llama.cpp"). Results equal the widened copy's up to the order the vector lanes are summed in.
//
// Threading: forward parallelizes over (sequence, head, query block or row), all independent.
// Backward parallelizes over (sequence, kv head): the query heads sharing a kv head run in the same
// task, so every dk/dv row is written by exactly one thread. When different sequences' dk/dv overlap
// in memory, sequences run one after another (parallel over kv heads only).
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/backend/cpu/cpu_blas.h"

#include "absl/strings/str_cat.h"
#include "core/backend/cpu/cpu_attention_rows.h"
#include "core/backend/cpu/cpu_backend_internal.h"
#include "core/backend/cpu/cpu_check.h"
#include "core/backend/cpu/cpu_kernels.h"
#include "core/backend/cpu/cpu_small_gemm.h"
#include "core/util/parallel.h"
#include "core/util/status_macros.h"

namespace tessera::cpu {
namespace {

constexpr int64_t kBlockedMinQ = kAttentionBlockedMinQ;  // q_len from which a sequence uses the blocked kernel
constexpr int64_t kBk = 64;           // keys per block

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
    if (s.window < 0) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, ".window = ", s.window, " is negative"));
    }
    if (s.kv_len < s.q_len) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": ", name, ".kv_len = ", s.kv_len, " is less than q_len = ", s.q_len));
    }
    const bool paged = s.block_tokens > 0;
    if (paged && backward) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, " is paged; backward reads contiguous keys"));
    }
    if (paged) {
      const int64_t bt = s.block_tokens, need = (s.kv_len + bt - 1) / bt;
      if (static_cast<int64_t>(s.blocks.size()) < need) {
        return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, " has ", s.blocks.size(), " blocks of ", bt,
                                                       " positions for kv_len ", s.kv_len));
      }
      const int64_t stored = s.k != nullptr && s.k->rank() == 3 ? s.k->dim(0) / bt : 0;
      for (int64_t b = 0; b < need; ++b) {
        if (s.blocks[b] < 0 || s.blocks[b] >= stored) {
          return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, ".blocks[", b, "] = ", s.blocks[b],
                                                         " is outside the ", stored, " blocks of its k/v"));
        }
      }
    }
    const Tensor* tensors[4] = {s.k, s.v, s.dk, s.dv};
    const char* names[4] = {".k", ".v", ".dk", ".dv"};
    const int count = backward ? 4 : 2;
    for (int t = 0; t < count; ++t) {
      if (tensors[t] == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, names[t], " is null"));
      }
      // bf16 keys and values: forward, per-row sequences only (see the file comment).
      const bool bf16_ok = !backward && AttentionReadsBf16InPlace(s) && tensors[t]->device() == DeviceKind::kCpu;
      if (!bf16_ok) RETURN_IF_ERROR(CheckF32(op, name + names[t], *tensors[t]));
      const Tensor& k = *tensors[t];
      const bool ok = k.rank() == 3 && (paged || k.dim(0) >= s.kv_len) && k.dim(1) > 0 && h % k.dim(1) == 0 &&
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


int64_t QueryBlock(int64_t hd) {
  return std::clamp<int64_t>(static_cast<int64_t>(kBlasSingleThreadMnk / static_cast<double>(kBk * hd)), 1, 64);
}

// Row-major C[m,n] = alpha * op(A) op(B) + beta * C with explicit leading dimensions.
inline void Gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                 const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  Sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c, static_cast<blasint>(ldc));
}

// Shapes and pointers of one (sequence, query head) pair.
struct HeadView {
  int64_t hd, qstride, kstride, offset;  // offset: absolute position of query 0 = kv_len - q_len
  int64_t window;    // 0: causal; else the sliding window
  const float* q;    // row 0 of this head in the sequence
  const float* k;    // key 0 of this head's kv head (storage row 0 when paged); null when bf16
  const float* v;
  const uint16_t* kb = nullptr;  // the same, for bf16 keys and values (per-row kernel only)
  const uint16_t* vb = nullptr;
  const int32_t* table = nullptr;  // paged: the block table (per-row kernel only)
  int64_t bt = 0;                  // paged: positions per block
  HeadView(const AttentionSeq& seq, const float* pq, int64_t h, int64_t hd_, int64_t head)
      : hd(hd_), qstride(h * hd_), kstride(seq.k->dim(1) * hd_), offset(seq.kv_len - seq.q_len), window(seq.window) {
    const int64_t g = head / (h / seq.k->dim(1));
    q = pq + (seq.q_begin * h + head) * hd;
    if (seq.k->dtype() == DType::kBF16) {
      k = v = nullptr;
      kb = seq.k->data<uint16_t>() + g * hd;
      vb = seq.v->data<uint16_t>() + g * hd;
    } else {
      k = seq.k->data<float>() + g * hd;
      v = seq.v->data<float>() + g * hd;
    }
    if (seq.block_tokens > 0) {
      table = seq.blocks.data();
      bt = seq.block_tokens;
    }
  }
  // The storage row of key j, and how many keys from j on (at most n) are stored in consecutive rows.
  int64_t Row(int64_t j) const { return table != nullptr ? table[j / bt] * bt + j % bt : j; }
  int64_t Run(int64_t j, int64_t n) const { return table != nullptr ? std::min(n, bt - j % bt) : n; }
  // The first key the query at absolute position p sees (it sees [First(p), p]).
  int64_t First(int64_t p) const { return window > 0 ? std::max<int64_t>(0, p - window + 1) : 0; }
  // The first key block a query block starting at query i0 needs (block-aligned).
  int64_t FirstBlock(int64_t i0) const { return First(offset + i0) / kBk * kBk; }
};

struct Scratch {
  std::vector<float> s, dp, acc, m, l, d;
  Scratch(int64_t max_kv, int64_t hd) {
    const int64_t bq = QueryBlock(hd);
    s.resize(std::max(bq * kBk, max_kv));
    dp.resize(bq * kBk);
    acc.resize(bq * hd);
    m.resize(bq);
    l.resize(bq);
    d.resize(bq);
  }
};

// Forward of query row i (per-row kernel): two-pass softmax over its keys. The loops over a run of keys
// are cpu_attention_rows.h's (AVX2 where the CPU has it).
void ForwardRow(const HeadView& hv, int64_t i, float scale, float* o, float* lse, Scratch& sc) {
  const int64_t first = hv.First(hv.offset + i), keys = hv.offset + i + 1 - first, hd = hv.hd;
  const SmallGemmIsa isa = SmallGemmBestIsa();
  const float* qv = hv.q + i * hv.qstride;
  float* scores = sc.s.data();
  // Keys in runs of consecutive storage rows (one run unless paged).
  for (int64_t j = 0; j < keys;) {
    const int64_t run = hv.Run(first + j, keys - j);
    const int64_t at = hv.Row(first + j) * hv.kstride;
    if (hv.kb != nullptr) {
      AttnDotRows(isa, qv, hv.kb + at, hv.kstride, run, hd, scale, scores + j);
    } else {
      AttnDotRows(isa, qv, hv.k + at, hv.kstride, run, hd, scale, scores + j);
    }
    j += run;
  }
  const float m = MaxOf(scores, keys);
  float l = 0.0f;
  for (int64_t j = 0; j < keys; ++j) {
    scores[j] = std::exp(scores[j] - m);
    l += scores[j];
  }
  float* acc = sc.acc.data();
  std::fill_n(acc, hd, 0.0f);
  for (int64_t j = 0; j < keys;) {
    const int64_t run = hv.Run(first + j, keys - j);
    const int64_t at = hv.Row(first + j) * hv.kstride;
    if (hv.vb != nullptr) {
      AttnAxpyRows(isa, scores + j, hv.vb + at, hv.kstride, run, hd, acc);
    } else {
      AttnAxpyRows(isa, scores + j, hv.v + at, hv.kstride, run, hd, acc);
    }
    j += run;
  }
  const float inv = 1.0f / l;
  for (int64_t d = 0; d < hd; ++d) o[d] = acc[d] * inv;
  if (lse) *lse = m + std::log(l);
}

// Forward of query rows [i0, i1) (blocked kernel, online softmax over key blocks). `o`/`lse` point at
// row i0 of this head (strides qstride and h).
void ForwardBlock(const HeadView& hv, int64_t i0, int64_t i1, float scale, float* o, float* lse, int64_t h,
                  Scratch& sc) {
  const int64_t bq = i1 - i0, hd = hv.hd, nk = hv.offset + i1;
  float* S = sc.s.data();
  float* acc = sc.acc.data();
  float* m = sc.m.data();
  float* l = sc.l.data();
  std::fill_n(acc, bq * hd, 0.0f);
  std::fill_n(m, bq, -INFINITY);
  std::fill_n(l, bq, 0.0f);
  const float* q0 = hv.q + i0 * hv.qstride;
  for (int64_t j0 = hv.FirstBlock(i0); j0 < nk; j0 += kBk) {
    const int64_t bk = std::min(kBk, nk - j0);
    Gemm(false, true, bq, bk, hd, scale, q0, hv.qstride, hv.k + j0 * hv.kstride, hv.kstride, 0.0f, S, bk);
    for (int64_t b = 0; b < bq; ++b) {
      float* row = S + b * bk;
      // Keys of this block that row b sees: [lo, hi) (causal, and the window's lower end).
      const int64_t p = hv.offset + i0 + b;
      const int64_t hi = std::clamp<int64_t>(p + 1 - j0, 0, bk);
      const int64_t lo = std::clamp<int64_t>(hv.First(p) - j0, 0, hi);
      if (lo == hi) {
        std::fill_n(row, bk, 0.0f);
        continue;
      }
      const float m_new = std::max(m[b], MaxOf(row + lo, hi - lo));
      const float corr = std::exp(m[b] - m_new);  // 0 on the row's first block (m = -inf)
      float sum = 0.0f;
      for (int64_t j = lo; j < hi; ++j) {
        row[j] = std::exp(row[j] - m_new);
        sum += row[j];
      }
      std::fill(row, row + lo, 0.0f);
      std::fill(row + hi, row + bk, 0.0f);
      l[b] = l[b] * corr + sum;
      m[b] = m_new;
      if (corr != 1.0f) {
        float* a = acc + b * hd;
        for (int64_t d = 0; d < hd; ++d) a[d] *= corr;
      }
    }
    Gemm(false, false, bq, hd, bk, 1.0f, S, bk, hv.v + j0 * hv.kstride, hv.kstride, 1.0f, acc, hd);
  }
  for (int64_t b = 0; b < bq; ++b) {
    const float inv = 1.0f / l[b];
    float* orow = o + b * hv.qstride;
    for (int64_t d = 0; d < hd; ++d) orow[d] = acc[b * hd + d] * inv;
    if (lse) lse[b * h] = m[b] + std::log(l[b]);
  }
}

// Gradient pointers of one (sequence, query head) pair, at row 0 / key 0 like HeadView.
struct GradView {
  const float* o;
  const float* dout;
  const float* lse;  // stride h
  float* dq;
  float* dk;
  float* dv;
};

// Backward of query row i (per-row kernel).
void BackwardRow(const HeadView& hv, const GradView& gv, int64_t i, int64_t h, float scale, Scratch& sc) {
  const int64_t first = hv.First(hv.offset + i), keys = hv.offset + i + 1, hd = hv.hd, off = i * hv.qstride;
  const float* qv = hv.q + off;
  const float* dov = gv.dout + off;
  const float l = gv.lse[i * h];
  const float dsum = Dot(dov, gv.o + off, hd);
  float* acc = sc.acc.data();
  std::fill_n(acc, hd, 0.0f);
  for (int64_t j = first; j < keys; ++j) {
    const float* kj = hv.k + j * hv.kstride;
    const float p = std::exp(scale * Dot(qv, kj, hd) - l);
    AxpyRow(p, dov, gv.dv + j * hv.kstride, hd);
    const float ds = p * (Dot(dov, hv.v + j * hv.kstride, hd) - dsum);
    AxpyRow(ds, kj, acc, hd);
    AxpyRow(scale * ds, qv, gv.dk + j * hv.kstride, hd);
  }
  float* dqv = gv.dq + off;
  for (int64_t d = 0; d < hd; ++d) dqv[d] = scale * acc[d];
}

// Backward of query rows [i0, i1) (blocked kernel).
void BackwardBlock(const HeadView& hv, const GradView& gv, int64_t i0, int64_t i1, int64_t h, float scale,
                   Scratch& sc) {
  const int64_t bq = i1 - i0, hd = hv.hd, nk = hv.offset + i1, qs = hv.qstride, ks = hv.kstride;
  const float* q0 = hv.q + i0 * qs;
  const float* do0 = gv.dout + i0 * qs;
  float* dq0 = gv.dq + i0 * qs;
  float* P = sc.s.data();
  float* dS = sc.dp.data();
  float* D = sc.d.data();
  for (int64_t b = 0; b < bq; ++b) {
    D[b] = Dot(do0 + b * qs, gv.o + (i0 + b) * qs, hd);
    std::fill_n(dq0 + b * qs, hd, 0.0f);
  }
  for (int64_t j0 = hv.FirstBlock(i0); j0 < nk; j0 += kBk) {
    const int64_t bk = std::min(kBk, nk - j0);
    const float* kb = hv.k + j0 * ks;
    const float* vb = hv.v + j0 * ks;
    Gemm(false, true, bq, bk, hd, scale, q0, qs, kb, ks, 0.0f, P, bk);
    for (int64_t b = 0; b < bq; ++b) {
      float* row = P + b * bk;
      const int64_t p = hv.offset + i0 + b;
      const int64_t hi = std::clamp<int64_t>(p + 1 - j0, 0, bk);
      const int64_t lo = std::clamp<int64_t>(hv.First(p) - j0, 0, hi);
      const float l = gv.lse[(i0 + b) * h];
      std::fill(row, row + lo, 0.0f);
      for (int64_t j = lo; j < hi; ++j) row[j] = std::exp(row[j] - l);
      std::fill(row + hi, row + bk, 0.0f);
    }
    Gemm(true, false, bk, hd, bq, 1.0f, P, bk, do0, qs, 1.0f, gv.dv + j0 * ks, ks);  // dV += P^T dO
    Gemm(false, true, bq, bk, hd, 1.0f, do0, qs, vb, ks, 0.0f, dS, bk);              // dP = dO V^T
    for (int64_t b = 0; b < bq; ++b) {
      float* __restrict dr = dS + b * bk;
      const float* __restrict pr = P + b * bk;
      for (int64_t j = 0; j < bk; ++j) dr[j] = pr[j] * (dr[j] - D[b]);
    }
    Gemm(false, false, bq, hd, bk, scale, dS, bk, kb, ks, 1.0f, dq0, qs);             // dQ += dS K
    Gemm(true, false, bk, hd, bq, scale, dS, bk, q0, qs, 1.0f, gv.dk + j0 * ks, ks);  // dK += dS^T Q
  }
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
  if (hd == 0) return absl::OkStatus();

  // Paged sequences for the blocked kernel: their keys and values gathered into contiguous copies (see
  // the file comment); the per-row kernel reads paged ones in place.
  std::vector<AttentionSeq> gathered_seqs;
  std::vector<Tensor> gathered;
  for (size_t s = 0; s < seqs.size(); ++s) {
    if (seqs[s].block_tokens > 0 && seqs[s].q_len >= kBlockedMinQ) {
      if (gathered_seqs.empty()) {
        gathered_seqs.assign(seqs.begin(), seqs.end());
        gathered.reserve(2 * seqs.size());  // never reallocates: gathered_seqs point into it
      }
      const AttentionSeq& in = seqs[s];
      const int64_t kvh = in.k->dim(1), row = kvh * hd, bt = in.block_tokens;
      for (const Tensor* src : {in.k, in.v}) {
        ASSIGN_OR_RETURN(Tensor dst, Alloc({in.kv_len, kvh, hd}, DType::kF32));
        const float* from = src->data<float>();
        float* to = dst.data<float>();
        for (int64_t j = 0; j < in.kv_len; j += bt) {
          const int64_t n = std::min(bt, in.kv_len - j);
          std::copy_n(from + static_cast<int64_t>(in.blocks[j / bt]) * bt * row, n * row, to + j * row);
        }
        gathered.push_back(std::move(dst));
      }
      AttentionSeq& out_seq = gathered_seqs[s];
      out_seq.k = &gathered[gathered.size() - 2];
      out_seq.v = &gathered.back();
      out_seq.blocks = {};
      out_seq.block_tokens = 0;
    }
  }
  if (!gathered_seqs.empty()) seqs = gathered_seqs;

  // Work items: (sequence, head, query rows [i0, i1)); a block for blocked sequences, one row otherwise.
  struct Item {
    int64_t seq, head, i0, i1;
  };
  std::vector<Item> items;
  int64_t max_kv = 0;
  const int64_t bq = QueryBlock(hd);
  for (size_t s = 0; s < seqs.size(); ++s) {
    max_kv = std::max(max_kv, seqs[s].kv_len);
    const int64_t step = seqs[s].q_len >= kBlockedMinQ ? bq : 1;
    for (int64_t head = 0; head < h; ++head) {
      for (int64_t i0 = 0; i0 < seqs[s].q_len; i0 += step) {
        items.push_back({static_cast<int64_t>(s), head, i0, std::min(seqs[s].q_len, i0 + step)});
      }
    }
  }
  const float* pq = q.data<float>();
  float* po = out.data<float>();
  float* pl = lse ? lse->data<float>() : nullptr;
  const int64_t avg_work = std::max<int64_t>(1, max_kv * hd);
  ParallelFor(static_cast<int64_t>(items.size()), GrainFor(avg_work, 16384), [&](int64_t b, int64_t e) {
    Scratch sc(max_kv, hd);
    for (int64_t it = b; it < e; ++it) {
      const Item& item = items[it];
      const AttentionSeq& seq = seqs[item.seq];
      const HeadView hv(seq, pq, h, hd, item.head);
      const int64_t row0 = seq.q_begin + item.i0;
      float* o = po + (row0 * h + item.head) * hd;
      float* l = pl ? pl + row0 * h + item.head : nullptr;
      if (seq.q_len >= kBlockedMinQ) {
        ForwardBlock(hv, item.i0, item.i1, scale, o, l, h, sc);
      } else {
        ForwardRow(hv, item.i0, scale, o, l, sc);
      }
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
  if (hd == 0) return absl::OkStatus();
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
  int64_t max_kv = 0;
  for (const AttentionSeq& s : seqs) max_kv = std::max(max_kv, s.kv_len);
  const int64_t bq = QueryBlock(hd);

  // All query heads of kv head g of one sequence.
  auto run = [&](const AttentionSeq& seq, int64_t g, Scratch& sc) {
    const int64_t kvh = seq.k->dim(1), group = h / kvh;
    for (int64_t head = g * group; head < (g + 1) * group; ++head) {
      const HeadView hv(seq, pq, h, hd, head);
      const int64_t off = (seq.q_begin * h + head) * hd;
      const GradView gv{po + off, pdo + off, pl + seq.q_begin * h + head, pdq + off,
                        seq.dk->data<float>() + g * hd, seq.dv->data<float>() + g * hd};
      if (seq.q_len >= kBlockedMinQ) {
        for (int64_t i0 = 0; i0 < seq.q_len; i0 += bq) {
          BackwardBlock(hv, gv, i0, std::min(seq.q_len, i0 + bq), h, scale, sc);
        }
      } else {
        for (int64_t i = 0; i < seq.q_len; ++i) BackwardRow(hv, gv, i, h, scale, sc);
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
        Scratch sc(max_kv, hd);
        for (int64_t g = b; g < e; ++g) run(seq, g, sc);
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
    Scratch sc(max_kv, hd);
    for (int64_t i = b; i < e; ++i) run(seqs[items[i].first], items[i].second, sc);
  });
  return absl::OkStatus();
}

}  // namespace tessera::cpu
