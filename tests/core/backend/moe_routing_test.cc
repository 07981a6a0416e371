// Device-side MoE routing ops on every available backend: MoeSortAssignments against a stable sort
// written here (exact: it only moves integers and copies weights), GroupedMatmulByOffsets against double
// reference loops (f32: atol 1e-6 * K + 1e-6, rtol 1e-5; bf16 operands: the reference sees the same
// rounded inputs, so f32 outputs keep that tolerance and bf16 outputs add one bf16 rounding, rtol 1e-2),
// rows outside every group left untouched, and out-of-range device values reported as INVALID_ARGUMENT
// (by the op, or on devices that check on the device, by the next synchronization).
#include <algorithm>
#include <numeric>

#include "tests/core/backend/backend_test_util.h"

namespace tessera::testing {
namespace {

using MoeRoutingTest = BackendTest;
TESSERA_INSTANTIATE_BACKEND_TEST(MoeRoutingTest);

// The op's result or, when the op itself succeeded (asynchronous devices), the next synchronization's.
absl::Status OpThenSync(Backend& be, absl::Status op) { return op.ok() ? be.Synchronize() : op; }

struct SortCase {
  int64_t n, k, experts, ranks, extra_sets;  // extra_sets: ids beyond the base experts (overlay slots)
};

TEST_P(MoeRoutingTest, SortAssignmentsIsAStableSortBySet) {
  for (const SortCase& c : {SortCase{1, 1, 4, 1, 0}, SortCase{3, 2, 5, 2, 3}, SortCase{8, 8, 64, 3, 10},
                            SortCase{64, 8, 64, 9, 40}, SortCase{256, 8, 128, 17, 300}}) {
    const int64_t m = c.n * c.k, sets = c.experts + c.extra_sets;
    const std::string tag = " n=" + std::to_string(c.n) + " k=" + std::to_string(c.k) + " W=" + std::to_string(sets);
    std::vector<int32_t> idx = RandomInts(m, c.n, 0, static_cast<int32_t>(c.experts));
    std::vector<int32_t> rank = RandomInts(c.n, c.k, 0, static_cast<int32_t>(c.ranks));
    std::vector<double> w = RandomValues(m, 5, 0.0, 1.0);
    // Rank 0 maps every expert to its base set; other ranks send some experts to their own sets.
    std::vector<int32_t> table(c.ranks * c.experts);
    std::vector<int32_t> extra = RandomInts(table.size(), 6, 0, static_cast<int32_t>(3 * c.extra_sets + 1));
    for (int64_t r = 0; r < c.ranks; ++r) {
      for (int64_t e = 0; e < c.experts; ++e) {
        const int32_t x = extra[r * c.experts + e];
        table[r * c.experts + e] = r > 0 && x < c.extra_sets ? static_cast<int32_t>(c.experts + x) : static_cast<int32_t>(e);
      }
    }
    std::vector<int32_t> set(m), order(m);
    for (int64_t a = 0; a < m; ++a) set[a] = table[rank[a / c.k] * c.experts + idx[a]];
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t x, int32_t y) { return set[x] < set[y]; });
    std::vector<int32_t> want_rows(m), want_off(sets + 1);
    std::vector<double> want_w(m);
    for (int64_t i = 0; i < m; ++i) {
      want_rows[i] = static_cast<int32_t>(order[i] / c.k);
      want_w[i] = static_cast<float>(w[order[i]]);
    }
    for (int64_t s = 0; s <= sets; ++s) {
      want_off[s] = static_cast<int32_t>(std::count_if(set.begin(), set.end(), [&](int32_t v) { return v < s; }));
    }

    // Outputs preset to values the op must overwrite.
    Tensor rows = *be().Alloc({m}, DType::kI32), gate = Garbage({m}), off = *be().Alloc({sets + 1}, DType::kI32);
    ASSERT_TRUE(be().Fill(rows, -7.0f).ok());
    ASSERT_TRUE(be().Fill(off, -7.0f).ok());
    absl::Status s = be().MoeSortAssignments(UpI(idx, {c.n, c.k}), Up(w, {c.n, c.k}), UpI(rank, {c.n}),
                                             UpI(table, {c.ranks, c.experts}), rows, gate, off);
    ASSERT_TRUE(OpThenSync(be(), s).ok()) << s << tag;
    EXPECT_EQ(DownI(rows), want_rows) << tag;
    EXPECT_EQ(DownI(off), want_off) << tag;
    ExpectClose(Down(gate), want_w, 0, 0, "gate_w" + tag);
  }
}

