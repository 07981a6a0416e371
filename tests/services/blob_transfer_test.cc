// tessera.internal.v1.Blobs end to end (issue 21, roles): a real control-plane TesseraServer on
// 127.0.0.1:0 with its registry in a temp dir, and the replica side -- BlobClient and RemoteBlobStore
// with their own cache dirs -- calling it over gRPC. No mocks: corruption is made by editing files.
#include <fstream>
#include <random>
#include <string>

#include "core/util/sha256.h"
#include "gtest/gtest.h"
#include "services/blob_client.h"
#include "services/remote_blob_store.h"
#include "tessera/internal/v1/blobs.grpc.pb.h"
#include "tests/services/test_server.h"
#include "tests/storage/temp_dir.h"

namespace tessera::services {
namespace {

namespace pb = ::tessera::internal::v1;
using storage::testing::TempDir;
using testing::Ctx;
using testing::TestServer;

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

// Flips one byte in place (same size, so only the hash can tell).
void FlipByte(const std::string& path, size_t at) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.is_open()) << path;
  f.seekg(static_cast<std::streamoff>(at));
  char c = 0;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(at));
  f.put(static_cast<char>(c ^ 0x5a));
}

// RPCs of `method` the server finished with code OK (its own tessera_rpc_requests_total).
double ServedOk(TestServer& server, const std::string& method) {
  double n = 0;
  for (const auto& [labels, value] : server.server().metrics().Series(kRequestsMetric)) {
    bool m = false, ok = false;
    for (const auto& [k, v] : labels) {
      if (k == "method" && v == method) m = true;
      if (k == "code" && v == "OK") ok = true;
    }
    if (m && ok) n += value;
  }
  return n;
}

class BlobTransferTest : public ::testing::Test {
 protected:
  std::unique_ptr<RemoteBlobStore> Replica(const TempDir& cache, const std::string& key) {
    absl::StatusOr<std::unique_ptr<BlobClient>> client = BlobClient::Connect(server_.address(), key);
    EXPECT_TRUE(client.ok()) << client.status();
    if (!client.ok()) return nullptr;
    absl::StatusOr<std::unique_ptr<RemoteBlobStore>> r =
        RemoteBlobStore::Create(*std::move(client), cache.path() + "/blob-cache");
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *std::move(r) : nullptr;
  }
  std::unique_ptr<RemoteBlobStore> Replica(const TempDir& cache) { return Replica(cache, server_.admin_key()); }

  TestServer server_;
  TempDir cache_a_, cache_b_;
};

TEST_F(BlobTransferTest, LargeBlobRoundTripsInSeveralChunks) {
  const std::string bytes = RandomBytes((3 << 20) + 12345, 7);  // 4 chunks of 1 MiB
  auto trainer = Replica(cache_a_);
  ASSERT_NE(trainer, nullptr);
  absl::StatusOr<std::string> digest = trainer->Put(bytes);
  ASSERT_TRUE(digest.ok()) << digest.status();
  EXPECT_EQ(*digest, Sha256Hex(bytes));
  EXPECT_EQ(trainer->stats().uploads, 1);
  EXPECT_EQ(trainer->client().counts().put_bytes, static_cast<int64_t>(bytes.size()));

  // Stored (and verifiable) on the control plane, in its own data dir.
  absl::StatusOr<std::string> owned = server_.registry().blobs().Get(*digest);
  ASSERT_TRUE(owned.ok()) << owned.status();
  EXPECT_EQ(*owned, bytes);
  EXPECT_EQ(ServedOk(server_, "Blobs/Put"), 1);

  // Another process (fresh cache) sees it through Stat and fetches it whole.
  auto replica = Replica(cache_b_);
  ASSERT_NE(replica, nullptr);
  EXPECT_EQ(replica->Exists(*digest).value_or(false), true);
  EXPECT_EQ(replica->Size(*digest).value_or(-1), static_cast<int64_t>(bytes.size()));
  absl::StatusOr<std::string> got = replica->Get(*digest);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, bytes);
  EXPECT_EQ(replica->stats().fetches, 1);
  EXPECT_EQ(replica->client().counts().gets, 1);
  EXPECT_EQ(ServedOk(server_, "Blobs/Get"), 1);
  EXPECT_TRUE(replica->cache().Verify(*digest).ok());

  // An empty blob is a blob too (one chunk without data).
  absl::StatusOr<std::string> empty = trainer->Put("");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(*empty, Sha256Hex(""));
  absl::StatusOr<std::string> empty_back = Replica(cache_b_)->Get(*empty);
  ASSERT_TRUE(empty_back.ok()) << empty_back.status();
  EXPECT_EQ(*empty_back, "");
}

