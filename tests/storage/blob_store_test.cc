// BlobStore and SHA-256: FIPS 180-4 test vectors, put/get round trips, idempotence, corruption
// detection (DATA_LOSS), malformed digests, listing, deletion and temp-file collection.
#include "storage/blob_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <thread>

#include "gtest/gtest.h"
#include "storage/random_id.h"
#include "core/util/sha256.h"
#include "tests/storage/temp_dir.h"

namespace tessera::storage {
namespace {

using testing::TempDir;

TEST(RandomIdTest, Base62OfRequestedLengthAndDistinct) {
  std::set<std::string> seen;
  std::set<char> chars;
  for (int i = 0; i < 200; ++i) {
    auto r = RandomBase62(16);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->size(), 16u);
    for (char c : *r) {
      EXPECT_TRUE((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) << c;
      chars.insert(c);
    }
    EXPECT_TRUE(seen.insert(*r).second);
  }
  EXPECT_GT(chars.size(), 55u);  // 3200 draws cover (nearly) the whole alphabet
  EXPECT_EQ(RandomBase62(0).value(), "");
  EXPECT_EQ(RandomBase62(300).value().size(), 300u);
}

class BlobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = BlobStore::Create(dir_.path() + "/blobs");
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }
  TempDir dir_;
  std::unique_ptr<BlobStore> store_;
};

TEST_F(BlobStoreTest, PutGetRoundTrip) {
  const std::string bytes = "hello tessera\n";
  auto d = store_->Put(bytes);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(*d, Sha256Hex(bytes));
  auto got = store_->Get(*d);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, bytes);
  EXPECT_TRUE(store_->Exists(*d).value());
  EXPECT_EQ(store_->Size(*d).value(), static_cast<int64_t>(bytes.size()));
  EXPECT_TRUE(store_->Verify(*d).ok());
  auto path = store_->Path(*d);
  ASSERT_TRUE(path.ok());
  EXPECT_EQ(*path, dir_.path() + "/blobs/" + d->substr(0, 2) + "/" + *d);
}

TEST_F(BlobStoreTest, EmptyAndBinaryBlobs) {
  std::string binary;
  for (int i = 0; i < 70000; ++i) binary.push_back(static_cast<char>(i % 256));
  for (const std::string& bytes : {std::string(), binary}) {
    auto d = store_->Put(bytes);
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(store_->Get(*d).value(), bytes);
  }
}

TEST_F(BlobStoreTest, PutIsIdempotentAndRefreshesMtime) {
  auto d1 = store_->Put("same");
  ASSERT_TRUE(d1.ok());
  const std::string path = store_->Path(*d1).value();
  // Age the file, then put the same content again: mtime must move forward, content unchanged.
  struct timespec old_times[2] = {{1000, 0}, {1000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), old_times, 0), 0);
  ASSERT_LT(store_->LastWritten(*d1).value(), absl::FromUnixSeconds(2000));
  auto d2 = store_->Put("same");
  ASSERT_TRUE(d2.ok());
  EXPECT_EQ(*d1, *d2);
  EXPECT_GT(store_->LastWritten(*d1).value(), absl::Now() - absl::Minutes(1));
  EXPECT_EQ(store_->ListDigests().value().size(), 1u);
}

TEST_F(BlobStoreTest, PutFileStreams) {
  const std::string src = dir_.path() + "/src.bin";
  std::string bytes(200000, 'x');
  bytes[12345] = 'y';
  std::ofstream(src, std::ios::binary) << bytes;
  auto d = store_->PutFile(src);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(*d, Sha256Hex(bytes));
  EXPECT_EQ(store_->Get(*d).value(), bytes);
  EXPECT_EQ(store_->PutFile(src).value(), *d);  // idempotent
  EXPECT_EQ(store_->PutFile(dir_.path() + "/missing").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(BlobStoreTest, CorruptionIsDataLoss) {
  auto d = store_->Put("precious bytes");
  ASSERT_TRUE(d.ok());
  std::ofstream(store_->Path(*d).value(), std::ios::binary | std::ios::trunc) << "tampered";
  EXPECT_EQ(store_->Get(*d).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store_->Verify(*d).code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(store_->Get(*d).status().message().find(*d), std::string::npos);
}

TEST_F(BlobStoreTest, PutRepairsATruncatedCopy) {
  auto d = store_->Put("complete content");
  ASSERT_TRUE(d.ok());
  std::ofstream(store_->Path(*d).value(), std::ios::binary | std::ios::trunc) << "compl";
  EXPECT_EQ(store_->Verify(*d).code(), absl::StatusCode::kDataLoss);
  ASSERT_EQ(store_->Put("complete content").value(), *d);
  EXPECT_EQ(store_->Get(*d).value(), "complete content");
}

TEST_F(BlobStoreTest, MissingAndMalformedDigests) {
  const std::string absent = Sha256Hex("never stored");
  EXPECT_EQ(store_->Get(absent).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Verify(absent).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Size(absent).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->LastWritten(absent).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(store_->Exists(absent).value());
  for (const std::string& bad : {std::string(""), std::string("abc"), std::string("../../etc/passwd"), std::string(64, 'G'),
                                std::string(64, 'A'), std::string(63, 'a')}) {
    EXPECT_EQ(store_->Get(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(store_->Path(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(store_->Exists(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(store_->Delete(bad).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_TRUE(BlobStore::IsValidDigest(absent));
}

TEST_F(BlobStoreTest, ListAndDelete) {
  std::vector<std::string> digests;
  for (int i = 0; i < 20; ++i) digests.push_back(store_->Put("blob " + std::to_string(i)).value());
  auto listed = store_->ListDigests();
  ASSERT_TRUE(listed.ok());
  std::sort(listed->begin(), listed->end());
  std::vector<std::string> want = digests;
  std::sort(want.begin(), want.end());
  EXPECT_EQ(*listed, want);
  ASSERT_TRUE(store_->Delete(digests[0]).ok());
  EXPECT_TRUE(store_->Delete(digests[0]).ok());  // already absent is fine
  EXPECT_FALSE(store_->Exists(digests[0]).value());
  EXPECT_EQ(store_->ListDigests().value().size(), 19u);
}

TEST_F(BlobStoreTest, CollectTempsRemovesOnlyOldTemporaries) {
  const std::string old_tmp = dir_.path() + "/blobs/tmp/crashed-writer.tmp";
  const std::string new_tmp = dir_.path() + "/blobs/tmp/in-flight.tmp";
  std::ofstream(old_tmp) << "partial";
  std::ofstream(new_tmp) << "partial";
  struct timespec old_times[2] = {{1000, 0}, {1000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, old_tmp.c_str(), old_times, 0), 0);
  auto removed = store_->CollectTemps(absl::Minutes(5));
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(*removed, 1);
  EXPECT_EQ(::access(new_tmp.c_str(), F_OK), 0);
  EXPECT_EQ(::access(old_tmp.c_str(), F_OK), -1);
  EXPECT_TRUE(store_->ListDigests().value().empty());  // temporaries are never listed as blobs
}

TEST_F(BlobStoreTest, ConcurrentPutsOfSameContent) {
  const std::string bytes(100000, 'z');
  std::vector<std::thread> threads;
  std::vector<std::string> results(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] { results[t] = store_->Put(bytes).value_or(""); });
  }
  for (auto& th : threads) th.join();
  for (const auto& r : results) EXPECT_EQ(r, Sha256Hex(bytes));
  EXPECT_EQ(store_->Get(results[0]).value(), bytes);
  EXPECT_EQ(store_->ListDigests().value().size(), 1u);
}

}  // namespace
}  // namespace tessera::storage
