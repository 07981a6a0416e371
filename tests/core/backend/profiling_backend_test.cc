// core/backend/profiling_backend: forwards every op unchanged, and while enabled counts and times each
// op by name; the report accounts for the wall time as ops plus "(outside ops)".
#include "core/backend/profiling_backend.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tessera {
namespace {

TEST(ProfilingBackendTest, ForwardsResultsAndCountsOnlyWhileEnabled) {
  std::unique_ptr<Backend> cpu = MakeCpuBackend();
  ProfilingBackend prof(cpu.get());
  EXPECT_EQ(prof.device(), DeviceKind::kCpu);
  EXPECT_EQ(prof.name(), cpu->name());
  Tensor a = *prof.FromHost(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = *prof.FromHost(std::vector<float>{1, 0, 0, 1, 1, 1}, {2, 3});
  Tensor c = *prof.Alloc({2, 2}, DType::kF32);
  ASSERT_TRUE(prof.Matmul(a, false, b, true, c, 1.0f, 0.0f).ok());
  EXPECT_TRUE(prof.Table().empty());  // disabled: nothing recorded

  prof.set_enabled(true);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(prof.Matmul(a, false, b, true, c, 1.0f, 0.0f).ok());
  ASSERT_TRUE(prof.Add(a, b, a).ok());
  EXPECT_EQ(*prof.ToHostF32(c), (std::vector<float>{1, 6, 4, 15}));  // [1 2 3]·[1 0 0], [1 2 3]·[0 1 1], ...
  EXPECT_EQ(*prof.ToHostF32(a), (std::vector<float>{2, 2, 3, 5, 6, 7}));
  // An op's error passes through unchanged (and the call is still counted).
  Tensor wrong = *prof.Alloc({3, 3}, DType::kF32);
  EXPECT_EQ(prof.Matmul(a, false, b, true, wrong, 1.0f, 0.0f).code(), absl::StatusCode::kInvalidArgument);

  std::map<std::string, ProfilingBackend::OpStats> t = prof.Table();
  EXPECT_EQ(t.at("Matmul").calls, 4);
  EXPECT_EQ(t.at("Add").calls, 1);
  EXPECT_GE(t.at("Matmul").seconds, 0.0);
  EXPECT_EQ(t.count("CopyToHost"), 1u);  // ToHostF32 goes through the virtual CopyToHost

  const std::string report = prof.Report(1.0);
  EXPECT_NE(report.find("Matmul"), std::string::npos) << report;
  EXPECT_NE(report.find("calls=4"), std::string::npos) << report;
  EXPECT_NE(report.find("(outside ops)"), std::string::npos) << report;
  prof.Reset();
  EXPECT_TRUE(prof.Table().empty());
}

}  // namespace
}  // namespace tessera
