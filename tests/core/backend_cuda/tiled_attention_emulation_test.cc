// The tiled attention kernels (core/backend/cuda/cuda_attention_tiled_kernels.cuh), their own source run
// on the host through emulation/ (lanes as threads, a scalar WMMA), against the CPU backend: forward
// (out, lse), and backward (dq, and dk/dv accumulating into gradients two sequences share) for head_dim
// 64 and 128, GQA, a 150-query sequence (two full tiles and a partial one), a prefill continuing a
// cache prefix (its last key tile holds a single key), a decode step, and idle query rows. This runs on
// every machine, so the kernels' tiling, masking and indexing are checked before they reach a GPU;
// core_backend_cuda_test checks the compiled kernels on a GPU.
// Tolerances: the kernels round probabilities (and ds) to bf16 for the second product, as every
// FlashAttention does: relative L2 5e-3 (out) and 2e-2 (gradients) against the fp32 CPU backend on the
// same bf16-representable inputs; lse (fp32 throughout) within 1e-4 per element, so one key missing
// from one row's softmax fails.
#include "tests/core/backend_cuda/emulation/cuda_emulation.h"  // first: the kernels' CUDA built-ins

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/backend/backend.h"
#include "core/backend/cuda/cuda_attention_tiled_kernels.cuh"
#include "core/backend/cuda/cuda_attention_tiles.h"
#include "gtest/gtest.h"
#include "tests/core/backend_cuda/emulation/emulation_test_util.h"

