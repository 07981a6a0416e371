// Helpers shared by the core/io tests: scratch directories and hand-made safetensors blobs.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>

#include "gtest/gtest.h"

namespace tessera::io::testing {

// One directory per test process under the gtest temp dir, removed (with every scratch directory in
// it) when the process exits, so runs of the suite leave nothing behind in /tmp.
inline const std::filesystem::path& ProcessScratchRoot() {
  struct Root {
    std::filesystem::path path = std::filesystem::path(::testing::TempDir()) /
                                 ("tessera_io_" + std::to_string(::getpid()));
    ~Root() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static const Root root;
  return root.path;
}

// A fresh empty directory, unique per test.
inline std::filesystem::path ScratchDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::filesystem::path dir =
      ProcessScratchRoot() / (std::string(info->test_suite_name()) + "_" + info->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// 8-byte little-endian length + header text + data, exactly as given (no validation, no padding).
inline std::string RawSafetensors(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

}  // namespace tessera::io::testing
