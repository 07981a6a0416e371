// Fatal checks for the benchmark programs: they are gtest-free, and a failed setup call (allocation,
// upload, an op on valid inputs) leaves nothing worth measuring, so it prints `FAILED <what>: <status>`
// on stderr and exits 1. Checks that a run should survive (a new kernel disagreeing) are the programs' own.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera::bench {

[[noreturn]] inline void Die(const char* what, const absl::Status& s) {
  std::fprintf(stderr, "FAILED %s: %s\n", what, std::string(s.message()).c_str());
  std::exit(1);
}

template <typename T>
T Must(absl::StatusOr<T> v, const char* what) {
  if (!v.ok()) Die(what, v.status());
  return std::move(*v);
}

}  // namespace tessera::bench

#define CHECK_OK(expr)                                   \
  do {                                                   \
    const absl::Status s_ = (expr);                      \
    if (!s_.ok()) ::tessera::bench::Die(#expr, s_);      \
  } while (0)