TEST_P(MoeRoutingTest, SortAssignmentsRejectsOutOfRangeValues) {
  const int64_t n = 4, k = 2, experts = 3, ranks = 2, sets = 4;
  const std::vector<int32_t> good_idx = {0, 1, 2, 0, 1, 2, 0, 1}, good_rank = {0, 1, 1, 0};
  const std::vector<int32_t> good_table = {0, 1, 2, 3, 1, 2};
  const std::vector<double> w(n * k, 0.5);
  struct Bad {
    std::vector<int32_t> idx, rank, table;
    const char* what;
  };
  std::vector<int32_t> idx_hi = good_idx, rank_hi = good_rank, table_hi = good_table, idx_neg = good_idx;
  idx_hi[5] = experts;
  idx_neg[2] = -1;
  rank_hi[3] = ranks;
  table_hi[4] = sets;
  for (const Bad& b : {Bad{idx_hi, good_rank, good_table, "expert >= E"}, Bad{idx_neg, good_rank, good_table, "expert < 0"},
                       Bad{good_idx, rank_hi, good_table, "rank >= R"}, Bad{good_idx, good_rank, table_hi, "set >= W"}}) {
    Tensor rows = *be().Alloc({n * k}, DType::kI32), gate = Garbage({n * k}), off = *be().Alloc({sets + 1}, DType::kI32);
    absl::Status s = be().MoeSortAssignments(UpI(b.idx, {n, k}), Up(w, {n, k}), UpI(b.rank, {n}),
                                             UpI(b.table, {ranks, experts}), rows, gate, off);
    EXPECT_EQ(OpThenSync(be(), s).code(), absl::StatusCode::kInvalidArgument) << b.what;
    // The backend is usable afterwards.
    s = be().MoeSortAssignments(UpI(good_idx, {n, k}), Up(w, {n, k}), UpI(good_rank, {n}),
                                UpI(good_table, {ranks, experts}), rows, gate, off);
    EXPECT_TRUE(OpThenSync(be(), s).ok()) << b.what << ": " << s;
  }
  // Shapes are checked on the host by every backend.
  Tensor rows = *be().Alloc({n * k}, DType::kI32), gate = Garbage({n * k}), off = *be().Alloc({sets + 1}, DType::kI32);
  EXPECT_EQ(be().MoeSortAssignments(UpI(good_idx, {n, k}), Up(w, {n, k}), UpI({0, 1, 1}, {n - 1}),
                                    UpI(good_table, {ranks, experts}), rows, gate, off).code(),
            absl::StatusCode::kInvalidArgument);
  Tensor short_rows = *be().Alloc({n * k - 1}, DType::kI32);
  EXPECT_EQ(be().MoeSortAssignments(UpI(good_idx, {n, k}), Up(w, {n, k}), UpI(good_rank, {n}),
                                    UpI(good_table, {ranks, experts}), short_rows, gate, off).code(),
            absl::StatusCode::kInvalidArgument);
}

// Converts an f32 tensor to `dtype` on the backend (identity for f32).
Tensor As(Backend& be, const Tensor& t, DType dtype) {
  if (dtype == DType::kF32) return t;
  Tensor out = *be.Alloc(t.shape(), dtype);
  EXPECT_TRUE(be.Copy(t, out).ok());
  return out;
}

struct MatmulCase {
  int64_t in, out;
  std::vector<int32_t> rows_per_set;  // consecutive groups; row `lead` rows before the first are left out
  int64_t lead, tail;
};

