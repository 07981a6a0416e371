// Host side of every CUDA op except the GEMMs: argument validation (INVALID_ARGUMENT naming op and
// argument, before anything is enqueued), then one or two kernel launches on the backend's stream.
// Dtypes: float tensors may be f32, bf16 or f16 independently of each other (kernels compute in fp32);
// the tensors backend.h calls f32 (rstd, lse, topk_w, gather scales, AdamW m and v) must be f32.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/backend/cuda/cuda_attention_tiles.h"
#include "core/backend/cuda/cuda_backend_internal.h"
#include "core/backend/cuda/cuda_kernels.h"
#include "core/util/status_macros.h"

namespace tessera::cuda {
namespace k = ::tessera::cuda_kernels;

namespace {

const float* OptF32(const Tensor* t) { return t == nullptr ? nullptr : t->data<float>(); }

}  // namespace

// ---- Element-wise -----------------------------------------------------------------------------------

absl::Status CudaBackend::Add(const Tensor& a, const Tensor& b, Tensor& out) {
  RETURN_IF_ERROR(CheckFloat(a, "Add", "a"));
  RETURN_IF_ERROR(CheckFloat(b, "Add", "b"));
  RETURN_IF_ERROR(CheckFloat(out, "Add", "out"));
  RETURN_IF_ERROR(CheckNumel(b, a.numel(), "Add", "b"));
  RETURN_IF_ERROR(CheckNumel(out, a.numel(), "Add", "out"));
  RETURN_IF_ERROR(Enter());
  return CudaStatus(k::Add(a.raw(), Dt(a), b.raw(), Dt(b), out.raw(), Dt(out), a.numel(), stream()), "Add");
}

absl::Status CudaBackend::Axpy(float alpha, const Tensor& x, Tensor& y) {
  RETURN_IF_ERROR(CheckFloat(x, "Axpy", "x"));
  RETURN_IF_ERROR(CheckFloat(y, "Axpy", "y"));
  RETURN_IF_ERROR(CheckNumel(y, x.numel(), "Axpy", "y"));
  RETURN_IF_ERROR(Enter());
  return CudaStatus(k::Axpy(alpha, x.raw(), Dt(x), y.raw(), Dt(y), x.numel(), stream()), "Axpy");
}

absl::Status CudaBackend::Scale(Tensor& x, float alpha) {
  RETURN_IF_ERROR(CheckFloat(x, "Scale", "x"));
  RETURN_IF_ERROR(Enter());
  return CudaStatus(k::Scale(x.raw(), Dt(x), x.numel(), alpha, stream()), "Scale");
}

absl::StatusOr<double> CudaBackend::SumSquares(const Tensor& x) {
  RETURN_IF_ERROR(CheckFloat(x, "SumSquares", "x"));
  RETURN_IF_ERROR(Enter());
  RETURN_IF_ERROR(CudaStatus(cudaMemsetAsync(sumsq_dev_, 0, sizeof(double), stream()), "SumSquares"));
  RETURN_IF_ERROR(CudaStatus(k::SumSquares(x.raw(), Dt(x), x.numel(), sumsq_dev_, stream()), "SumSquares"));
  RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(sumsq_host_, sumsq_dev_, sizeof(double), cudaMemcpyDeviceToHost, stream()),
                             "SumSquares"));
  RETURN_IF_ERROR(SyncAndCheck("SumSquares"));
  return *sumsq_host_;
}

// ---- Gather / scatter / embedding ---------------------------------------------------------------------

absl::Status CudaBackend::GatherRows(const Tensor& src, const Tensor& idx, const Tensor* scale, Tensor& dst) {
  RETURN_IF_ERROR(CheckFloat(src, "GatherRows", "src"));
  RETURN_IF_ERROR(CheckI32(idx, "GatherRows", "idx"));
  RETURN_IF_ERROR(CheckFloat(dst, "GatherRows", "dst"));
  const Tensor s2 = src.Flat2D();
  const int64_t m = idx.numel(), d = s2.dim(1);
  RETURN_IF_ERROR(Check2D(dst, m, d, "GatherRows", "dst"));
  if (scale != nullptr) {
    RETURN_IF_ERROR(CheckF32(*scale, "GatherRows", "scale"));
    RETURN_IF_ERROR(CheckNumel(*scale, m, "GatherRows", "scale"));
  }
  RETURN_IF_ERROR(Enter());
  if (Overlaps(src, dst)) return absl::InvalidArgumentError("GatherRows: dst must not overlap src");
  RETURN_IF_ERROR(CheckIndexRange(idx, 0, static_cast<int32_t>(std::min<int64_t>(s2.dim(0), INT32_MAX)), "GatherRows", "idx"));
  return CudaStatus(k::GatherRows(src.raw(), Dt(src), s2.dim(0), idx.data<int32_t>(), OptF32(scale), dst.raw(),
                                  Dt(dst), m, d, k::kErrGatherIndex, err_word_, stream()),
                    "GatherRows");
}

