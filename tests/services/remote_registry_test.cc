// The registry's blob seam (storage::Registry::Options::blob_backend, issue 21 roles): a trainer or
// replica opens the SHARED registry database with a RemoteBlobStore, so its publishes upload the blob
// to the control plane and are checked against what the control plane holds; GC stays with the owner.
// A real control-plane TesseraServer on 127.0.0.1:0; the registry database is SQLite (the control
// plane's data dir) or, as remote_registry_test_postgres, a throwaway PostgreSQL server
// (tests/storage/test_database.h).
#include <filesystem>
#include <random>

#include "core/util/sha256.h"
#include "gtest/gtest.h"
#include "services/blob_client.h"
#include "services/remote_blob_store.h"
#include "tests/services/test_server.h"
#include "tests/storage/temp_dir.h"
#include "tests/storage/test_database.h"

namespace tessera::services {
namespace {

using storage::testing::TempDir;
using storage::testing::TestDb;
using testing::TestServer;
using testing::TestServerOptions;

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

class RemoteRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TESSERA_REQUIRE_DB(db_);
    TestServerOptions o;
    o.registry = db_.url();
    server_ = std::make_unique<TestServer>(o);
    server_->CreateTenant("acme");
  }

  // A process that does not own the blobs: its own data dir (SQLite: the control plane's, where the
  // shared registry.db is), its own cache dir, the control plane's ADMIN key.
  std::shared_ptr<RemoteBlobStore> Remote(const TempDir& dir) {
    absl::StatusOr<std::unique_ptr<BlobClient>> client = BlobClient::Connect(server_->address(), server_->admin_key());
    EXPECT_TRUE(client.ok()) << client.status();
    if (!client.ok()) return nullptr;
    absl::StatusOr<std::unique_ptr<RemoteBlobStore>> r =
        RemoteBlobStore::Create(*std::move(client), dir.path() + "/blob-cache");
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? std::shared_ptr<RemoteBlobStore>(*std::move(r)) : nullptr;
  }
  std::unique_ptr<storage::Registry> OpenRemote(const TempDir& dir, std::shared_ptr<RemoteBlobStore> remote) {
    storage::Registry::Options o = db_.Options();
    o.blob_backend = std::move(remote);
    const std::string data_dir = db_.url().empty() ? server_->data_dir() : dir.path() + "/data";
    absl::StatusOr<std::unique_ptr<storage::Registry>> r = storage::Registry::Open(data_dir, o);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *std::move(r) : nullptr;
  }

  TestDb db_;
  std::unique_ptr<TestServer> server_;
  TempDir trainer_dir_, replica_dir_;
};

TEST_F(RemoteRegistryTest, TrainerPublishUploadsTheBlobToTheControlPlane) {
  std::shared_ptr<RemoteBlobStore> remote = Remote(trainer_dir_);
  ASSERT_NE(remote, nullptr);
  std::unique_ptr<storage::Registry> trainer = OpenRemote(trainer_dir_, remote);
  ASSERT_NE(trainer, nullptr);
  EXPECT_EQ(trainer->owned_blobs(), nullptr);
  ASSERT_NE(server_->registry().owned_blobs(), nullptr);
  if (!db_.url().empty()) {
    EXPECT_FALSE(std::filesystem::exists(trainer_dir_.path() + "/data/blobs"));  // nothing owned here
  }

  const std::string overlay = RandomBytes((2 << 20) + 17, 5);
  absl::StatusOr<std::string> digest = trainer->blobs().Put(overlay);
  ASSERT_TRUE(digest.ok()) << digest.status();
  EXPECT_TRUE(server_->registry().owned_blobs()->Verify(*digest).ok());
  EXPECT_EQ(remote->client().counts().puts, 1);

  storage::NewVersion v;
  v.tenant_id = "acme";
  v.slots_json = "[[0,1]]";
  v.val_loss = 1.0;
  v.base_val_loss = 2.0;
  v.blob_digest = *digest;
  absl::StatusOr<storage::ExpertVersion> published = trainer->PublishVersion(v, "system");
  ASSERT_TRUE(published.ok()) << published.status();
  EXPECT_EQ(published->size_bytes, static_cast<int64_t>(overlay.size()));  // the control plane's Size
  EXPECT_GE(remote->client().counts().stats, 1);  // checked with the owner inside the transaction

  // The control plane sees the row (shared database) and holds its blob.
  absl::StatusOr<storage::ExpertVersion> there = server_->registry().GetVersion("acme", published->version);
  ASSERT_TRUE(there.ok()) << there.status();
  EXPECT_EQ(there->sha256, *digest);
  EXPECT_EQ(server_->registry().blobs().Get(there->sha256).value_or(""), overlay);

  // A replica (another cache) loads the overlay by the row's digest, verified.
  std::shared_ptr<RemoteBlobStore> replica_blobs = Remote(replica_dir_);
  ASSERT_NE(replica_blobs, nullptr);
  std::unique_ptr<storage::Registry> replica = OpenRemote(replica_dir_, replica_blobs);
  ASSERT_NE(replica, nullptr);
  absl::StatusOr<storage::ExpertVersion> seen = replica->GetVersion("acme", published->version);
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(replica->blobs().Get(seen->sha256).value_or(""), overlay);
  EXPECT_EQ(replica_blobs->stats().fetches, 1);
  EXPECT_EQ(replica->blobs().Get(seen->sha256).value_or(""), overlay);
  EXPECT_EQ(replica_blobs->stats().fetches, 1);  // second read from the cache

  // Datasets take the same path.
  absl::StatusOr<std::string> ds_blob = trainer->blobs().Put("{\"prompt\": \"a\", \"completion\": \"b\"}\n");
  ASSERT_TRUE(ds_blob.ok()) << ds_blob.status();
  storage::NewDataset d;
  d.tenant_id = "acme";
  d.name = "train";
  d.format = "jsonl";
  d.blob_digest = *ds_blob;
  d.num_examples = 1;
  ASSERT_TRUE(trainer->CreateDataset(d, "system").ok());
  EXPECT_TRUE(server_->registry().owned_blobs()->Verify(*ds_blob).ok());
}