TEST_P(MoeRoutingTest, GroupedMatmulByOffsetsMatchesReference) {
  const std::vector<MatmulCase> cases = {
      {8, 5, {1}, 0, 0},
      {13, 7, {2, 0, 3, 1}, 1, 2},                          // `in` not a multiple of 8: the unvectorized path
      {64, 48, {0, 5, 0, 0, 9, 1, 17}, 3, 0},
      {256, 96, {8, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0, 4},
      {96, 256, std::vector<int32_t>(40, 1), 2, 2},        // decode-like: one row per set
      {128, 64, {0, 0, 0}, 2, 3},                           // every group empty
  };
  for (DType op_dt : {DType::kF32, DType::kBF16}) {
    for (DType out_dt : {DType::kF32, op_dt}) {
      if (op_dt == DType::kF32 && out_dt != DType::kF32) continue;
      for (const MatmulCase& c : cases) {
        const int64_t sets = static_cast<int64_t>(c.rows_per_set.size());
        std::vector<int32_t> off(sets + 1);
        off[0] = static_cast<int32_t>(c.lead);
        for (int64_t s = 0; s < sets; ++s) off[s + 1] = off[s] + c.rows_per_set[s];
        const int64_t m = off[sets] + c.tail;
        const std::string tag = std::string(" op=") + DTypeName(op_dt) + " out=" + DTypeName(out_dt) +
                                " in=" + std::to_string(c.in) + " out=" + std::to_string(c.out) +
                                " sets=" + std::to_string(sets);
        Tensor x = As(be(), Up(RandomValues(m * c.in, c.in), {m, c.in}), op_dt);
        std::vector<Tensor> wt;
        for (int64_t s = 0; s < sets; ++s) {
          wt.push_back(As(be(), Up(RandomValues(c.out * c.in, 100 + s), {c.out, c.in}), op_dt));
        }
        std::vector<const Tensor*> wp;
        for (const Tensor& t : wt) wp.push_back(&t);
        // What the backend sees (rounded to op_dt), as doubles.
        std::vector<float> xs = *be().ToHostF32(x);
        Tensor y = As(be(), Garbage({m, c.out}), out_dt);
        ASSERT_TRUE(OpThenSync(be(), be().GroupedMatmulByOffsets(x, wp, UpI(off, {sets + 1}), y)).ok()) << tag;
        std::vector<float> got = *be().ToHostF32(y);
        std::vector<double> want(m * c.out, 0.0);
        for (int64_t s = 0; s < sets; ++s) {
          std::vector<float> ws = *be().ToHostF32(wt[s]);
          for (int64_t r = off[s]; r < off[s + 1]; ++r) {
            for (int64_t o = 0; o < c.out; ++o) {
              double acc = 0;
              for (int64_t i = 0; i < c.in; ++i) acc += static_cast<double>(xs[r * c.in + i]) * ws[o * c.in + i];
              want[r * c.out + o] = acc;
            }
          }
        }
        std::vector<float> inside(got.begin() + off[0] * c.out, got.begin() + off[sets] * c.out);
        std::vector<double> want_inside(want.begin() + off[0] * c.out, want.begin() + off[sets] * c.out);
        const double rtol = out_dt == DType::kF32 ? 1e-5 : 1e-2;
        ExpectClose(inside, want_inside, 1e-6 * static_cast<double>(c.in) + 1e-6, rtol, "GroupedMatmulByOffsets" + tag);
        // Rows before the first group and after the last keep their (NaN) contents.
        for (int64_t i = 0; i < off[0] * c.out; ++i) ASSERT_TRUE(std::isnan(got[i])) << "lead row written" << tag;
        for (int64_t i = off[sets] * c.out; i < m * c.out; ++i) ASSERT_TRUE(std::isnan(got[i])) << "tail row written" << tag;
      }
    }
  }
}

TEST_P(MoeRoutingTest, GroupedMatmulByOffsetsRejectsBadArguments) {
  Tensor x = Up(RandomValues(6 * 8, 1), {6, 8}), w0 = Up(RandomValues(4 * 8, 2), {4, 8});
  Tensor w1 = Up(RandomValues(4 * 8, 3), {4, 8}), y = Garbage({6, 4});
  const std::vector<const Tensor*> two = {&w0, &w1};
  // Offsets that are not a row range of [0, M]: decreasing, past M, negative.
  for (const std::vector<int32_t>& bad : {std::vector<int32_t>{0, 4, 2}, {0, 3, 7}, {-1, 2, 4}}) {
    absl::Status s = be().GroupedMatmulByOffsets(x, two, UpI(bad, {3}), y);
    EXPECT_EQ(OpThenSync(be(), s).code(), absl::StatusCode::kInvalidArgument) << bad[0] << "," << bad[1] << "," << bad[2];
  }
  // Host-visible mistakes: offsets of the wrong length, a weight of another shape or dtype.
  EXPECT_EQ(be().GroupedMatmulByOffsets(x, two, UpI({0, 6}, {2}), y).code(), absl::StatusCode::kInvalidArgument);
  Tensor w_bf16 = As(be(), w1, DType::kBF16);
  const std::vector<const Tensor*> mixed = {&w0, &w_bf16};
  EXPECT_EQ(OpThenSync(be(), be().GroupedMatmulByOffsets(x, mixed, UpI({0, 2, 6}, {3}), y)).code(),
            absl::StatusCode::kInvalidArgument);
  // Still usable.
  EXPECT_TRUE(OpThenSync(be(), be().GroupedMatmulByOffsets(x, two, UpI({0, 2, 6}, {3}), y)).ok());
}

}  // namespace
}  // namespace tessera::testing
