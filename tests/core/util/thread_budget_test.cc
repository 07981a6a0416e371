// The thread budget in a process of its own (the pool and the BLAS must not have started before the test
// sets it, as tessera-server's --threads runs before any compute).
#include "core/util/thread_budget.h"

#include <cstdlib>
#include <string>

#include "core/backend/cpu/cpu_blas.h"
#include "core/util/parallel.h"
#include "gtest/gtest.h"

namespace tessera {
namespace {

TEST(ThreadBudgetTest, TheFlagSizesThePoolAndTheBlasAndIsFixedByFirstUse) {
  EXPECT_EQ(SetThreadBudget(0).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(SetThreadBudget(3).ok());
  ASSERT_TRUE(SetThreadBudget(5).ok());  // nothing used it yet: it may still change

  EXPECT_EQ(NumThreads(), 5);  // the pool's first use fixes the budget
  EXPECT_EQ(ThreadBudget(), 5);
  EXPECT_EQ(ThreadBudgetString(), "5 (from --threads)");
  const absl::Status late = SetThreadBudget(4);
  EXPECT_EQ(late.code(), absl::StatusCode::kFailedPrecondition) << late;
  EXPECT_NE(late.message().find("already in use at 5 threads"), std::string::npos) << late;
  EXPECT_TRUE(SetThreadBudget(5).ok());  // the number in force is no change

  // The BLAS loads single-threaded, even over a user's OPENBLAS_NUM_THREADS: the pool threads it.
  setenv("OPENBLAS_NUM_THREADS", "7", 1);
  const cpu::BlasInfo& blas = cpu::Blas();
  EXPECT_EQ(blas.user_threads, "7");
  EXPECT_STREQ(std::getenv("OPENBLAS_NUM_THREADS"), "1");
  EXPECT_EQ(blas.threads, 1);
  EXPECT_NE(cpu::CpuKernelSetString().find(
                "pool_threads=5 blas_threads=1(OPENBLAS_NUM_THREADS=7 overridden: the pool threads the BLAS)"),
            std::string::npos)
      << cpu::CpuKernelSetString();
}

}  // namespace
}  // namespace tessera
