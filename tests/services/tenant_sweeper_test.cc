// TenantSweeper (services/tenant_sweeper.h) on a real registry (SQLite here; PostgreSQL as
// services_tenant_sweeper_test_postgres): a tenant deleted, or deleted and re-created under the same id,
// between two rounds is reported once; the blob cache loses exactly the blobs no row references any
// more and that are older than the grace.
#include "services/tenant_sweeper.h"

#include <sys/stat.h>

#include <chrono>
#include <filesystem>

#include "gtest/gtest.h"
#include "tests/storage/temp_dir.h"
#include "tests/storage/test_database.h"

namespace tessera::services {
namespace {

using storage::testing::TempDir;
using storage::testing::TestDb;

void Age(storage::BlobStore& store, const std::string& digest) {
  const std::string path = store.Path(digest).value();
  std::filesystem::last_write_time(path, std::filesystem::last_write_time(path) - std::chrono::minutes(5));
}

TEST(TenantSweeperTest, ReportsDeletedAndRecreatedTenantsAndPrunesTheirCachedBlobs) {
  TestDb db;
  TESSERA_REQUIRE_DB(db);
  TempDir dir;
  auto registry = storage::Registry::Open(dir.path() + "/data", db.Options());
  ASSERT_TRUE(registry.ok()) << registry.status();
  storage::Registry& reg = **registry;
  auto cache = storage::BlobStore::Create(dir.path() + "/cache");
  ASSERT_TRUE(cache.ok()) << cache.status();

  for (const char* t : {"acme", "globex", "initech"}) ASSERT_TRUE(reg.CreateTenant(t, t, "test").ok());
  // Each tenant's dataset blob, in the owner's store and (as a follower would have fetched it) the cache.
  std::map<std::string, std::string> digest;
  for (const char* t : {"acme", "globex", "initech"}) {
    const std::string bytes = std::string("{\"text\":\"") + t + "\"}\n";
    digest[t] = reg.blobs().Put(bytes).value();
    ASSERT_EQ((*cache)->Put(bytes).value(), digest[t]);
    storage::NewDataset d;
    d.tenant_id = t;
    d.name = "d";
    d.format = "jsonl";
    d.blob_digest = digest[t];
    ASSERT_TRUE(reg.CreateDataset(d, "test").ok());
  }
  const std::string stray = (*cache)->Put("not referenced, but fetched a moment ago").value();
  for (const auto& [t, d] : digest) Age(**cache, d);

  std::vector<std::string> forgotten;
  TenantSweeper::Options o;
  o.cache = cache->get();
  o.on_deleted = [&](const std::string& t) { forgotten.push_back(t); };
  TenantSweeper sweeper(&reg, o);
  auto first = sweeper.SweepOnce();  // learns the tenants; prunes nothing referenced or young
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(first->deleted.empty());
  EXPECT_EQ(first->cache_pruned, 0);

  ASSERT_TRUE(reg.DeleteTenant("acme", "test").ok());
  ASSERT_TRUE(reg.DeleteTenant("globex", "test").ok());
  ASSERT_TRUE(reg.CreateTenant("globex", "globex again", "test").ok());  // same id, a new tenant
  auto second = sweeper.SweepOnce();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->deleted, std::vector<std::string>({"acme", "globex"}));
  EXPECT_EQ(forgotten, std::vector<std::string>({"acme", "globex"}));
  EXPECT_EQ(second->cache_pruned, 2);
  EXPECT_FALSE((*cache)->Exists(digest["acme"]).value());
  EXPECT_FALSE((*cache)->Exists(digest["globex"]).value());
  EXPECT_TRUE((*cache)->Exists(digest["initech"]).value());  // still referenced
  EXPECT_TRUE((*cache)->Exists(stray).value());              // younger than the grace

  auto third = sweeper.SweepOnce();  // nothing new
  ASSERT_TRUE(third.ok());
  EXPECT_TRUE(third->deleted.empty());
  EXPECT_EQ(sweeper.tenants_forgotten(), 2);
  EXPECT_EQ(sweeper.cache_pruned(), 2);
}

}  // namespace
}  // namespace tessera::services