absl::Status CudaBackend::ScatterAddRows(const Tensor& src, const Tensor& idx, const Tensor* scale, Tensor& dst) {
  RETURN_IF_ERROR(CheckFloat(src, "ScatterAddRows", "src"));
  RETURN_IF_ERROR(CheckI32(idx, "ScatterAddRows", "idx"));
  RETURN_IF_ERROR(CheckFloat(dst, "ScatterAddRows", "dst"));
  const Tensor d2 = dst.Flat2D();
  const int64_t m = idx.numel(), d = d2.dim(1);
  RETURN_IF_ERROR(Check2D(src, m, d, "ScatterAddRows", "src"));
  if (scale != nullptr) {
    RETURN_IF_ERROR(CheckF32(*scale, "ScatterAddRows", "scale"));
    RETURN_IF_ERROR(CheckNumel(*scale, m, "ScatterAddRows", "scale"));
  }
  RETURN_IF_ERROR(Enter());
  if (Overlaps(src, dst)) return absl::InvalidArgumentError("ScatterAddRows: dst must not overlap src");
  RETURN_IF_ERROR(CheckIndexRange(idx, 0, static_cast<int32_t>(std::min<int64_t>(d2.dim(0), INT32_MAX)), "ScatterAddRows", "idx"));
  return CudaStatus(k::ScatterAddRows(src.raw(), Dt(src), idx.data<int32_t>(), OptF32(scale), dst.raw(), Dt(dst),
                                      d2.dim(0), m, d, k::kErrScatterIndex, err_word_, stream()),
                    "ScatterAddRows");
}

absl::Status CudaBackend::RowDotGather(const Tensor& a, const Tensor& b, const Tensor& idx, Tensor& out) {
  RETURN_IF_ERROR(CheckFloat(a, "RowDotGather", "a"));
  RETURN_IF_ERROR(CheckFloat(b, "RowDotGather", "b"));
  RETURN_IF_ERROR(CheckI32(idx, "RowDotGather", "idx"));
  RETURN_IF_ERROR(CheckFloat(out, "RowDotGather", "out"));
  const Tensor b2 = b.Flat2D();
  const int64_t m = idx.numel(), d = b2.dim(1);
  RETURN_IF_ERROR(Check2D(a, m, d, "RowDotGather", "a"));
  RETURN_IF_ERROR(CheckNumel(out, m, "RowDotGather", "out"));
  RETURN_IF_ERROR(Enter());
  RETURN_IF_ERROR(CheckIndexRange(idx, 0, static_cast<int32_t>(std::min<int64_t>(b2.dim(0), INT32_MAX)), "RowDotGather", "idx"));
  return CudaStatus(k::RowDotGather(a.raw(), Dt(a), b.raw(), Dt(b), b2.dim(0), idx.data<int32_t>(), out.raw(),
                                    Dt(out), m, d, err_word_, stream()),
                    "RowDotGather");
}

absl::Status CudaBackend::EmbeddingForward(const Tensor& table, const Tensor& ids, Tensor& out) {
  RETURN_IF_ERROR(CheckFloat(table, "EmbeddingForward", "table"));
  RETURN_IF_ERROR(CheckI32(ids, "EmbeddingForward", "ids"));
  RETURN_IF_ERROR(CheckFloat(out, "EmbeddingForward", "out"));
  if (table.rank() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("EmbeddingForward: table must be [V,D], got ", table.DebugString()));
  }
  const int64_t n = ids.numel(), d = table.dim(1);
  RETURN_IF_ERROR(Check2D(out, n, d, "EmbeddingForward", "out"));
  RETURN_IF_ERROR(Enter());
  RETURN_IF_ERROR(CheckIndexRange(ids, 0, static_cast<int32_t>(std::min<int64_t>(table.dim(0), INT32_MAX)), "EmbeddingForward", "ids"));
  return CudaStatus(k::GatherRows(table.raw(), Dt(table), table.dim(0), ids.data<int32_t>(), nullptr, out.raw(),
                                  Dt(out), n, d, k::kErrEmbeddingIndex, err_word_, stream()),
                    "EmbeddingForward");
}

absl::Status CudaBackend::EmbeddingBackward(const Tensor& ids, const Tensor& dout, Tensor& dtable) {
  RETURN_IF_ERROR(CheckI32(ids, "EmbeddingBackward", "ids"));
  RETURN_IF_ERROR(CheckFloat(dout, "EmbeddingBackward", "dout"));
  RETURN_IF_ERROR(CheckFloat(dtable, "EmbeddingBackward", "dtable"));
  if (dtable.rank() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("EmbeddingBackward: dtable must be [V,D], got ", dtable.DebugString()));
  }
  const int64_t n = ids.numel(), d = dtable.dim(1);
  RETURN_IF_ERROR(Check2D(dout, n, d, "EmbeddingBackward", "dout"));
  RETURN_IF_ERROR(Enter());
  RETURN_IF_ERROR(CheckIndexRange(ids, 0, static_cast<int32_t>(std::min<int64_t>(dtable.dim(0), INT32_MAX)), "EmbeddingBackward", "ids"));
  return CudaStatus(k::ScatterAddRows(dout.raw(), Dt(dout), ids.data<int32_t>(), nullptr, dtable.raw(), Dt(dtable),
                                      dtable.dim(0), n, d, k::kErrEmbeddingIndex, err_word_, stream()),
                    "EmbeddingBackward");
}

// ---- RMSNorm / RoPE -----------------------------------------------------------------------------------

