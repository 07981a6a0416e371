// Parity of the dense (cuBLAS) and grouped expert matmuls, both grouped implementations, CPU vs CUDA.
#include <string>
#include <vector>

#include "core/backend/cuda/cuda_backend.h"
#include "tests/core/backend_cuda/cuda_test_util.h"

namespace tessera::testing_cuda {
namespace {

#define ASSERT_OK(expr)                          \
  do {                                           \
    const absl::Status s_ = (expr);              \
    ASSERT_TRUE(s_.ok()) << #expr << ": " << s_; \
  } while (0)

// (input dtype, output dtype)
class MatmulParity : public CudaParityTest, public ::testing::WithParamInterface<std::pair<DType, DType>> {};

TEST_P(MatmulParity, AllTransposesAlphaBeta) {
  const auto [din, dout] = GetParam();
  const int64_t m = 67, k = 45, n = 33;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      Pair a = BothRand(ta ? std::vector<int64_t>{k, m} : std::vector<int64_t>{m, k}, din);
      Pair b = BothRand(tb ? std::vector<int64_t>{n, k} : std::vector<int64_t>{k, n}, din);
      for (float beta : {0.0f, 0.5f}) {
        Pair c = BothRand({m, n}, dout);
        ASSERT_OK(cpu_->Matmul(a.c, ta, b.c, tb, c.c, 1.25f, beta));
        ASSERT_OK(gpu_->Matmul(a.g, ta, b.g, tb, c.g, 1.25f, beta));
        Compare(c, din == DType::kF32 && dout == DType::kF32 ? DType::kF32 : DType::kBF16,
                "Matmul ta=" + std::to_string(ta) + " tb=" + std::to_string(tb) + " beta=" + std::to_string(beta));
      }
    }
  }
}

std::string PairName(const ::testing::TestParamInfo<std::pair<DType, DType>>& info) {
  return std::string(DTypeName(info.param.first)) + "_to_" + DTypeName(info.param.second);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, MatmulParity,
                         ::testing::Values(std::make_pair(DType::kF32, DType::kF32),
                                           std::make_pair(DType::kBF16, DType::kF32),
                                           std::make_pair(DType::kBF16, DType::kBF16)),
                         PairName);

// (activation/weight dtype, grouped implementation)
class GroupedParity : public CudaParityTest,
                      public ::testing::WithParamInterface<std::pair<DType, GroupedGemmImpl>> {};

TEST_P(GroupedParity, ForwardInputGradWeightGrad) {
  const auto [dt, impl] = GetParam();
#if TESSERA_HAVE_CUDA
  ASSERT_OK(SetCudaGroupedGemmImpl(*gpu_, impl));
#else
  GTEST_SKIP() << "no CUDA device: this build has no CUDA backend";  // SetUp already skipped; for the linker
#endif
  const int64_t rows = 642, in = 80, out = 72;
  // Gaps (rows 7..9, 149, 579) stay untouched; group 1 is empty; groups 3-5 span several 64-row tiles
  // with ragged ends; groups 2 and 6 have one shape and share one cuBLAS group (cuda_matmul.cc); group 5
  // (300 rows) is one full kGroupedChunkRows chunk plus a remainder for kCublasChunks.
  struct G {
    int64_t begin, rows;
  };
  const std::vector<G> layout = {{0, 7}, {7, 0}, {10, 60}, {70, 79}, {150, 129}, {279, 300}, {580, 60}};
  std::vector<Pair> w, dw;
  for (size_t i = 0; i < layout.size(); ++i) {
    w.push_back(BothRand({out, in}, dt));
    dw.push_back(BothRand({out, in}));  // weight gradients accumulate in f32
  }
  auto groups = [&](bool gpu) {
    std::vector<GemmGroup> g(layout.size());
    for (size_t i = 0; i < layout.size(); ++i) {
      g[i] = GemmGroup{layout[i].begin, layout[i].rows, gpu ? &w[i].g : &w[i].c, gpu ? &dw[i].g : &dw[i].c};
    }
    g[0].weight_grad = nullptr;  // a frozen expert: no gradient
    return g;
  };
  const std::string tag = std::string(DTypeName(dt)) + " " + GroupedGemmImplName(impl);
  Pair x = BothRand({rows, in}, dt), y = BothRand({rows, out}, dt);
  ASSERT_OK(cpu_->GroupedMatmul(x.c, groups(false), y.c));
  ASSERT_OK(gpu_->GroupedMatmul(x.g, groups(true), y.g));
  Compare(y, dt, "GroupedMatmul " + tag);

  Pair dy = BothRand({rows, out}, dt), dx = BothRand({rows, in}, dt);
  ASSERT_OK(cpu_->GroupedMatmulInputGrad(dy.c, groups(false), dx.c));
  ASSERT_OK(gpu_->GroupedMatmulInputGrad(dy.g, groups(true), dx.g));
  Compare(dx, dt, "GroupedMatmulInputGrad " + tag);

  ASSERT_OK(cpu_->GroupedMatmulWeightGrad(x.c, dy.c, groups(false)));
  ASSERT_OK(gpu_->GroupedMatmulWeightGrad(x.g, dy.g, groups(true)));
  for (size_t i = 0; i < dw.size(); ++i) Compare(dw[i], dt, "GroupedMatmulWeightGrad " + tag + " group " + std::to_string(i));
}

