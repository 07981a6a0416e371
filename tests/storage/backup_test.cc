// storage/backup.h: the snapshot is one commit of a database that keeps being written, with exactly
// the blobs its rows reference (also ones the GC deletes afterwards); installing refuses a non-empty
// data dir, and a job RUNNING at the backup is requeued by the restored registry's first Open.
#include "storage/backup.h"

#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "absl/time/clock.h"
#include "core/util/sha256.h"
#include "tests/storage/registry_test_util.h"

namespace tessera::storage::testing {
namespace {

namespace fs = std::filesystem;

class BackupTest : public RegistryTest {};

TEST_F(BackupTest, SnapshotHoldsTheRegistryAndExactlyTheBlobsItReferences) {
  MakeTenant("acme");
  const std::string ds = MakeDataset("acme");
  const int64_t v1 = Publish("acme");
  ASSERT_EQ(v1, 1);
  const std::string job = MakeJob("acme", ds);
  auto claimed = reg_->ClaimNextJob("worker-1", absl::Seconds(30));
  ASSERT_OK(claimed);
  JobUpdate u;
  u.checkpoint = PutBlob("checkpoint bytes");
  ASSERT_OK(reg_->UpdateRunningJob(job, "worker-1", u));
  const std::string stray = PutBlob("nobody references this");

  auto snap = RegistrySnapshot::Take(dir_.path());
  ASSERT_OK(snap);
  const std::vector<BackupFile>& files = (*snap)->files();
  ASSERT_EQ(files.size(), 4u);  // registry.db + dataset + version + checkpoint
  EXPECT_EQ(files[0].path, kBackupRegistryFile);
  std::set<std::string> blobs;
  for (size_t i = 1; i < files.size(); ++i) blobs.insert(files[i].sha256);
  auto version = reg_->GetVersion("acme", 1);
  auto dataset = reg_->GetDataset("acme", ds);
  ASSERT_OK(version);
  ASSERT_OK(dataset);
  EXPECT_EQ(blobs, (std::set<std::string>{version->sha256, dataset->sha256, *u.checkpoint}));
  EXPECT_EQ(blobs.count(stray), 0u);
  for (const BackupFile& f : files) {
    auto sha = Sha256FileHex((*snap)->dir() + "/" + f.path);
    ASSERT_OK(sha);
    EXPECT_EQ(*sha, f.sha256) << f.path;
    EXPECT_EQ(static_cast<int64_t>(fs::file_size((*snap)->dir() + "/" + f.path)), f.size_bytes);
  }
  EXPECT_EQ((*snap)->schema_version(), Registry::LatestSchemaVersion());
  EXPECT_EQ((*snap)->counts().tenants, 1);
  EXPECT_EQ((*snap)->counts().versions, 1);
  EXPECT_EQ((*snap)->counts().jobs_unfinished, 1);
  // One self-contained file: no WAL beside the copy.
  EXPECT_FALSE(fs::exists((*snap)->dir() + "/registry.db-wal"));

  // The staging dir goes with the snapshot.
  const std::string staging = (*snap)->dir();
  snap->reset();
  EXPECT_FALSE(fs::exists(staging));
}

TEST_F(BackupTest, ABlobCollectedAfterTheSnapshotStaysInTheBackup) {
  MakeTenant("acme");
  const std::string ds = MakeDataset("acme");
  auto dataset = reg_->GetDataset("acme", ds);
  ASSERT_OK(dataset);
  auto snap = RegistrySnapshot::Take(dir_.path());
  ASSERT_OK(snap);
  // The dataset goes, and the collector deletes its blob (no grace period).
  ASSERT_OK(reg_->DeleteDataset("acme", ds, "admin-key"));
  auto gc = reg_->CollectGarbage(absl::ZeroDuration());
  ASSERT_OK(gc);
  EXPECT_EQ(gc->blobs_deleted, 1);
  EXPECT_FALSE(*reg_->blobs().Exists(dataset->sha256));
  // The snapshot still has the dataset row and its bytes (a hard link, not a name in the store).
  const std::string path = (*snap)->dir() + "/blobs/" + dataset->sha256.substr(0, 2) + "/" + dataset->sha256;
  auto sha = Sha256FileHex(path);
  ASSERT_OK(sha);
  EXPECT_EQ(*sha, dataset->sha256);
  auto info = InspectRegistryFile((*snap)->dir() + "/registry.db");
  ASSERT_OK(info);
  EXPECT_EQ(info->counts.datasets, 1);
}

TEST_F(BackupTest, SnapshotsWhileWritersRunAreEachOneConsistentCommit) {
  MakeTenant("acme");
  std::atomic<bool> stop{false};
  std::atomic<int> published{0};
  std::atomic<bool> writer_done{false};
  std::thread writer([&] {
    struct Done {
      std::atomic<bool>& done;
      ~Done() { done = true; }
    } mark{writer_done};
    while (!stop.load()) {
      NewVersion v;
      v.tenant_id = "acme";
      v.slots_json = "[[0,1]]";
      auto d = reg_->blobs().Put("weights #" + std::to_string(published.load()));
      if (!d.ok()) break;
      v.blob_digest = *d;
      auto r = reg_->PublishVersion(v, "admin-key");
      if (!r.ok()) break;
      auto m = reg_->Promote("acme", r->version, "admin-key");
      if (!m.ok()) break;
      published.fetch_add(1);
    }
  });
  int last_versions = -1;
  // At least 10 snapshots, and on until the writer committed twice (a busy machine may start it late),
  // so some snapshots surely overlap writes.
  const absl::Time deadline = absl::Now() + absl::Seconds(120);
  for (int i = 0; i < 10 || (published.load() < 2 && !writer_done.load() && absl::Now() < deadline); ++i) {
    auto snap = RegistrySnapshot::Take(dir_.path());
    ASSERT_OK(snap);
    auto info = InspectRegistryFile((*snap)->dir() + "/registry.db");
    ASSERT_OK(info);
    // Every referenced blob is in the snapshot; versions only grow between snapshots.
    EXPECT_EQ((*snap)->files().size(), info->referenced_blobs.size() + 1);
    EXPECT_EQ(static_cast<int64_t>(info->referenced_blobs.size()), info->counts.versions);
    EXPECT_GE(info->counts.versions, last_versions);
    last_versions = static_cast<int>(info->counts.versions);
    for (const BackupFile& f : (*snap)->files()) {
      auto sha = Sha256FileHex((*snap)->dir() + "/" + f.path);
      ASSERT_OK(sha);
      EXPECT_EQ(*sha, f.sha256);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stop = true;
  writer.join();
  EXPECT_GT(published.load(), 0);
}

TEST_F(BackupTest, InstallRefusesANonEmptyDataDirAndRequeuesRunningJobs) {
  MakeTenant("acme");
  const std::string ds = MakeDataset("acme");
  const std::string job = MakeJob("acme", ds);
  ASSERT_OK(reg_->ClaimNextJob("worker-1", absl::Seconds(300)));
  JobUpdate u;
  u.checkpoint = PutBlob("checkpoint");
  ASSERT_OK(reg_->UpdateRunningJob(job, "worker-1", u));
  auto snap = RegistrySnapshot::Take(dir_.path());
  ASSERT_OK(snap);

  TempDir target_parent;
  const std::string busy = target_parent.path() + "/busy";
  fs::create_directories(busy);
  std::ofstream(busy + "/something") << "x";
  absl::Status s = InstallBackup((*snap)->dir(), (*snap)->files(), busy);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("not empty"), std::string::npos) << s;

  std::vector<BackupFile> escaping = (*snap)->files();
  escaping[1].path = "../evil";
  EXPECT_EQ(InstallBackup((*snap)->dir(), escaping, target_parent.path() + "/x").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(target_parent.path() + "/x"));

  const std::string fresh = target_parent.path() + "/fresh";
  fs::create_directories(fresh);  // an empty directory is fine
  ASSERT_OK(InstallBackup((*snap)->dir(), (*snap)->files(), fresh));
  Registry::Options o;
  auto restored = Registry::Open(fresh, o);  // requeues the job whose lease the install expired
  ASSERT_OK(restored);
  auto j = (*restored)->GetJob("acme", job);
  ASSERT_OK(j);
  EXPECT_EQ(j->state, JobState::kQueued);
  EXPECT_EQ(j->checkpoint, *u.checkpoint);
  EXPECT_OK((*restored)->blobs().Verify(*u.checkpoint));
  EXPECT_OK((*restored)->CheckIntegrity());
  // No temporary sibling left behind.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(target_parent.path())) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 2);  // busy, fresh
}

TEST_F(BackupTest, TakeRemovesStagingDirsOfDeadProcesses) {
  const std::string stale = dir_.path() + "/backup-staging/999999999-abc";
  fs::create_directories(stale + "/blobs");
  auto snap = RegistrySnapshot::Take(dir_.path());
  ASSERT_OK(snap);
  EXPECT_FALSE(fs::exists(stale));
}

TEST(BackupNoRegistryTest, TakeWithoutRegistryIsNotFound) {
  TempDir dir;
  EXPECT_EQ(RegistrySnapshot::Take(dir.path()).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace tessera::storage::testing