TEST_F(BlobTransferTest, SecondReadIsACacheHitWithoutAnRpc) {
  const std::string bytes = RandomBytes(2 << 20, 11);
  ASSERT_TRUE(server_.registry().blobs().Put(bytes).ok());
  const std::string digest = Sha256Hex(bytes);
  auto replica = Replica(cache_a_);
  ASSERT_NE(replica, nullptr);
  ASSERT_EQ(replica->Get(digest).value_or(""), bytes);
  ASSERT_EQ(ServedOk(server_, "Blobs/Get"), 1);

  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(replica->Get(digest).value_or(""), bytes);
  }
  absl::StatusOr<std::string> path = replica->Path(digest);
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(path->rfind(cache_a_.path(), 0), 0u) << *path;  // the cached file, not the server's
  EXPECT_TRUE(replica->Verify(digest).ok());
  EXPECT_EQ(replica->client().counts().gets, 1);
  EXPECT_EQ(replica->stats().fetches, 1);
  EXPECT_EQ(replica->stats().cache_hits, 5);
  EXPECT_EQ(ServedOk(server_, "Blobs/Get"), 1);  // the server saw no second Get

  // Put keeps a local copy: reading back what this process uploaded costs no Get either.
  const std::string mine = RandomBytes(5000, 12);
  absl::StatusOr<std::string> d = replica->Put(mine);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(replica->Get(*d).value_or(""), mine);
  EXPECT_EQ(replica->client().counts().gets, 1);
}

TEST_F(BlobTransferTest, CorruptCachedCopyIsDetectedAndRefetched) {
  const std::string bytes = RandomBytes((1 << 20) + 7, 21);
  ASSERT_TRUE(server_.registry().blobs().Put(bytes).ok());
  const std::string digest = Sha256Hex(bytes);
  auto replica = Replica(cache_a_);
  ASSERT_NE(replica, nullptr);
  ASSERT_EQ(replica->Get(digest).value_or(""), bytes);
  FlipByte(replica->cache().Path(digest).value(), 1000);
  ASSERT_FALSE(replica->cache().Verify(digest).ok());

  absl::StatusOr<std::string> again = replica->Get(digest);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, bytes);
  EXPECT_EQ(replica->stats().corrupt_dropped, 1);
  EXPECT_EQ(replica->stats().fetches, 2);
  EXPECT_EQ(ServedOk(server_, "Blobs/Get"), 2);
  EXPECT_TRUE(replica->cache().Verify(digest).ok());  // the good copy replaced it

  // Verify takes the same path.
  FlipByte(replica->cache().Path(digest).value(), 5);
  EXPECT_TRUE(replica->Verify(digest).ok());
  EXPECT_EQ(replica->stats().corrupt_dropped, 2);
  EXPECT_TRUE(replica->cache().Verify(digest).ok());
}

TEST_F(BlobTransferTest, CorruptBlobOnTheControlPlaneIsDataLossAndNeverCached) {
  const std::string bytes = RandomBytes((2 << 20) + 3, 31);
  ASSERT_TRUE(server_.registry().blobs().Put(bytes).ok());
  const std::string digest = Sha256Hex(bytes);
  FlipByte(server_.registry().blobs().Path(digest).value(), (2 << 20) - 1);
  auto replica = Replica(cache_a_);
  ASSERT_NE(replica, nullptr);
  absl::StatusOr<std::string> got = replica->Get(digest);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss) << got.status();
  EXPECT_EQ(replica->cache().Exists(digest).value_or(true), false);
  EXPECT_EQ(replica->Path(digest).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(replica->cache().Exists(digest).value_or(true), false);
  EXPECT_EQ(replica->stats().fetches, 0);
}