absl::Status CudaBackend::RmsNormForward(const Tensor& x, const Tensor& weight, float eps, Tensor& out,
                                         Tensor* rstd) {
  RETURN_IF_ERROR(CheckFloat(x, "RmsNormForward", "x"));
  RETURN_IF_ERROR(CheckFloat(weight, "RmsNormForward", "weight"));
  RETURN_IF_ERROR(CheckFloat(out, "RmsNormForward", "out"));
  const Tensor x2 = x.Flat2D();
  const int64_t n = x2.dim(0), d = x2.dim(1);
  RETURN_IF_ERROR(CheckNumel(weight, d, "RmsNormForward", "weight"));
  RETURN_IF_ERROR(Check2D(out, n, d, "RmsNormForward", "out"));
  if (rstd != nullptr) {
    RETURN_IF_ERROR(CheckF32(*rstd, "RmsNormForward", "rstd"));
    RETURN_IF_ERROR(CheckNumel(*rstd, n, "RmsNormForward", "rstd"));
  }
  RETURN_IF_ERROR(Enter());
  return CudaStatus(k::RmsNormForward(x.raw(), Dt(x), weight.raw(), Dt(weight), eps, out.raw(), Dt(out),
                                      rstd == nullptr ? nullptr : rstd->data<float>(), n, d, stream()),
                    "RmsNormForward");
}

absl::Status CudaBackend::RmsNormBackward(const Tensor& x, const Tensor& weight, const Tensor& rstd,
                                          const Tensor& dout, Tensor& dx, Tensor* dweight) {
  RETURN_IF_ERROR(CheckFloat(x, "RmsNormBackward", "x"));
  RETURN_IF_ERROR(CheckFloat(weight, "RmsNormBackward", "weight"));
  RETURN_IF_ERROR(CheckF32(rstd, "RmsNormBackward", "rstd"));
  RETURN_IF_ERROR(CheckFloat(dout, "RmsNormBackward", "dout"));
  RETURN_IF_ERROR(CheckFloat(dx, "RmsNormBackward", "dx"));
  const Tensor x2 = x.Flat2D();
  const int64_t n = x2.dim(0), d = x2.dim(1);
  RETURN_IF_ERROR(CheckNumel(weight, d, "RmsNormBackward", "weight"));
  RETURN_IF_ERROR(CheckNumel(rstd, n, "RmsNormBackward", "rstd"));
  RETURN_IF_ERROR(Check2D(dout, n, d, "RmsNormBackward", "dout"));
  RETURN_IF_ERROR(Check2D(dx, n, d, "RmsNormBackward", "dx"));
  if (dweight != nullptr) {
    RETURN_IF_ERROR(CheckFloat(*dweight, "RmsNormBackward", "dweight"));
    RETURN_IF_ERROR(CheckNumel(*dweight, d, "RmsNormBackward", "dweight"));
  }
  if (dweight != nullptr && Overlaps(*dweight, dx)) {
    return absl::InvalidArgumentError("RmsNormBackward: dweight overlaps dx");
  }
  RETURN_IF_ERROR(Enter());
  return CudaStatus(k::RmsNormBackward(x.raw(), Dt(x), weight.raw(), Dt(weight), rstd.data<float>(), dout.raw(),
                                       Dt(dout), dx.raw(), Dt(dx), dweight == nullptr ? nullptr : dweight->raw(),
                                       dweight == nullptr ? static_cast<int>(DType::kF32) : Dt(*dweight), n, d, stream()),
                    "RmsNormBackward");
}

absl::Status CudaBackend::Rope(Tensor& x, const Tensor& positions, float theta, bool inverse) {
  RETURN_IF_ERROR(CheckFloat(x, "Rope", "x"));
  RETURN_IF_ERROR(CheckI32(positions, "Rope", "positions"));
  if (x.rank() != 3 || x.dim(2) % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("Rope: x must be [N,H,head_dim] with even head_dim, got ",
                                                   x.DebugString()));
  }
  RETURN_IF_ERROR(CheckNumel(positions, x.dim(0), "Rope", "positions"));
  RETURN_IF_ERROR(Enter());
  return CudaStatus(k::Rope(x.raw(), Dt(x), positions.data<int32_t>(), x.dim(0), x.dim(1), x.dim(2), theta, inverse,
                            stream()),
                    "Rope");
}

// ---- Attention --------------------------------------------------------------------------------------

