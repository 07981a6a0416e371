#include "core/io/file_util.h"

#include <filesystem>

#include "gtest/gtest.h"
#include "tests/core/io/test_util.h"

namespace tessera::io {
namespace {

namespace fs = std::filesystem;

TEST(FileUtil, WriteAtomicallyReplacesContentAndLeavesNoTemporaries) {
  const fs::path dir = testing::ScratchDir();
  const std::string path = (dir / "blob.bin").string();
  std::string binary("a\0b\xff", 4);
  ASSERT_TRUE(WriteFileAtomically(path, binary).ok());
  EXPECT_EQ(*ReadFileToString(path), binary);
  ASSERT_TRUE(WriteFileAtomically(path, "second").ok());
  EXPECT_EQ(*ReadFileToString(path), "second");
  ASSERT_TRUE(WriteFileAtomically(path, "").ok());
  EXPECT_EQ(*ReadFileToString(path), "");
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    ++entries;
    EXPECT_EQ(e.path().filename(), "blob.bin");
  }
  EXPECT_EQ(entries, 1);
}

TEST(FileUtil, Errors) {
  const fs::path dir = testing::ScratchDir();
  auto missing = ReadFileToString((dir / "missing").string());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("missing"), std::string::npos);
  EXPECT_FALSE(ReadFileToString(dir.string()).ok());
  absl::Status s = WriteFileAtomically((dir / "no_such_dir" / "f").string(), "x");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("no_such_dir"), std::string::npos) << s;
}

}  // namespace
}  // namespace tessera::io
