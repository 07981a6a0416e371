// The device-side MoE routing kernels (core/backend/cuda/cuda_moe_routing_kernels.cuh), their own source
// run on the host through emulation/, against the CPU backend's reference implementations:
//  - MoeKeysKernel + a stable sort (CUB's radix sort on the GPU, std::stable_sort here) + MoeScatterKernel
//    give exactly MoeSortAssignments' token_idx, gate_w and offsets, and out-of-range table values set
//    the error bit and land after every group;
//  - GroupedGemvKernel gives GroupedMatmulByOffsets' y (f32 and bf16, 16-byte and scalar loads) for
//    groups of 0..17 rows (every chunk body: 1, 2, 3->4, 4, 5..8, and more than 8 rows), an output width
//    that leaves a partial warp of features, rows outside every group untouched, and bad offsets
//    reported through the error bit.
// core_backend_cuda_test checks the compiled kernels on a GPU.
#include "tests/core/backend_cuda/emulation/cuda_emulation.h"  // first: the kernels' CUDA built-ins

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/backend/backend.h"
#include "core/backend/cuda/cuda_moe_routing_kernels.cuh"
#include "gtest/gtest.h"
#include "tests/core/backend_cuda/emulation/emulation_test_util.h"

namespace tessera::testing {
namespace {

namespace mr = cuda_kernels::moe_routing;
using cuda_kernels::kBF16;
using cuda_kernels::kErrMoeOffsets;
using cuda_kernels::kErrMoeSortValue;
using cuda_kernels::kF32;

// Runs the keys kernel, a stable sort by key and the scatter kernel (the GPU path of MoeSortAssignments).
struct SortResult {
  std::vector<int32_t> token_idx, offsets;
  std::vector<float> gate_w;
  int err = 0;
};
SortResult EmulatedSort(const std::vector<int32_t>& topk_idx, const std::vector<float>& topk_w,
                        const std::vector<int32_t>& token_rank, const std::vector<int32_t>& table, int64_t n,
                        int64_t k, int64_t ranks, int64_t experts, uint32_t sets) {
  const int64_t m = n * k;
  std::vector<uint32_t> keys(m);
  std::vector<int32_t> vals(m);
  SortResult r;
  cuda_emulation::Launch(dim3(2), 64, [&] {  // fewer threads than assignments: the grid-stride loop runs
    mr::MoeKeysKernel(topk_idx.data(), token_rank.data(), table.data(), m, k, ranks, experts, sets, keys.data(),
                      vals.data(), &r.err);
  });
  std::vector<int64_t> order(m);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return keys[a] < keys[b]; });
  std::vector<uint32_t> sorted_keys(m);
  std::vector<int32_t> sorted_vals(m);
  for (int64_t i = 0; i < m; ++i) {
    sorted_keys[i] = keys[order[i]];
    sorted_vals[i] = vals[order[i]];
  }
  r.token_idx.assign(m, -7);
  r.gate_w.assign(m, -7.0f);
  r.offsets.assign(sets + 1, -7);
  cuda_emulation::Launch(dim3(1), 32, [&] {
    mr::MoeScatterKernel(sorted_keys.data(), sorted_vals.data(), topk_w.data(), m, k, sets, r.token_idx.data(),
                         r.gate_w.data(), r.offsets.data());
  });
  return r;
}