namespace {

struct AttnLaunch {
  const k::AttnSeqDesc* seqs = nullptr;
  const int32_t* row_seq = nullptr;
  int dtkv = static_cast<int>(DType::kF32);
  int dtdkv = static_cast<int>(DType::kF32);
  int kv_heads = 1;
};

// Validates q / seqs / (backward) dk, dv and uploads the sequence table plus the row -> sequence map.
absl::StatusOr<AttnLaunch> PrepareAttention(absl::string_view op, const Tensor& q, absl::Span<const AttentionSeq> seqs,
                                            bool backward, UploadRing& uploads) {
  RETURN_IF_ERROR(CheckFloat(q, op, "q"));
  if (q.rank() != 3) return absl::InvalidArgumentError(absl::StrCat(op, ": q must be [Nq,H,head_dim], got ", q.DebugString()));
  const int64_t nq = q.dim(0), heads = q.dim(1), hd = q.dim(2);
  if (hd > k::kMaxHeadDim) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": head_dim ", hd, " > ", k::kMaxHeadDim, " is not supported"));
  }
  AttnLaunch L;
  std::vector<k::AttnSeqDesc> descs;
  std::vector<int32_t> row_seq(static_cast<size_t>(nq), -1);
  bool have_kv = false, have_dkv = false;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const AttentionSeq& S = seqs[s];
    const std::string arg = absl::StrCat("seqs[", s, "]");
    if (S.k == nullptr || S.v == nullptr) return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, ".k/.v is null"));
    RETURN_IF_ERROR(CheckFloat(*S.k, op, arg + ".k"));
    RETURN_IF_ERROR(CheckFloat(*S.v, op, arg + ".v"));
    if (S.k->rank() != 3 || S.k->shape() != S.v->shape() || S.k->dtype() != S.v->dtype()) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, ".k/.v must be equal [T,KVH,head_dim] of one dtype, got ",
                                                     S.k->DebugString(), " and ", S.v->DebugString()));
    }
    const int64_t kvh = S.k->dim(1);
    if (S.k->dim(2) != hd || kvh <= 0 || heads % kvh != 0) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, ".k ", S.k->DebugString(), " does not fit q ",
                                                     q.DebugString(), " (head_dim must match, H % KVH == 0)"));
    }
    if (!have_kv) {
      L.dtkv = Dt(*S.k);
      L.kv_heads = static_cast<int>(kvh);
      have_kv = true;
    } else if (Dt(*S.k) != L.dtkv || kvh != L.kv_heads) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, ".k differs in dtype or KV heads from seqs[0]"));
    }
    if (S.window < 0) return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, ".window = ", S.window, " is negative"));
    if (S.q_len < 0 || S.q_begin < 0 || S.q_begin + S.q_len > nq || S.q_len > S.kv_len || S.kv_len > S.k->dim(0)) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, " has q_begin ", S.q_begin, ", q_len ", S.q_len,
                                                     ", kv_len ", S.kv_len, " inconsistent with q rows ", nq,
                                                     " and cache rows ", S.k->dim(0)));
    }
    for (int64_t i = S.q_begin; i < S.q_begin + S.q_len; ++i) {
      if (row_seq[i] != -1) {
        return absl::InvalidArgumentError(absl::StrCat(op, ": query row ", i, " belongs to seqs[", row_seq[i], "] and ", arg));
      }
      row_seq[i] = static_cast<int32_t>(s);
    }
    if (backward) {
      // Same contract as the CPU backend: backward needs both gradient outputs.
      if (S.dk == nullptr || S.dv == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, ".dk/.dv is null"));
      }
      if (Overlaps(*S.dk, *S.dv)) {
        return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, ".dk overlaps .dv"));
      }
      for (const Tensor* g : {S.dk, S.dv}) {
        RETURN_IF_ERROR(CheckFloat(*g, op, arg + ".dk/.dv"));
        if (g->shape() != S.k->shape()) {
          return absl::InvalidArgumentError(absl::StrCat(op, ": ", arg, ".dk/.dv ", g->DebugString(), " must match k ",
                                                         S.k->DebugString()));
        }
        if (!have_dkv) {
          L.dtdkv = Dt(*g);
          have_dkv = true;
        } else if (Dt(*g) != L.dtdkv) {
          return absl::InvalidArgumentError(absl::StrCat(op, ": every dk/dv must have one dtype"));
        }
      }
    }
    descs.push_back(k::AttnSeqDesc{S.q_begin, S.q_len, S.kv_len, S.k->raw(), S.v->raw(),
                                   backward ? const_cast<void*>(S.dk->raw()) : nullptr,
                                   backward ? const_cast<void*>(S.dv->raw()) : nullptr, S.window});
  }
  const size_t desc_bytes = descs.size() * sizeof(k::AttnSeqDesc);
  const size_t row_off = (desc_bytes + 15) / 16 * 16;
  std::vector<unsigned char> buf(row_off + row_seq.size() * sizeof(int32_t));
  if (desc_bytes > 0) std::memcpy(buf.data(), descs.data(), desc_bytes);
  if (!row_seq.empty()) std::memcpy(buf.data() + row_off, row_seq.data(), row_seq.size() * sizeof(int32_t));
  ASSIGN_OR_RETURN(void* dev, uploads.Upload(buf.data(), buf.size()));
  L.seqs = static_cast<const k::AttnSeqDesc*>(dev);
  L.row_seq = reinterpret_cast<const int32_t*>(static_cast<unsigned char*>(dev) + row_off);
  return L;
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Whether the tiled kernels can run this call (see AttentionImpl): bf16 everywhere they read with 16-byte
// loads, a supported head_dim, and some sequence with a run of at least kTiledAttentionMinQueries queries
// (a batch of decode steps stays on the row-wise kernel, which reads each K/V row once per query anyway).
bool TiledAttentionFits(const Tensor& q, absl::Span<const AttentionSeq> seqs, const AttnLaunch& L, const Tensor* dout) {
  constexpr int kBf16 = static_cast<int>(DType::kBF16);
  if (Dt(q) != kBf16 || L.dtkv != kBf16 || !Aligned16(q.raw())) return false;
  if (dout != nullptr && (Dt(*dout) != kBf16 || !Aligned16(dout->raw()))) return false;
  if (!k::TiledAttentionSupports(static_cast<int>(q.dim(2)))) return false;
  int64_t longest = 0;
  for (const AttentionSeq& S : seqs) {
    if (!Aligned16(S.k->raw()) || !Aligned16(S.v->raw())) return false;
    if (S.kv_len > std::numeric_limits<int32_t>::max()) return false;  // AttnTile offsets are int32
    longest = std::max(longest, S.q_len);
  }
  return longest >= kTiledAttentionMinQueries;
}

struct AttnTiles {
  const k::AttnTile* q_tiles = nullptr;  // 64-query tiles of every sequence
  int64_t num_q = 0;
  const k::AttnTile* k_tiles = nullptr;  // 64-key tiles over [0, kv_len) of every sequence (backward only)
  int64_t num_k = 0;
  int64_t covered_rows = 0;  // query rows in some sequence
};

