#include "core/tensor/tensor.h"

#include <cmath>
#include <cstdlib>

#include "gtest/gtest.h"

namespace tessera {
namespace {

Tensor HostTensor(std::vector<int64_t> shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  std::shared_ptr<void> mem(std::malloc(n * 4), std::free);
  return Tensor(mem, mem.get(), std::move(shape), DType::kF32, DeviceKind::kCpu);
}

TEST(TensorTest, RowsAndReshapeAreViewsOfTheSameMemory) {
  Tensor t = HostTensor({4, 3});
  for (int i = 0; i < 12; ++i) t.data<float>()[i] = static_cast<float>(i);
  Tensor r = t.Rows(2, 2);
  EXPECT_EQ(r.shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(r.data<float>()[0], 6.0f);
  Tensor flat = t.Reshape({2, -1});
  EXPECT_EQ(flat.shape(), (std::vector<int64_t>{2, 6}));
  EXPECT_EQ(t.Reshape({4, 3, 1}).Flat2D().shape(), (std::vector<int64_t>{12, 1}));
  EXPECT_EQ(t.DebugString(), "f32[4,3]@cpu");
  EXPECT_TRUE(t.defined());
  EXPECT_FALSE(Tensor().defined());
}

TEST(TensorTest, Bf16RoundTripRoundsToNearestEven) {
  EXPECT_EQ(Bf16ToF32(F32ToBf16(1.0f)), 1.0f);
  EXPECT_EQ(Bf16ToF32(F32ToBf16(-2.5f)), -2.5f);
  // 1 + 2^-8 is exactly between two bf16 values (1 and 1 + 2^-7): ties go to even (1).
  EXPECT_EQ(Bf16ToF32(F32ToBf16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(NAN))));
}

TEST(TensorTest, F16RoundTripIncludingSubnormals) {
  for (float f : {0.0f, 1.0f, -3.25f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f}) {
    EXPECT_EQ(F16ToF32(F32ToF16(f)), f) << f;
  }
  EXPECT_TRUE(std::isinf(F16ToF32(F32ToF16(1e6f))));
}

}  // namespace
}  // namespace tessera