namespace tessera::testing {
namespace {

namespace ta = cuda_kernels::tiled_attention;
using cuda_kernels::AttnSeqDesc;
using cuda_kernels::AttnTile;
using cuda_kernels::kF32;

struct SeqSpec {
  int64_t q_begin, q_len, kv_len;
  int store;  // which K/V (and dK/dV) tensor
  int64_t window = 0;
};

double RelL2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (got[i] - want[i]) * double(got[i] - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}


// peaked: the 150-query sequence's queries are their own keys / 4, so each puts most of its weight on
// its own position (p ~ 0.75 at head_dim 64, ~0.97 at 128). Then every diagonal (query, key) pair carries
// most of a row's weight, and a tile schedule that drops one (an off-by-one in the first query tile of a
// key tile, a strict mask) fails.
// window > 0: every sequence gets that sliding window (AttentionSeq::window), so the forward/dq blocks
// start past key tile 0 and the dk/dv blocks stop before the last query tile.
template <int D>
void CheckTiledAgainstCpu(bool peaked, int64_t window = 0) {
  SCOPED_TRACE("head_dim " + std::to_string(D) + (peaked ? " peaked" : " random") + " window " +
               std::to_string(window));
  const int heads = 4, kvh = 2;
  const int64_t nq = 190;
  // Rows 150, 151 idle. Sequence 1's last query sees 129 = 2 * 64 + 1 keys: its last key tile holds one key.
  const std::vector<int64_t> store_rows = {150, 130};
  const std::vector<SeqSpec> seqs = {{0, 150, 150, 0, window}, {152, 37, 129, 1, window}, {189, 1, 20, 1, window}};
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  std::mt19937 rng(7 + D);
  std::vector<float> q = cuda_emulation::RandomBf16Exact(nq * heads * D, rng, -3, 3);
  const std::vector<float> dout = cuda_emulation::RandomBf16Exact(nq * heads * D, rng, -1, 1);
  std::vector<std::vector<float>> k, v, dk0, dv0;
  for (int64_t rows : store_rows) {
    k.push_back(cuda_emulation::RandomBf16Exact(rows * kvh * D, rng, -3, 3));
    v.push_back(cuda_emulation::RandomBf16Exact(rows * kvh * D, rng, -1, 1));
    dk0.push_back(cuda_emulation::RandomBf16Exact(rows * kvh * D, rng, -1, 1));  // gradients accumulate onto these
    dv0.push_back(cuda_emulation::RandomBf16Exact(rows * kvh * D, rng, -1, 1));
  }
  if (peaked) {  // sequence 0: q[i, h] = k[i, h / (heads / kvh)] / 4 (exact in bf16)
    for (int64_t i = 0; i < 150; ++i) {
      for (int h = 0; h < heads; ++h) {
        for (int c = 0; c < D; ++c) q[(i * heads + h) * D + c] = 0.25f * k[0][(i * kvh + h / (heads / kvh)) * D + c];
      }
    }
  }

  // Reference: the CPU backend in fp32 on the same values.
  auto cpu = MakeBackend("cpu");
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  Backend& be = **cpu;
  auto up = [&](const std::vector<float>& x, std::vector<int64_t> shape) { return *be.FromHost(x, shape); };
  Tensor tq = up(q, {nq, heads, D}), tdout = up(dout, {nq, heads, D});
  std::vector<Tensor> tk, tv, tdk, tdv;
  for (size_t s = 0; s < store_rows.size(); ++s) {
    tk.push_back(up(k[s], {store_rows[s], kvh, D}));
    tv.push_back(up(v[s], {store_rows[s], kvh, D}));
    tdk.push_back(up(dk0[s], {store_rows[s], kvh, D}));
    tdv.push_back(up(dv0[s], {store_rows[s], kvh, D}));
  }
  std::vector<AttentionSeq> ref_seqs;
  for (const SeqSpec& s : seqs) {
    ref_seqs.push_back({s.q_begin, s.q_len, s.kv_len, &tk[s.store], &tv[s.store], &tdk[s.store], &tdv[s.store],
                        s.window});
  }
  Tensor ref_out = *be.Zeros({nq, heads, D}), ref_lse = *be.Zeros({nq, heads}), ref_dq = *be.Zeros({nq, heads, D});
  ASSERT_TRUE(be.AttentionForward(tq, ref_seqs, scale, ref_out, &ref_lse).ok());
  ASSERT_TRUE(be.AttentionBackward(tq, ref_seqs, scale, ref_out, ref_lse, tdout, ref_dq).ok());

  // The kernels, on host memory: bf16 q/k/v/dout, fp32 out/lse/dq/dk/dv.
  const std::vector<__nv_bfloat16> qb = cuda_emulation::ToBf16(q), doutb = cuda_emulation::ToBf16(dout);
  std::vector<std::vector<__nv_bfloat16>> kb, vb;
  for (size_t s = 0; s < store_rows.size(); ++s) {
    kb.push_back(cuda_emulation::ToBf16(k[s]));
    vb.push_back(cuda_emulation::ToBf16(v[s]));
  }
  std::vector<std::vector<float>> dk = dk0, dv = dv0;
  std::vector<AttnSeqDesc> descs;
  for (const SeqSpec& s : seqs) {
    descs.push_back({s.q_begin, s.q_len, s.kv_len, kb[s.store].data(), vb[s.store].data(), dk[s.store].data(),
                     dv[s.store].data(), s.window});
  }
  const float kSentinel = 1234.5f;  // rows in no sequence must keep it (the host zeroes dq there)
  std::vector<float> out(nq * heads * D, kSentinel), lse(nq * heads, kSentinel), dq(nq * heads * D, kSentinel);
  // The tiles as the backend plans them (cuda_attention_tiles.h): query tiles, then key tiles.
  std::vector<cuda_kernels::AttnSeqLengths> lengths;
  for (const SeqSpec& s : seqs) lengths.push_back({s.q_len, s.kv_len});
  const cuda_kernels::AttnTilePlan plan = cuda_kernels::PlanAttentionTiles(lengths, true);
  const std::vector<AttnTile> q_tiles(plan.tiles.begin(), plan.tiles.begin() + plan.num_q);
  const std::vector<AttnTile> k_tiles(plan.tiles.begin() + plan.num_q, plan.tiles.end());
  ASSERT_EQ(plan.covered_rows, 188);

  cuda_emulation::Launch(dim3(q_tiles.size(), heads), ta::kThreads, [&] {
    ta::TiledForwardKernel<D>(qb.data(), descs.data(), q_tiles.data(), heads, kvh, scale, out.data(), kF32,
                                  lse.data());
  });
  // The backward reads the CPU's out/lse (as in core_backend_cuda_test), so only the backward is compared.
  const std::vector<float> cpu_out = cuda_emulation::CopyToHost<float>(be, ref_out), cpu_lse = cuda_emulation::CopyToHost<float>(be, ref_lse);
  // D = dout . out per (row, head), by the backend's RowDotsKernel (rows in no sequence: 0).
  std::vector<int32_t> row_seq(nq, -1);
  for (size_t s = 0; s < seqs.size(); ++s) {
    for (int64_t i = seqs[s].q_begin; i < seqs[s].q_begin + seqs[s].q_len; ++i) row_seq[i] = static_cast<int32_t>(s);
  }
  std::vector<float> dvec(nq * heads, -1.0f);
  cuda_emulation::Launch(dim3(1), 256, [&] {  // one block: its warps stride over every (row, head)
    ta::RowDotsKernel(cpu_out.data(), kF32, dout.data(), kF32, row_seq.data(), nq, heads, D, dvec.data());
  });
  cuda_emulation::Launch(dim3(k_tiles.size(), kvh), ta::kThreads, [&] {
    ta::TiledBackwardKvKernel<D>(qb.data(), descs.data(), k_tiles.data(), heads, kvh, scale, cpu_lse.data(),
                                 dvec.data(), doutb.data(), kF32);
  });
  cuda_emulation::Launch(dim3(q_tiles.size(), heads), ta::kThreads, [&] {
    ta::TiledBackwardQKernel<D>(qb.data(), descs.data(), q_tiles.data(), heads, kvh, scale, cpu_lse.data(),
                                dvec.data(), doutb.data(), dq.data(), kF32);
  });

  // Rows of sequences against the CPU; idle rows untouched.
  auto covered = [&](const std::vector<float>& x, int64_t width, bool want_idle) {
    std::vector<float> sel;
    for (int64_t i = 0; i < nq; ++i) {
      const bool idle = i == 150 || i == 151;
      if (idle == want_idle) sel.insert(sel.end(), x.begin() + i * width, x.begin() + (i + 1) * width);
    }
    return sel;
  };
  EXPECT_LE(RelL2(covered(out, heads * D, false), covered(cpu_out, heads * D, false)), 5e-3) << "out";
  const std::vector<float> got_lse = covered(lse, heads, false), want_lse = covered(cpu_lse, heads, false);
  for (size_t i = 0; i < got_lse.size(); ++i) {
    ASSERT_NEAR(got_lse[i], want_lse[i], 1e-4f) << "lse of covered row " << i / heads;
  }
  const std::vector<float> cpu_dq = cuda_emulation::CopyToHost<float>(be, ref_dq);
  EXPECT_LE(RelL2(covered(dq, heads * D, false), covered(cpu_dq, heads * D, false)), 2e-2) << "dq";
  for (float x : covered(out, heads * D, true)) ASSERT_EQ(x, kSentinel) << "out of an idle row was written";
  for (float x : covered(dq, heads * D, true)) ASSERT_EQ(x, kSentinel) << "dq of an idle row was written";
  for (size_t s = 0; s < store_rows.size(); ++s) {
    const std::string tag = " of store " + std::to_string(s);
    // Gradients only (the accumulated-onto values cancel), relative to the gradient's own size.
    std::vector<float> gk = cuda_emulation::CopyToHost<float>(be, tdk[s]), gv = cuda_emulation::CopyToHost<float>(be, tdv[s]), got_k = dk[s], got_v = dv[s];
    for (size_t i = 0; i < gk.size(); ++i) {
      gk[i] -= dk0[s][i];
      gv[i] -= dv0[s][i];
      got_k[i] -= dk0[s][i];
      got_v[i] -= dv0[s][i];
    }
    EXPECT_LE(RelL2(got_k, gk), 2e-2) << "dk" << tag;
    EXPECT_LE(RelL2(got_v, gv), 2e-2) << "dv" << tag;
  }
}

TEST(TiledAttentionEmulation, HeadDim64MatchesCpuBackend) {
  CheckTiledAgainstCpu<64>(false);
  CheckTiledAgainstCpu<64>(true);
}
TEST(TiledAttentionEmulation, HeadDim128MatchesCpuBackend) {
  CheckTiledAgainstCpu<128>(false);
  CheckTiledAgainstCpu<128>(true);
}
// Windows of 5 (inside one tile), 70 (spanning two) and 64 (a tile exactly).
TEST(TiledAttentionEmulation, SlidingWindowMatchesCpuBackend) {
  CheckTiledAgainstCpu<64>(true, 5);
  CheckTiledAgainstCpu<64>(false, 70);
  CheckTiledAgainstCpu<128>(true, 64);
}

}  // namespace
}  // namespace tessera::testing