TEST_F(BlobTransferTest, UploadWhoseBytesDoNotMatchItsDigestIsRefused) {
  const std::string bytes = RandomBytes((1 << 20) + 99, 41);
  const std::string claimed = Sha256Hex("something else");
  auto stub = pb::Blobs::NewStub(server_.channel());
  auto ctx = Ctx(server_.admin_key());
  pb::PutBlobResponse resp;
  auto writer = stub->Put(ctx.get(), &resp);
  pb::BlobChunk first;
  first.set_digest(claimed);
  first.set_total_size(static_cast<int64_t>(bytes.size()));
  first.set_data(bytes.substr(0, 1 << 20));
  ASSERT_TRUE(writer->Write(first));
  pb::BlobChunk second;
  second.set_offset(1 << 20);
  second.set_data(bytes.substr(1 << 20));
  ASSERT_TRUE(writer->Write(second));
  writer->WritesDone();
  grpc::Status st = writer->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DATA_LOSS) << st.error_message();
  // Nothing stored under either name.
  EXPECT_EQ(server_.registry().blobs().Exists(claimed).value_or(true), false);
  EXPECT_EQ(server_.registry().blobs().Exists(Sha256Hex(bytes)).value_or(true), false);
  EXPECT_EQ(ServedOk(server_, "Blobs/Put"), 0);

  // Out-of-order chunks and a short upload are refused too.
  {
    auto c2 = Ctx(server_.admin_key());
    auto w2 = stub->Put(c2.get(), &resp);
    pb::BlobChunk c;
    c.set_digest(Sha256Hex(bytes));
    c.set_total_size(static_cast<int64_t>(bytes.size()));
    c.set_offset(5);
    c.set_data("x");
    w2->Write(c);
    w2->WritesDone();
    EXPECT_EQ(w2->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    auto c3 = Ctx(server_.admin_key());
    auto w3 = stub->Put(c3.get(), &resp);
    pb::BlobChunk c;
    c.set_digest(Sha256Hex(bytes));
    c.set_total_size(static_cast<int64_t>(bytes.size()));
    c.set_data(bytes.substr(0, 100));
    w3->Write(c);
    w3->WritesDone();
    EXPECT_EQ(w3->Finish().error_code(), grpc::StatusCode::DATA_LOSS);
  }
  EXPECT_EQ(server_.registry().blobs().Exists(Sha256Hex(bytes)).value_or(true), false);
}

TEST_F(BlobTransferTest, UnknownDigestIsNotFoundAndMalformedIsInvalid) {
  auto replica = Replica(cache_a_);
  ASSERT_NE(replica, nullptr);
  const std::string unknown = Sha256Hex("never stored");
  EXPECT_EQ(replica->Get(unknown).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(replica->Exists(unknown).value_or(true), false);
  EXPECT_EQ(replica->Size(unknown).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(replica->Path(unknown).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(replica->Get("ABC").status().code(), absl::StatusCode::kInvalidArgument);

  // The server checks digests itself (a raw call skips the client's check).
  auto stub = pb::Blobs::NewStub(server_.channel());
  auto ctx = Ctx(server_.admin_key());
  pb::StatBlobRequest req;
  req.set_digest("../../registry.db");
  pb::StatBlobResponse resp;
  EXPECT_EQ(stub->Stat(ctx.get(), req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  auto ctx2 = Ctx(server_.admin_key());
  pb::GetBlobRequest get;
  get.set_digest("../registry.db");
  auto reader = stub->Get(ctx2.get(), get);
  pb::BlobChunk c;
  EXPECT_FALSE(reader->Read(&c));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(BlobTransferTest, OnlyAdminKeysMayUseTheService) {
  const std::string bytes = "tenant overlay bytes";
  ASSERT_TRUE(server_.registry().blobs().Put(bytes).ok());
  const std::string digest = Sha256Hex(bytes);
  const std::string tenant_key = server_.CreateTenant("acme");

  auto tenant = Replica(cache_a_, tenant_key);
  ASSERT_NE(tenant, nullptr);
  EXPECT_EQ(tenant->Get(digest).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(tenant->Exists(digest).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(tenant->Put("from a tenant").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(tenant->cache().Exists(digest).value_or(true), false);

  auto stranger = Replica(cache_b_, "tsk_not_a_real_key");
  ASSERT_NE(stranger, nullptr);
  EXPECT_EQ(stranger->Get(digest).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(stranger->Size(digest).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(stranger->Put("from nobody").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(server_.registry().blobs().Exists(Sha256Hex("from a tenant")).value_or(true), false);
  EXPECT_EQ(server_.registry().blobs().Exists(Sha256Hex("from nobody")).value_or(true), false);

  EXPECT_EQ(BlobClient::Connect(server_.address(), "").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(BlobTransferTest, UnreachableControlPlaneIsUnavailable) {
  BlobClient::Options o;
  o.timeout = absl::Seconds(2);
  // A socket nothing listens on.
  const std::string address = "unix:" + cache_a_.path() + "/nobody.sock";
  const std::string key = server_.admin_key();
  absl::StatusOr<std::unique_ptr<BlobClient>> c = BlobClient::Connect(address, key, nullptr, o);
  ASSERT_TRUE(c.ok()) << c.status();
  absl::StatusOr<std::string> got = (*c)->Get(Sha256Hex("x"));
  EXPECT_TRUE(got.status().code() == absl::StatusCode::kUnavailable ||
              got.status().code() == absl::StatusCode::kDeadlineExceeded)
      << got.status();
  EXPECT_NE(got.status().message().find(address), std::string::npos) << got.status();
}

}  // namespace
}  // namespace tessera::services