absl::StatusOr<AttnTiles> UploadAttentionTiles(absl::Span<const AttentionSeq> seqs, bool with_key_tiles,
                                               UploadRing& uploads) {
  std::vector<k::AttnSeqLengths> lengths;
  for (const AttentionSeq& S : seqs) lengths.push_back({S.q_len, S.kv_len});
  const k::AttnTilePlan plan = k::PlanAttentionTiles(lengths, with_key_tiles);
  AttnTiles T;
  T.covered_rows = plan.covered_rows;
  T.num_q = plan.num_q;
  T.num_k = static_cast<int64_t>(plan.tiles.size()) - plan.num_q;
  if (plan.tiles.empty()) return T;
  ASSIGN_OR_RETURN(void* dev, uploads.Upload(plan.tiles.data(), plan.tiles.size() * sizeof(k::AttnTile)));
  T.q_tiles = static_cast<const k::AttnTile*>(dev);
  T.k_tiles = T.q_tiles + T.num_q;
  return T;
}

}  // namespace

absl::Status CudaBackend::AttentionForward(const Tensor& q, absl::Span<const AttentionSeq> seqs, float scale,
                                           Tensor& out, Tensor* lse) {
  RETURN_IF_ERROR(CheckFloat(out, "AttentionForward", "out"));
  if (out.shape() != q.shape()) {
    return absl::InvalidArgumentError(absl::StrCat("AttentionForward: out ", out.DebugString(), " must match q ", q.DebugString()));
  }
  if (lse != nullptr) {
    RETURN_IF_ERROR(CheckF32(*lse, "AttentionForward", "lse"));
    RETURN_IF_ERROR(CheckNumel(*lse, q.rank() == 3 ? q.dim(0) * q.dim(1) : -1, "AttentionForward", "lse"));
  }
  if (Overlaps(q, out)) return absl::InvalidArgumentError("AttentionForward: out overlaps q");
  for (size_t i = 0; i < seqs.size(); ++i) {
    // SupportsPagedKv() is false: Model::Forward gives this backend contiguous copies of paged caches.
    if (seqs[i].block_tokens > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("AttentionForward: seqs[", i, "] is paged; the CUDA kernels read contiguous keys"));
    }
  }
  RETURN_IF_ERROR(Enter());
  if (seqs.empty() || q.numel() == 0) return absl::OkStatus();
  ASSIGN_OR_RETURN(AttnLaunch L, PrepareAttention("AttentionForward", q, seqs, false, *uploads_));
  if (attention_impl_ == AttentionImpl::kTiled && tiled_attention_available_ &&
      TiledAttentionFits(q, seqs, L, nullptr)) {
    ASSIGN_OR_RETURN(AttnTiles T, UploadAttentionTiles(seqs, false, *uploads_));
    return CudaStatus(k::TiledAttentionForward(q.raw(), L.seqs, T.q_tiles, T.num_q, static_cast<int>(q.dim(1)),
                                               L.kv_heads, static_cast<int>(q.dim(2)), scale, out.raw(), Dt(out),
                                               lse == nullptr ? nullptr : lse->data<float>(), stream()),
                      "AttentionForward (tiled)");
  }
  return CudaStatus(k::AttentionForward(q.raw(), Dt(q), L.seqs, L.row_seq, L.dtkv, q.dim(0), static_cast<int>(q.dim(1)),
                                        L.kv_heads, static_cast<int>(q.dim(2)), scale, out.raw(), Dt(out),
                                        lse == nullptr ? nullptr : lse->data<float>(), stream()),
                    "AttentionForward");
}

absl::Status CudaBackend::AttentionBackward(const Tensor& q, absl::Span<const AttentionSeq> seqs, float scale,
                                            const Tensor& out, const Tensor& lse, const Tensor& dout, Tensor& dq) {
  RETURN_IF_ERROR(CheckFloat(out, "AttentionBackward", "out"));
  RETURN_IF_ERROR(CheckF32(lse, "AttentionBackward", "lse"));
  RETURN_IF_ERROR(CheckFloat(dout, "AttentionBackward", "dout"));
  RETURN_IF_ERROR(CheckFloat(dq, "AttentionBackward", "dq"));
  if (out.shape() != q.shape() || dout.shape() != q.shape() || dq.shape() != q.shape()) {
    return absl::InvalidArgumentError(absl::StrCat("AttentionBackward: out/dout/dq must match q ", q.DebugString(), ", got ",
                                                   out.DebugString(), ", ", dout.DebugString(), ", ", dq.DebugString()));
  }
  RETURN_IF_ERROR(CheckNumel(lse, q.rank() == 3 ? q.dim(0) * q.dim(1) : -1, "AttentionBackward", "lse"));
  for (const Tensor* t : {&q, &out, &lse, &dout}) {
    if (Overlaps(*t, dq)) return absl::InvalidArgumentError("AttentionBackward: dq overlaps an input");
  }
  RETURN_IF_ERROR(Enter());
  if (q.numel() == 0) return absl::OkStatus();
  if (seqs.empty()) return Fill(dq, 0.0f);  // every row is outside every sequence
  ASSIGN_OR_RETURN(AttnLaunch L, PrepareAttention("AttentionBackward", q, seqs, true, *uploads_));
  if (attention_impl_ == AttentionImpl::kTiled && tiled_attention_available_ &&
      TiledAttentionFits(q, seqs, L, &dout)) {
    const int64_t nq = q.dim(0), heads = q.dim(1);
    ASSIGN_OR_RETURN(AttnTiles T, UploadAttentionTiles(seqs, true, *uploads_));
    if (T.covered_rows < nq) RETURN_IF_ERROR(Fill(dq, 0.0f));  // the dq kernel writes covered rows only
    ASSIGN_OR_RETURN(Tensor dvec, Alloc({nq, heads}, DType::kF32));  // freed in stream order
    RETURN_IF_ERROR(CudaStatus(k::AttentionRowDots(out.raw(), Dt(out), dout.raw(), Dt(dout), L.row_seq, nq,
                                                   static_cast<int>(heads), static_cast<int>(q.dim(2)),
                                                   dvec.data<float>(), stream()),
                               "AttentionBackward (row dots)"));
    return CudaStatus(k::TiledAttentionBackward(q.raw(), L.seqs, T.q_tiles, T.num_q, T.k_tiles, T.num_k,
                                                static_cast<int>(heads), L.kv_heads, static_cast<int>(q.dim(2)),
                                                scale, lse.data<float>(), dvec.data<float>(), dout.raw(), L.dtdkv,
                                                dq.raw(), Dt(dq), stream()),
                      "AttentionBackward (tiled)");
  }
  return CudaStatus(k::AttentionBackward(q.raw(), Dt(q), L.seqs, L.row_seq, L.dtkv, L.dtdkv, q.dim(0),
                                         static_cast<int>(q.dim(1)), L.kv_heads, static_cast<int>(q.dim(2)), scale,
                                         out.raw(), Dt(out), lse.data<float>(), dout.raw(), Dt(dout), dq.raw(), Dt(dq),
                                         stream()),
                    "AttentionBackward");
}

