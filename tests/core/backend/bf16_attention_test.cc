// Decode attention over bf16 keys and values read in place (cpu_attention.cc): the same result as the f32
// kernel on a widened copy, paged and contiguous, with and without a window; and the kernel's limits
// (blocked sequences and backward stay f32-only, and say so).
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/backend/backend.h"
#include "core/backend/cpu/cpu_backend_internal.h"
#include "core/tensor/tensor.h"
#include "gtest/gtest.h"

namespace tessera::cpu {
namespace {

// Random values that bf16 holds exactly (so the f32 reference sees the very same keys).
std::vector<float> Bf16Values(int64_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = Bf16ToF32(F32ToBf16(d(rng)));
  return v;
}

Tensor Upload(Backend& be, const std::vector<float>& v, std::vector<int64_t> shape, DType dtype) {
  Tensor t = be.Alloc(shape, dtype).value();
  if (dtype == DType::kBF16) {
    std::vector<uint16_t> b(v.size());
    for (size_t i = 0; i < v.size(); ++i) b[i] = F32ToBf16(v[i]);
    EXPECT_TRUE(be.CopyFromHost(b.data(), b.size() * 2, t).ok());
  } else {
    EXPECT_TRUE(be.CopyFromHost(v.data(), v.size() * 4, t).ok());
  }
  return t;
}

void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    // Same products, summed in another lane order at most: f32 rounding only.
    ASSERT_NEAR(got[i], want[i], 2e-6 * (1.0 + std::fabs(want[i]))) << what << " at " << i;
  }
}

TEST(Bf16AttentionTest, DecodeRowsReadBf16KeysAsTheWidenedCopyWould) {
  auto be = MakeCpuBackend();  // NarrowStorageBackend over CpuBackend, as a bf16 model runs
  const int64_t h = 4, kvh = 2, hd = 40, bt = 4, kv_len = 45, blocks = 16;
  const std::vector<int32_t> table = {7, 2, 11, 0, 15, 5, 9, 1, 13, 3, 6, 12};  // 48 positions
  const int64_t row = kvh * hd;
  const std::vector<float> k = Bf16Values(kv_len * row, 5, -2, 2), v = Bf16Values(kv_len * row, 6, -1, 1);
  std::vector<float> pk(blocks * bt * row, 0.0f), pv(pk.size(), 0.0f);
  for (int64_t j = 0; j < kv_len; ++j) {
    const int64_t r = table[j / bt] * bt + j % bt;
    std::copy_n(k.begin() + j * row, row, pk.begin() + r * row);
    std::copy_n(v.begin() + j * row, row, pv.begin() + r * row);
  }
  Tensor k32 = Upload(*be, k, {kv_len, kvh, hd}, DType::kF32), v32 = Upload(*be, v, {kv_len, kvh, hd}, DType::kF32);
  Tensor k16 = Upload(*be, k, {kv_len, kvh, hd}, DType::kBF16), v16 = Upload(*be, v, {kv_len, kvh, hd}, DType::kBF16);
  Tensor pk16 = Upload(*be, pk, {blocks * bt, kvh, hd}, DType::kBF16);
  Tensor pv16 = Upload(*be, pv, {blocks * bt, kvh, hd}, DType::kBF16);
  // 1 and 3 rows: the per-row kernel reads bf16 in place; 20 rows: the blocked kernel, on a widened copy.
  for (int64_t q_len : {1, 3, 20}) {
    for (int64_t window : {0, 7}) {
      const std::string what = "q_len " + std::to_string(q_len) + " window " + std::to_string(window);
      Tensor q = Upload(*be, Bf16Values(q_len * h * hd, 9 + q_len, -1, 1), {q_len, h, hd}, DType::kF32);
      AttentionSeq ref{0, q_len, kv_len, &k32, &v32, nullptr, nullptr, window};
      AttentionSeq flat{0, q_len, kv_len, &k16, &v16, nullptr, nullptr, window};
      AttentionSeq paged{0, q_len, kv_len, &pk16, &pv16, nullptr, nullptr, window, table, bt};
      Tensor want = be->Alloc({q_len, h, hd}, DType::kF32).value();
      Tensor want_lse = be->Alloc({q_len, h}, DType::kF32).value();
      ASSERT_TRUE(be->AttentionForward(q, {ref}, 0.35f, want, &want_lse).ok()) << what;
      for (const AttentionSeq* s : {&flat, &paged}) {
        Tensor got = be->Alloc({q_len, h, hd}, DType::kF32).value(), lse = be->Alloc({q_len, h}, DType::kF32).value();
        const absl::Status st = be->AttentionForward(q, {*s}, 0.35f, got, &lse);
        ASSERT_TRUE(st.ok()) << what << ": " << st;
        ExpectClose(be->ToHostF32(got).value(), be->ToHostF32(want).value(), what + (s == &flat ? " flat" : " paged"));
        ExpectClose(be->ToHostF32(lse).value(), be->ToHostF32(want_lse).value(), what + " lse");
      }
    }
  }
}

