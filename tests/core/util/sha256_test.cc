// SHA-256 against the FIPS 180-4 / NIST vectors, and incremental hashing across block boundaries.
#include "core/util/sha256.h"

#include <cstdio>
#include <string>
#include <unistd.h>

#include "gtest/gtest.h"

namespace tessera {
namespace {

TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256Hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmno"
                      "pqklmnopqrlmnopqrsmnopqrstnopqrstu"),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256Test, IncrementalEqualsOneShotAtEveryBoundary) {
  std::string data;
  for (int i = 0; i < 300; ++i) data.push_back(static_cast<char>(i * 7 + 3));
  for (size_t len : {0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 300}) {
    const std::string part = data.substr(0, len);
    for (size_t split = 0; split <= len; split += 13) {
      Sha256 h;
      h.Update(part.substr(0, split));
      h.Update(part.substr(split));
      EXPECT_EQ(h.FinishHex(), Sha256Hex(part)) << "len=" << len << " split=" << split;
    }
  }
}

TEST(Sha256Test, FileHashEqualsOneShotAndMissingFileIsNotFound) {
  const std::string path = ::testing::TempDir() + "/sha256_test_file_" + std::to_string(::getpid());
  std::string data(200000, 'x');
  for (size_t i = 0; i < data.size(); i += 7) data[i] = static_cast<char>(i);
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(std::fwrite(data.data(), 1, data.size(), f), data.size());
  std::fclose(f);
  auto h = Sha256FileHex(path);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(*h, Sha256Hex(data));
  std::remove(path.c_str());
  EXPECT_EQ(Sha256FileHex(path).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace tessera