// ---- Router -----------------------------------------------------------------------------------------

absl::Status CudaBackend::RouterForward(const Tensor& logits, int topk, bool normalize, Tensor& probs,
                                        Tensor& topk_idx, Tensor& topk_w) {
  RETURN_IF_ERROR(CheckFloat(logits, "RouterForward", "logits"));
  RETURN_IF_ERROR(CheckFloat(probs, "RouterForward", "probs"));
  RETURN_IF_ERROR(CheckI32(topk_idx, "RouterForward", "topk_idx"));
  RETURN_IF_ERROR(CheckF32(topk_w, "RouterForward", "topk_w"));
  const Tensor l2 = logits.Flat2D();
  const int64_t n = l2.dim(0), e = l2.dim(1);
  if (topk < 1 || topk > e) {
    return absl::InvalidArgumentError(absl::StrCat("RouterForward: k ", topk, " must be in [1, E = ", e, "]"));
  }
  RETURN_IF_ERROR(Check2D(probs, n, e, "RouterForward", "probs"));
  RETURN_IF_ERROR(Check2D(topk_idx, n, topk, "RouterForward", "topk_idx"));
  RETURN_IF_ERROR(Check2D(topk_w, n, topk, "RouterForward", "topk_w"));
  RETURN_IF_ERROR(Enter());
  return CudaStatus(k::RouterForward(logits.raw(), Dt(logits), n, static_cast<int>(e), topk, normalize, probs.raw(),
                                     Dt(probs), topk_idx.data<int32_t>(), topk_w.data<float>(), stream()),
                    "RouterForward");
}

absl::Status CudaBackend::RouterBackward(const Tensor& probs, const Tensor& topk_idx, const Tensor& topk_w,
                                         bool normalize, const Tensor& dtopk_w, Tensor& dlogits) {
  RETURN_IF_ERROR(CheckFloat(probs, "RouterBackward", "probs"));
  RETURN_IF_ERROR(CheckI32(topk_idx, "RouterBackward", "topk_idx"));
  RETURN_IF_ERROR(CheckF32(topk_w, "RouterBackward", "topk_w"));
  RETURN_IF_ERROR(CheckF32(dtopk_w, "RouterBackward", "dtopk_w"));
  RETURN_IF_ERROR(CheckFloat(dlogits, "RouterBackward", "dlogits"));
  const Tensor p2 = probs.Flat2D(), i2 = topk_idx.Flat2D();
  const int64_t n = p2.dim(0), e = p2.dim(1), topk = i2.dim(1);
  RETURN_IF_ERROR(Check2D(topk_idx, n, -1, "RouterBackward", "topk_idx"));
  if (topk < 1 || topk > e) {
    return absl::InvalidArgumentError(absl::StrCat("RouterBackward: k ", topk, " must be in [1, E = ", e, "]"));
  }
  RETURN_IF_ERROR(Check2D(topk_w, n, topk, "RouterBackward", "topk_w"));
  RETURN_IF_ERROR(Check2D(dtopk_w, n, topk, "RouterBackward", "dtopk_w"));
  RETURN_IF_ERROR(Check2D(dlogits, n, e, "RouterBackward", "dlogits"));
  RETURN_IF_ERROR(Enter());
  if (Overlaps(probs, dlogits)) return absl::InvalidArgumentError("RouterBackward: dlogits overlaps probs");
  RETURN_IF_ERROR(CheckIndexRange(topk_idx, 0, static_cast<int32_t>(e), "RouterBackward", "topk_idx"));
  return CudaStatus(k::RouterBackward(probs.raw(), Dt(probs), topk_idx.data<int32_t>(), topk_w.data<float>(), normalize,
                                      dtopk_w.data<float>(), dlogits.raw(), Dt(dlogits), n, static_cast<int>(e),
                                      static_cast<int>(topk), stream()),
                    "RouterBackward");
}

// ---- SwiGLU -----------------------------------------------------------------------------------------