TEST(MoeRoutingEmulation, SortMatchesCpuBackend) {
  auto cpu = MakeBackend("cpu");
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  Backend& be = **cpu;
  const int64_t n = 37, k = 8, ranks = 5, experts = 16;
  const uint32_t sets = 23;
  std::mt19937 rng(3);
  std::vector<int32_t> topk_idx(n * k), token_rank(n), table(ranks * experts);
  std::vector<float> topk_w(n * k);
  for (int64_t t = 0; t < n; ++t) {  // k distinct experts per token, as a router picks them
    std::vector<int32_t> e(experts);
    std::iota(e.begin(), e.end(), 0);
    std::shuffle(e.begin(), e.end(), rng);
    std::copy(e.begin(), e.begin() + k, topk_idx.begin() + t * k);
    token_rank[t] = static_cast<int32_t>(rng() % ranks);
  }
  for (int32_t& s : table) s = static_cast<int32_t>(rng() % sets);
  for (float& w : topk_w) w = std::uniform_real_distribution<float>(0, 1)(rng);

  auto i32 = [&](const std::vector<int32_t>& v, std::vector<int64_t> shape) {
    Tensor t = *be.Alloc(shape, DType::kI32);
    EXPECT_TRUE(be.CopyFromHost(v.data(), v.size() * 4, t).ok());
    return t;
  };
  Tensor ti = i32(topk_idx, {n, k}), tr = i32(token_rank, {n}), tt = i32(table, {ranks, experts});
  Tensor tw = *be.FromHost(topk_w, {n, k});
  Tensor token_idx = *be.Alloc({n * k}, DType::kI32), gate_w = *be.Alloc({n * k}, DType::kF32);
  Tensor offsets = *be.Alloc({int64_t{sets} + 1}, DType::kI32);
  ASSERT_TRUE(be.MoeSortAssignments(ti, tw, tr, tt, token_idx, gate_w, offsets).ok());

  SortResult got = EmulatedSort(topk_idx, topk_w, token_rank, table, n, k, ranks, experts, sets);
  EXPECT_EQ(got.err, 0);
  EXPECT_EQ(got.token_idx, cuda_emulation::CopyToHost<int32_t>(be, token_idx));
  EXPECT_EQ(got.gate_w, cuda_emulation::CopyToHost<float>(be, gate_w));
  EXPECT_EQ(got.offsets, cuda_emulation::CopyToHost<int32_t>(be, offsets));

  // A table value out of range: the error bit, and every assignment that uses that (rank, expert) cell
  // after every group (offsets[W] counts the others).
  std::vector<int32_t> bad_table = table;
  const int64_t bad_cell = token_rank[4] * experts + topk_idx[4 * k + 2];
  bad_table[bad_cell] = static_cast<int32_t>(sets);
  int64_t users = 0;
  for (int64_t a = 0; a < n * k; ++a) users += token_rank[a / k] * experts + topk_idx[a] == bad_cell;
  ASSERT_GE(users, 1);
  SortResult bad = EmulatedSort(topk_idx, topk_w, token_rank, bad_table, n, k, ranks, experts, sets);
  EXPECT_EQ(bad.err, kErrMoeSortValue);
  EXPECT_EQ(bad.offsets.back(), n * k - users);

  // No assignments: offsets all zero.
  SortResult none = EmulatedSort({}, {}, {}, table, 0, k, ranks, experts, sets);
  EXPECT_EQ(none.offsets, std::vector<int32_t>(sets + 1, 0));
}

