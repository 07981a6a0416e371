// Shared fixture for registry tests: a Registry on a fresh temp dir (blobs; SQLite's registry.db) and a
// fresh database on the engine under test (tests/storage/test_database.h), plus small helpers.
#pragma once

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "storage/registry.h"
#include "tests/storage/temp_dir.h"
#include "tests/storage/test_database.h"

namespace tessera::storage::testing {

template <typename T>
absl::Status StatusOf(const absl::StatusOr<T>& s) {
  return s.status();
}
inline absl::Status StatusOf(const absl::Status& s) { return s; }

// Each evaluates `expr` exactly once.
#define ASSERT_OK(expr)                                                              \
  do {                                                                               \
    const ::absl::Status assert_ok_status_ = ::tessera::storage::testing::StatusOf(expr); \
    ASSERT_TRUE(assert_ok_status_.ok()) << assert_ok_status_;                        \
  } while (0)
#define EXPECT_OK(expr)                                                              \
  do {                                                                               \
    const ::absl::Status expect_ok_status_ = ::tessera::storage::testing::StatusOf(expr); \
    EXPECT_TRUE(expect_ok_status_.ok()) << expect_ok_status_;                        \
  } while (0)
#define EXPECT_CODE(expr, code_name)                                                 \
  do {                                                                               \
    const ::absl::Status expect_code_status_ = ::tessera::storage::testing::StatusOf(expr); \
    EXPECT_EQ(expect_code_status_.code(), ::absl::StatusCode::code_name) << expect_code_status_; \
  } while (0)

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TESSERA_REQUIRE_DB(db_);
    Reopen();
  }
  // Options on this test's database.
  Registry::Options DbOptions(Registry::Options base = Registry::Options()) const { return db_.Options(base); }
  // For RawExec: the registry database of this test.
  std::string DbTarget() const { return db_.Target(dir_.path()); }
  void Reopen(Registry::Options options = Registry::Options()) {
    reg_.reset();
    auto r = Registry::Open(dir_.path(), db_.Options(options));
    ASSERT_TRUE(r.ok()) << r.status();
    reg_ = std::move(*r);
  }
  void MakeTenant(const std::string& id) {
    auto t = reg_->CreateTenant(id, "Tenant " + id, "admin-key");
    ASSERT_TRUE(t.ok()) << t.status();
  }
  std::string PutBlob(const std::string& bytes) {
    auto d = reg_->blobs().Put(bytes);
    EXPECT_TRUE(d.ok()) << d.status();
    return d.value_or("");
  }
  // Publishes a version of `tenant` with fresh blob content; returns its number (0 on failure).
  int64_t Publish(const std::string& tenant, int64_t parent = 0, const std::string& job = "") {
    NewVersion v;
    v.tenant_id = tenant;
    v.parent_version = parent;
    v.job_id = job;
    v.slots_json = "[[0,1],[2,3]]";
    v.val_loss = 1.5;
    v.base_val_loss = 2.0;
    v.blob_digest = PutBlob("weights of " + tenant + " #" + std::to_string(++blob_counter_));
    auto r = reg_->PublishVersion(v, "admin-key");
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->version : 0;
  }
  std::string MakeDataset(const std::string& tenant, const std::string& name = "train") {
    NewDataset d;
    d.tenant_id = tenant;
    d.name = name;
    d.format = "jsonl";
    d.blob_digest = PutBlob("{\"text\": \"" + tenant + name + std::to_string(++blob_counter_) + "\"}\n");
    d.num_examples = 1;
    d.num_tokens = 10;
    auto r = reg_->CreateDataset(d, "admin-key");
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->dataset_id : "";
  }
  std::string MakeJob(const std::string& tenant, const std::string& dataset,
                      const std::string& idempotency_key = "") {
    NewJob j;
    j.tenant_id = tenant;
    j.spec = "{\"max_steps\": 10}";
    j.training_dataset_id = dataset;
    j.idempotency_key = idempotency_key;
    j.max_steps = 10;
    auto r = reg_->CreateJob(j, "tenant-key");
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->job_id : "";
  }

  TempDir dir_;
  TestDb db_;
  std::unique_ptr<Registry> reg_;
  int blob_counter_ = 0;
};

}  // namespace tessera::storage::testing
