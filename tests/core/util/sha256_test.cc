// SHA-256 against the FIPS 180-4 / NIST vectors, incremental hashing across block boundaries, and the SHA-NI
// compression function against the portable one.
#include "core/util/sha256.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "core/util/sha256_blocks.h"
#include "gtest/gtest.h"

namespace tessera {
namespace {

// The SHA-NI compression function against the portable one, from the same states over random blocks
// (1 to 40 at a time, so both the single-block and the multi-block loops run).
TEST(Sha256Test, ShaNiBlocksEqualThePortableOnes) {
  std::mt19937 rng(17);
  std::vector<uint8_t> data(64 * 40);
  uint32_t a[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  uint32_t b[8];
  std::copy(std::begin(a), std::end(a), b);
  for (int round = 0; round < 50; ++round) {
    for (uint8_t& x : data) x = static_cast<uint8_t>(rng());
    const size_t blocks = 1 + rng() % 40;
    sha256_internal::BlocksPortable(a, data.data(), blocks);
    if (!sha256_internal::BlocksShaNi(b, data.data(), blocks)) {
      GTEST_SKIP() << "this CPU has no SHA extensions (SHA-NI): only the portable blocks run here";
    }
    ASSERT_TRUE(std::equal(std::begin(a), std::end(a), std::begin(b)))
        << "round " << round << ", " << blocks << " blocks";
  }
}

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