TEST_F(RemoteRegistryTest, PublishChecksTheOwnerNotTheLocalCache) {
  std::shared_ptr<RemoteBlobStore> remote = Remote(trainer_dir_);
  ASSERT_NE(remote, nullptr);
  std::unique_ptr<storage::Registry> trainer = OpenRemote(trainer_dir_, remote);
  ASSERT_NE(trainer, nullptr);
  // Only in this process's cache (as if the upload had never happened): the row must not be written.
  const std::string bytes = "weights the control plane never received";
  ASSERT_TRUE(remote->cache().Put(bytes).ok());
  storage::NewVersion v;
  v.tenant_id = "acme";
  v.slots_json = "[[0,1]]";
  v.blob_digest = Sha256Hex(bytes);
  absl::StatusOr<storage::ExpertVersion> published = trainer->PublishVersion(v, "system");
  EXPECT_EQ(published.status().code(), absl::StatusCode::kFailedPrecondition) << published.status();
  EXPECT_TRUE(server_->registry().ListVersions("acme").value().empty());
}

TEST_F(RemoteRegistryTest, GarbageCollectionBelongsToTheOwner) {
  std::shared_ptr<RemoteBlobStore> remote = Remote(trainer_dir_);
  ASSERT_NE(remote, nullptr);
  std::unique_ptr<storage::Registry> trainer = OpenRemote(trainer_dir_, remote);
  ASSERT_NE(trainer, nullptr);
  absl::StatusOr<std::string> orphan = trainer->blobs().Put("an upload nothing ever named");
  ASSERT_TRUE(orphan.ok()) << orphan.status();
  EXPECT_EQ(trainer->CollectGarbage(absl::ZeroDuration()).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(trainer->DeleteBlobsIfUnreferenced({*orphan}, absl::Now()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(trainer->blobs().Exists(*orphan).value_or(false), true);

  // The owner collects it; the trainer then learns from the owner that it is gone.
  absl::StatusOr<storage::GcStats> gc = server_->registry().CollectGarbage(absl::ZeroDuration());
  ASSERT_TRUE(gc.ok()) << gc.status();
  EXPECT_EQ(gc->blobs_deleted, 1);
  EXPECT_EQ(trainer->blobs().Exists(*orphan).value_or(true), false);
}

TEST_F(RemoteRegistryTest, AServerWithRemoteBlobsServesNoBlobsAndRunsNoGc) {
  std::shared_ptr<RemoteBlobStore> remote = Remote(replica_dir_);
  ASSERT_NE(remote, nullptr);
  TestServerOptions o;
  o.registry = db_.url();
  if (db_.url().empty()) o.data_dir = server_->data_dir();  // the shared registry.db
  o.blob_backend = remote;
  TestServer replica(o);
  EXPECT_EQ(replica.registry().owned_blobs(), nullptr);
  EXPECT_EQ(replica.server().blob_gc().RunOnce().status().code(), absl::StatusCode::kFailedPrecondition);
  // Its port has no Blobs service: a client pointed at it by mistake is told so.
  absl::StatusOr<std::unique_ptr<BlobClient>> wrong = BlobClient::Connect(replica.address(), server_->admin_key());
  ASSERT_TRUE(wrong.ok()) << wrong.status();
  EXPECT_EQ((*wrong)->Stat(Sha256Hex("x")).status().code(), absl::StatusCode::kUnimplemented);
  // Its registry reads through the control plane.
  absl::StatusOr<std::string> d = server_->registry().blobs().Put("served by the owner");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(replica.registry().blobs().Get(*d).value_or(""), "served by the owner");
}

}  // namespace
}  // namespace tessera::services