template <typename T>
void CheckGemv(DType dt, int64_t in, bool vec) {
  SCOPED_TRACE(std::string(dt == DType::kF32 ? "f32" : "bf16") + " in=" + std::to_string(in) +
               (vec ? " 16-byte loads" : " scalar loads"));
  auto cpu = MakeBackend("cpu");
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  Backend& be = **cpu;
  // Group sizes for every chunk body (1, 2, 3 -> 4, 4, 5..8 -> 8, and more than 8 rows: 9 and 17 take
  // two and three chunks), an empty set, 3 idle rows before the first group and 2 after the last (the
  // last set has 3 rows, run by the 4-row body, whose fourth row must not be stored). 21
  // output features: the second feature block has one warp with 4 features and one with 1.
  const std::vector<int32_t> sizes = {2, 0, 1, 4, 5, 8, 9, 17, 3};
  const int64_t sets = static_cast<int64_t>(sizes.size()), out = 21;
  std::vector<int32_t> offsets(sets + 1);
  offsets[0] = 3;
  for (int64_t w = 0; w < sets; ++w) offsets[w + 1] = offsets[w] + sizes[w];
  const int64_t m = offsets[sets] + 2;
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> d(-1, 1);
  auto values = [&](int64_t count) {
    std::vector<float> v(count);
    for (float& x : v) x = __bfloat162float(__float2bfloat16_rn(d(rng)));  // exact in both dtypes
    return v;
  };
  const std::vector<float> x = values(m * in);
  std::vector<std::vector<float>> w;
  for (int64_t s = 0; s < sets; ++s) w.push_back(values(out * in));

  // Reference: the CPU backend (f32 results either way).
  Tensor tx = *be.FromHost(x, {m, in});
  std::vector<Tensor> tw;
  for (const auto& ws : w) tw.push_back(*be.FromHost(ws, {out, in}));
  std::vector<const Tensor*> tw_ptrs;
  for (const Tensor& t : tw) tw_ptrs.push_back(&t);
  Tensor toff = *be.Alloc({sets + 1}, DType::kI32);
  ASSERT_TRUE(be.CopyFromHost(offsets.data(), offsets.size() * 4, toff).ok());
  const float kSentinel = 99.0f;
  Tensor ty = *be.FromHost(std::vector<float>(m * out, kSentinel), {m, out});
  ASSERT_TRUE(be.GroupedMatmulByOffsets(tx, tw_ptrs, toff, ty).ok());
  const std::vector<float> want = cuda_emulation::CopyToHost<float>(be, ty);

  // The kernel on host memory in dtype T, f32 output.
  auto as_t = [](const std::vector<float>& v) {
    std::vector<T> r(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      if constexpr (std::is_same_v<T, float>) {
        r[i] = v[i];
      } else {
        r[i] = __float2bfloat16_rn(v[i]);
      }
    }
    return r;
  };
  // 16-byte loads need 16-byte aligned rows: vectors of T from operator new are (alignof max_align_t).
  const std::vector<T> xt = as_t(x);
  std::vector<std::vector<T>> wt;
  std::vector<const void*> wptr;
  for (const auto& ws : w) wt.push_back(as_t(ws));
  for (const auto& ws : wt) wptr.push_back(ws.data());
  std::vector<float> y(m * out, kSentinel);
  int err = 0;
  const int64_t feature_blocks = (out + mr::kGemvFeatPerBlock - 1) / mr::kGemvFeatPerBlock;
  cuda_emulation::Launch(dim3(sets, feature_blocks), mr::kGemvThreads, [&] {
    if (vec) {
      mr::GroupedGemvKernel<T, true>(xt.data(), wptr.data(), offsets.data(), m, in, out, y.data(), kF32, &err);
    } else {
      mr::GroupedGemvKernel<T, false>(xt.data(), wptr.data(), offsets.data(), m, in, out, y.data(), kF32, &err);
    }
  });
  EXPECT_EQ(err, 0);
  for (int64_t i = 0; i < m * out; ++i) {
    ASSERT_NEAR(y[i], want[i], 1e-4f * (1.0f + std::fabs(want[i]))) << "y[" << i / out << ", " << i % out << "]";
  }

  if (vec) return;
  // Offsets that are not a row range (set 5 would end before it begins): the error bit. (Set 4 then
  // covers set 5's rows, a valid range, so there is no row left for the skipped set to have written.)
  std::vector<int32_t> bad = offsets;
  std::swap(bad[5], bad[6]);  // sets 4 (5 rows) and 5 (8 rows)
  std::vector<float> y2(m * out, kSentinel);
  err = 0;
  cuda_emulation::Launch(dim3(sets, feature_blocks), mr::kGemvThreads, [&] {
    mr::GroupedGemvKernel<T, false>(xt.data(), wptr.data(), bad.data(), m, in, out, y2.data(), kF32, &err);
  });
  EXPECT_EQ(err, kErrMoeOffsets);
}

TEST(MoeRoutingEmulation, GemvMatchesCpuBackend) {
  CheckGemv<float>(DType::kF32, 64, true);
  CheckGemv<float>(DType::kF32, 37, false);
  CheckGemv<__nv_bfloat16>(DType::kBF16, 64, true);
  CheckGemv<__nv_bfloat16>(DType::kBF16, 40, false);
}

}  // namespace
}  // namespace tessera::testing