absl::Status CudaBackend::SwiGluForward(const Tensor& gate, const Tensor& up, Tensor& out) {
  RETURN_IF_ERROR(CheckFloat(gate, "SwiGluForward", "gate"));
  RETURN_IF_ERROR(CheckFloat(up, "SwiGluForward", "up"));
  RETURN_IF_ERROR(CheckFloat(out, "SwiGluForward", "out"));
  RETURN_IF_ERROR(CheckNumel(up, gate.numel(), "SwiGluForward", "up"));
  RETURN_IF_ERROR(CheckNumel(out, gate.numel(), "SwiGluForward", "out"));
  RETURN_IF_ERROR(Enter());
  return CudaStatus(k::SwiGluForward(gate.raw(), Dt(gate), up.raw(), Dt(up), out.raw(), Dt(out), gate.numel(), stream()),
                    "SwiGluForward");
}

absl::Status CudaBackend::SwiGluBackward(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate,
                                         Tensor& dup) {
  RETURN_IF_ERROR(CheckFloat(gate, "SwiGluBackward", "gate"));
  RETURN_IF_ERROR(CheckFloat(up, "SwiGluBackward", "up"));
  RETURN_IF_ERROR(CheckFloat(dout, "SwiGluBackward", "dout"));
  RETURN_IF_ERROR(CheckFloat(dgate, "SwiGluBackward", "dgate"));
  RETURN_IF_ERROR(CheckFloat(dup, "SwiGluBackward", "dup"));
  const int64_t n = gate.numel();
  RETURN_IF_ERROR(CheckNumel(up, n, "SwiGluBackward", "up"));
  RETURN_IF_ERROR(CheckNumel(dout, n, "SwiGluBackward", "dout"));
  RETURN_IF_ERROR(CheckNumel(dgate, n, "SwiGluBackward", "dgate"));
  RETURN_IF_ERROR(CheckNumel(dup, n, "SwiGluBackward", "dup"));
  RETURN_IF_ERROR(Enter());
  return CudaStatus(k::SwiGluBackward(gate.raw(), Dt(gate), up.raw(), Dt(up), dout.raw(), Dt(dout), dgate.raw(),
                                      Dt(dgate), dup.raw(), Dt(dup), n, stream()),
                    "SwiGluBackward");
}

// ---- Vocabulary -------------------------------------------------------------------------------------

absl::Status CudaBackend::LogSoftmax(const Tensor& logits, Tensor& out) {
  RETURN_IF_ERROR(CheckFloat(logits, "LogSoftmax", "logits"));
  RETURN_IF_ERROR(CheckFloat(out, "LogSoftmax", "out"));
  const Tensor l2 = logits.Flat2D();
  RETURN_IF_ERROR(Check2D(out, l2.dim(0), l2.dim(1), "LogSoftmax", "out"));
  RETURN_IF_ERROR(Enter());
  return CudaStatus(k::LogSoftmax(logits.raw(), Dt(logits), out.raw(), Dt(out), l2.dim(0), l2.dim(1), stream()),
                    "LogSoftmax");
}

absl::Status CudaBackend::CrossEntropyForward(const Tensor& logits, const Tensor& targets, Tensor& loss, Tensor* lse) {
  RETURN_IF_ERROR(CheckFloat(logits, "CrossEntropyForward", "logits"));
  RETURN_IF_ERROR(CheckI32(targets, "CrossEntropyForward", "targets"));
  RETURN_IF_ERROR(CheckFloat(loss, "CrossEntropyForward", "loss"));
  const Tensor l2 = logits.Flat2D();
  const int64_t n = l2.dim(0), v = l2.dim(1);
  RETURN_IF_ERROR(CheckNumel(targets, n, "CrossEntropyForward", "targets"));
  RETURN_IF_ERROR(CheckNumel(loss, n, "CrossEntropyForward", "loss"));
  if (lse != nullptr) {
    RETURN_IF_ERROR(CheckF32(*lse, "CrossEntropyForward", "lse"));
    RETURN_IF_ERROR(CheckNumel(*lse, n, "CrossEntropyForward", "lse"));
  }
  RETURN_IF_ERROR(Enter());
  RETURN_IF_ERROR(CheckIndexRange(targets, INT32_MIN, static_cast<int32_t>(std::min<int64_t>(v, INT32_MAX)), "CrossEntropyForward", "targets"));
  return CudaStatus(k::CrossEntropyForward(logits.raw(), Dt(logits), targets.data<int32_t>(), loss.raw(), Dt(loss),
                                           lse == nullptr ? nullptr : lse->data<float>(), n, v, err_word_, stream()),
                    "CrossEntropyForward");
}

absl::Status CudaBackend::CrossEntropyBackward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                                               const Tensor& dloss, Tensor& dlogits) {
  RETURN_IF_ERROR(CheckFloat(logits, "CrossEntropyBackward", "logits"));
  RETURN_IF_ERROR(CheckI32(targets, "CrossEntropyBackward", "targets"));
  RETURN_IF_ERROR(CheckF32(lse, "CrossEntropyBackward", "lse"));
  RETURN_IF_ERROR(CheckFloat(dloss, "CrossEntropyBackward", "dloss"));
  RETURN_IF_ERROR(CheckFloat(dlogits, "CrossEntropyBackward", "dlogits"));
  const Tensor l2 = logits.Flat2D();
  const int64_t n = l2.dim(0), v = l2.dim(1);
  RETURN_IF_ERROR(CheckNumel(targets, n, "CrossEntropyBackward", "targets"));
  RETURN_IF_ERROR(CheckNumel(lse, n, "CrossEntropyBackward", "lse"));
  RETURN_IF_ERROR(CheckNumel(dloss, n, "CrossEntropyBackward", "dloss"));
  RETURN_IF_ERROR(Check2D(dlogits, n, v, "CrossEntropyBackward", "dlogits"));
  RETURN_IF_ERROR(Enter());
  RETURN_IF_ERROR(CheckIndexRange(targets, INT32_MIN, static_cast<int32_t>(std::min<int64_t>(v, INT32_MAX)), "CrossEntropyBackward", "targets"));
  return CudaStatus(k::CrossEntropyBackward(logits.raw(), Dt(logits), targets.data<int32_t>(), lse.data<float>(),
                                            dloss.raw(), Dt(dloss), dlogits.raw(), Dt(dlogits), n, v, stream()),
                    "CrossEntropyBackward");
}