TEST(Bf16AttentionTest, TheKernelTakesBf16OnlyForDecodeRowsOfTheForward) {
  CpuBackend kernels;  // the f32 kernels alone, without the staging wrapper
  const int64_t h = 2, kvh = 1, hd = 8, kv_len = 20;
  Tensor k16 = kernels.Alloc({kv_len, kvh, hd}, DType::kBF16).value();
  Tensor v16 = kernels.Alloc({kv_len, kvh, hd}, DType::kBF16).value();
  Tensor v32 = kernels.Alloc({kv_len, kvh, hd}, DType::kF32).value();
  const std::vector<uint16_t> halves(kv_len * kvh * hd, F32ToBf16(0.5f)), quarters(halves.size(), F32ToBf16(0.25f));
  ASSERT_TRUE(kernels.CopyFromHost(halves.data(), halves.size() * 2, k16).ok());
  ASSERT_TRUE(kernels.CopyFromHost(quarters.data(), quarters.size() * 2, v16).ok());
  ASSERT_TRUE(kernels.Fill(v32, 0.25f).ok());
  for (int64_t q_len : {int64_t{1}, kAttentionBlockedMinQ}) {
    Tensor q = kernels.Alloc({q_len, h, hd}, DType::kF32).value();
    Tensor out = kernels.Alloc({q_len, h, hd}, DType::kF32).value();
    ASSERT_TRUE(kernels.Fill(q, 1.0f).ok());
    AttentionSeq s{0, q_len, kv_len, &k16, &v16, nullptr, nullptr, 0};
    const absl::Status st = kernels.AttentionForward(q, {s}, 0.5f, out, nullptr);
    if (q_len < kAttentionBlockedMinQ) {
      ASSERT_TRUE(st.ok()) << st;
      const std::vector<float> got = kernels.ToHostF32(out).value();  // (a range-for over .value() dangles)
      for (float x : got) EXPECT_FLOAT_EQ(x, 0.25f);  // every value row is 0.25
    } else {
      EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
      EXPECT_NE(st.message().find("seqs[0].k"), std::string::npos) << st;
    }
  }
  // Keys and values of different dtypes are refused, and so is a bf16 backward.
  Tensor q = kernels.Alloc({1, h, hd}, DType::kF32).value(), out = kernels.Alloc({1, h, hd}, DType::kF32).value();
  ASSERT_TRUE(kernels.Fill(q, 1.0f).ok());
  AttentionSeq mixed{0, 1, kv_len, &k16, &v32, nullptr, nullptr, 0};
  EXPECT_EQ(kernels.AttentionForward(q, {mixed}, 0.5f, out, nullptr).code(), absl::StatusCode::kInvalidArgument);
  Tensor dk = kernels.Alloc({kv_len, kvh, hd}, DType::kBF16).value();
  Tensor dv = kernels.Alloc({kv_len, kvh, hd}, DType::kBF16).value();
  Tensor lse = kernels.Alloc({1, h}, DType::kF32).value(), dq = kernels.Alloc({1, h, hd}, DType::kF32).value();
  AttentionSeq back{0, 1, kv_len, &k16, &v16, &dk, &dv, 0};
  ASSERT_TRUE(kernels.AttentionForward(q, {back}, 0.5f, out, &lse).ok());
  EXPECT_EQ(kernels.AttentionBackward(q, {back}, 0.5f, out, lse, out, dq).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera::cpu