std::string GroupedName(const ::testing::TestParamInfo<std::pair<DType, GroupedGemmImpl>>& info) {
  return std::string(DTypeName(info.param.first)) + "_" + GroupedGemmImplName(info.param.second);
}

INSTANTIATE_TEST_SUITE_P(DtypesAndImpls, GroupedParity,
                         ::testing::Values(std::make_pair(DType::kF32, GroupedGemmImpl::kCublas),
                                           std::make_pair(DType::kF32, GroupedGemmImpl::kKernel),
                                           std::make_pair(DType::kF32, GroupedGemmImpl::kCublasChunks),
                                           std::make_pair(DType::kBF16, GroupedGemmImpl::kCublas),
                                           std::make_pair(DType::kBF16, GroupedGemmImpl::kKernel),
                                           std::make_pair(DType::kBF16, GroupedGemmImpl::kCublasChunks)),
                         GroupedName);

TEST_F(CudaParityTest, GroupedWeightGradSharedBetweenGroupsAccumulatesBoth) {
  // Two groups (e.g. one slot served by its base and an overlay weight) add into one gradient.
  const int64_t rows = 90, in = 40, out = 24;
  Pair x = BothRand({rows, in}), dy = BothRand({rows, out}), w1 = BothRand({out, in}), w2 = BothRand({out, in});
  for (GroupedGemmImpl impl : {GroupedGemmImpl::kCublas, GroupedGemmImpl::kKernel, GroupedGemmImpl::kCublasChunks}) {
#if TESSERA_HAVE_CUDA
    ASSERT_OK(SetCudaGroupedGemmImpl(*gpu_, impl));
#endif
    Pair g = BothRand({out, in});
    std::vector<GemmGroup> gc = {GemmGroup{0, 50, &w1.c, &g.c}, GemmGroup{50, 40, &w2.c, &g.c}};
    std::vector<GemmGroup> gg = {GemmGroup{0, 50, &w1.g, &g.g}, GemmGroup{50, 40, &w2.g, &g.g}};
    ASSERT_OK(cpu_->GroupedMatmulWeightGrad(x.c, dy.c, gc));
    ASSERT_OK(gpu_->GroupedMatmulWeightGrad(x.g, dy.g, gg));
    Compare(g, DType::kF32, std::string("shared wgrad ") + GroupedGemmImplName(impl));
  }
}

TEST_F(CudaParityTest, Tf32MatmulsStayWithinBf16Tolerance) {
#if TESSERA_HAVE_CUDA
  // SetCudaAllowTf32: f32 inputs rounded to TF32's 10-bit mantissa, fp32 accumulation.
  ASSERT_OK(SetCudaAllowTf32(*gpu_, true));
  Pair a = BothRand({96, 160}), b = BothRand({72, 160}), c = BothRand({96, 72});
  ASSERT_OK(cpu_->Matmul(a.c, false, b.c, true, c.c));
  ASSERT_OK(gpu_->Matmul(a.g, false, b.g, true, c.g));
  Compare(c, DType::kBF16, "Matmul with TF32");
  Pair w0 = BothRand({72, 160}), w1 = BothRand({72, 160}), y = BothRand({96, 72});
  std::vector<GemmGroup> gc = {GemmGroup{0, 40, &w0.c, nullptr}, GemmGroup{40, 56, &w1.c, nullptr}};
  std::vector<GemmGroup> gg = {GemmGroup{0, 40, &w0.g, nullptr}, GemmGroup{40, 56, &w1.g, nullptr}};
  ASSERT_OK(cpu_->GroupedMatmul(a.c, gc, y.c));
  ASSERT_OK(gpu_->GroupedMatmul(a.g, gg, y.g));
  Compare(y, DType::kBF16, "GroupedMatmul with TF32");
  ASSERT_OK(SetCudaAllowTf32(*gpu_, false));
  EXPECT_EQ(SetCudaAllowTf32(*cpu_, true).code(), absl::StatusCode::kInvalidArgument);
#endif
}

TEST_F(CudaParityTest, GroupedRejectsOverlappingGroups) {
  Pair x = BothRand({10, 8}), y = BothRand({10, 4}), w = BothRand({4, 8});
  std::vector<GemmGroup> g = {GemmGroup{0, 6, &w.g, nullptr}, GemmGroup{5, 3, &w.g, nullptr}};
  EXPECT_EQ(gpu_->GroupedMatmul(x.g, g, y.g).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera::testing_cuda