// ---- Optimizer --------------------------------------------------------------------------------------

absl::Status CudaBackend::AdamW(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWParams& p) {
  RETURN_IF_ERROR(CheckFloat(param, "AdamW", "param"));
  RETURN_IF_ERROR(CheckFloat(grad, "AdamW", "grad"));
  RETURN_IF_ERROR(CheckF32(m, "AdamW", "m"));
  RETURN_IF_ERROR(CheckF32(v, "AdamW", "v"));
  const int64_t n = param.numel();
  RETURN_IF_ERROR(CheckNumel(grad, n, "AdamW", "grad"));
  RETURN_IF_ERROR(CheckNumel(m, n, "AdamW", "m"));
  RETURN_IF_ERROR(CheckNumel(v, n, "AdamW", "v"));
  if (p.step < 1) return absl::InvalidArgumentError(absl::StrCat("AdamW: step ", p.step, " must be >= 1"));
  const double bc1 = 1.0 - std::pow(static_cast<double>(p.beta1), static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(p.beta2), static_cast<double>(p.step));
  RETURN_IF_ERROR(Enter());
  return CudaStatus(k::AdamW(param.raw(), Dt(param), grad.raw(), Dt(grad), m.data<float>(), v.data<float>(), n, p.lr,
                             p.beta1, p.beta2, p.eps, p.weight_decay, static_cast<float>(bc1), static_cast<float>(bc2),
                             stream()),
                    "AdamW");
}

// One launch for the whole step (per 65535 entries). Entries whose written tensors overlap another
// entry's (or a grad) would race inside the launch, so then they run one by one (the interface's rule).
absl::Status CudaBackend::AdamWMany(absl::Span<const AdamWTensor> entries, const AdamWParams& p) {
  std::vector<cuda_kernels::AdamWDesc> desc;
  desc.reserve(entries.size());
  std::vector<ByteRange> written, read;
  int64_t max_n = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const AdamWTensor& e = entries[i];
    const std::string op = absl::StrCat("AdamWMany: entries[", i, "]");
    if (e.param == nullptr || e.grad == nullptr || e.m == nullptr || e.v == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(op, " has a null tensor"));
    }
    RETURN_IF_ERROR(CheckFloat(*e.param, op, "param"));
    RETURN_IF_ERROR(CheckFloat(*e.grad, op, "grad"));
    RETURN_IF_ERROR(CheckF32(*e.m, op, "m"));
    RETURN_IF_ERROR(CheckF32(*e.v, op, "v"));
    const int64_t n = e.param->numel();
    RETURN_IF_ERROR(CheckNumel(*e.grad, n, op, "grad"));
    RETURN_IF_ERROR(CheckNumel(*e.m, n, op, "m"));
    RETURN_IF_ERROR(CheckNumel(*e.v, n, op, "v"));
    if (e.narrow != nullptr) {
      RETURN_IF_ERROR(CheckFloat(*e.narrow, op, "narrow"));
      RETURN_IF_ERROR(CheckNumel(*e.narrow, n, op, "narrow"));
    }
    if (n == 0) continue;
    desc.push_back({e.param->raw(), e.grad->raw(), e.m->data<float>(), e.v->data<float>(),
                    e.narrow != nullptr ? e.narrow->raw() : nullptr, n, e.weight_decay, Dt(*e.param), Dt(*e.grad),
                    e.narrow != nullptr ? Dt(*e.narrow) : 0});
    for (const Tensor* t : {e.param, e.m, e.v, e.narrow}) {
      if (t != nullptr) written.push_back(RangeOf(*t));
    }
    read.push_back(RangeOf(*e.grad));
    max_n = std::max(max_n, n);
  }
  if (p.step < 1) return absl::InvalidArgumentError(absl::StrCat("AdamWMany: step ", p.step, " must be >= 1"));
  if (AnyOverlap(std::move(written), read)) return Backend::AdamWMany(entries, p);
  const double bc1 = 1.0 - std::pow(static_cast<double>(p.beta1), static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(p.beta2), static_cast<double>(p.step));
  RETURN_IF_ERROR(Enter());
  constexpr size_t kMaxPerLaunch = 65535;  // gridDim.y
  for (size_t begin = 0; begin < desc.size(); begin += kMaxPerLaunch) {
    const size_t count = std::min(kMaxPerLaunch, desc.size() - begin);
    ASSIGN_OR_RETURN(void* dev, uploads_->Upload(desc.data() + begin, count * sizeof(cuda_kernels::AdamWDesc)));
    RETURN_IF_ERROR(CudaStatus(k::AdamWMany(static_cast<const cuda_kernels::AdamWDesc*>(dev), static_cast<int>(count),
                                            max_n, p.lr, p.beta1, p.beta2, p.eps, static_cast<float>(bc1),
                                            static_cast<float>(bc2), stream()),
                               "AdamWMany"));
  }
  return absl::OkStatus();
}

}  // namespace tessera::cuda
