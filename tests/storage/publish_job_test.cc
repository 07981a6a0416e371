// Registry::PublishJobVersion: a job's version, its promotion, its "version" event and its SUCCEEDED
// state in one transaction. What it writes (rows, events in order, audit, change feed), that a worker
// without the lease writes nothing, and that a job which already has a version gets it back instead of a
// second one. The crash behaviour is tests/services/publish_crash_test.cc's.
#include <string>

#include "gtest/gtest.h"
#include "storage/registry.h"
#include "tests/storage/registry_test_util.h"

namespace tessera::storage {
namespace {

using testing::RegistryTest;

class PublishJobTest : public RegistryTest {
 protected:
  void SetUp() override {
    RegistryTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    MakeTenant("acme");
    job_id_ = MakeJob("acme", MakeDataset("acme"));
    auto c = reg_->ClaimNextJob("w1", absl::Minutes(5));
    ASSERT_TRUE(c.ok() && c->has_value());
  }
  NewVersion Version() {
    NewVersion v;
    v.tenant_id = "acme";
    v.job_id = job_id_;
    v.slots_json = "[[0,1]]";
    v.val_loss = 1.0;
    v.blob_digest = PutBlob("weights of " + job_id_);
    return v;
  }
  int Count(const std::vector<JobEvent>& events, const std::string& type) {
    int n = 0;
    for (const JobEvent& e : events) n += e.type == type;
    return n;
  }
  std::string job_id_;
};

TEST_F(PublishJobTest, PublishesPromotesAndFinishesTogether) {
  auto p = reg_->PublishJobVersion("w1", Version(), true, "validation loss 1 beats 2", "system");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE(p->reused);
  EXPECT_EQ(p->version.version, 1);
  EXPECT_TRUE(p->version.live);
  ASSERT_TRUE(p->move.has_value());
  EXPECT_EQ(p->move->live_version, 1);
  EXPECT_EQ(p->job.state, JobState::kSucceeded);
  EXPECT_EQ(p->job.result_version, std::optional<int64_t>(1));
  EXPECT_TRUE(p->job.promoted);
  EXPECT_EQ(*reg_->GetLive("acme"), 1);
  // Events: ... "version" then the SUCCEEDED "state", as the scheduler wrote them before.
  auto events = reg_->ListJobEvents("", job_id_, 0);
  ASSERT_TRUE(events.ok());
  ASSERT_GE(events->size(), 2u);
  const JobEvent& version_event = (*events)[events->size() - 2];
  EXPECT_EQ(version_event.type, "version");
  EXPECT_EQ(version_event.payload, "{\"version\":1,\"promoted\":true,\"reason\":\"validation loss 1 beats 2\"}");
  EXPECT_EQ(events->back().type, "state");
  EXPECT_NE(events->back().payload.find("SUCCEEDED"), std::string::npos);
  // The change feed: the publish, then the promote.
  auto changes = reg_->ListChangesSince(0);
  ASSERT_TRUE(changes.ok());
  ASSERT_EQ(changes->size(), 2u);
  EXPECT_EQ((*changes)[0].kind, ChangeKind::kPublish);
  EXPECT_EQ((*changes)[1].kind, ChangeKind::kPromote);
  // Audit: publish, promote and finish, all OK.
  auto audit = reg_->ListAudit(0);
  ASSERT_TRUE(audit.ok());
  std::vector<std::string> actions;
  for (const AuditEntry& a : *audit) {
    if (a.action == "version.publish" || a.action == "version.promote" || a.action == "job.finish") {
      actions.push_back(a.action);
    }
  }
  EXPECT_EQ(actions, (std::vector<std::string>{"version.publish", "version.promote", "job.finish"}));
}

TEST_F(PublishJobTest, WithoutPromotionTheLivePointerStays) {
  auto p = reg_->PublishJobVersion("w1", Version(), false, "auto_promote not requested", "system");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE(p->version.live);
  EXPECT_FALSE(p->move.has_value());
  EXPECT_FALSE(p->job.promoted);
  EXPECT_EQ(*reg_->GetLive("acme"), 0);
}

// The regression of what tessera-chaos found in the build before PublishJobVersion: a job cancelled
// while its worker published kept the version (PublishVersion committed, then FinishJob was refused), so
// a CANCELLED job had a version. Now the lease is checked in the publish's own transaction.
TEST_F(PublishJobTest, AWorkerWithoutTheLeaseWritesNothing) {
  EXPECT_CODE(reg_->PublishJobVersion("w2", Version(), true, "r", "system"), kFailedPrecondition);
  ASSERT_OK(reg_->CancelJob("acme", job_id_, "admin"));
  EXPECT_CODE(reg_->PublishJobVersion("w1", Version(), true, "r", "system"), kFailedPrecondition);
  EXPECT_TRUE(reg_->ListVersions("acme")->empty());
  EXPECT_EQ(*reg_->GetLive("acme"), 0);
  auto events = reg_->ListJobEvents("", job_id_, 0);
  ASSERT_TRUE(events.ok());
  EXPECT_EQ(Count(*events, "version"), 0);
  EXPECT_EQ(*reg_->ChangeSequence(), 0);
}

TEST_F(PublishJobTest, AFailureInsideRollsBackEverything) {
  NewVersion v = Version();
  v.blob_digest = std::string(64, 'a');  // a valid digest of no stored blob: refused after the lease check
  EXPECT_CODE(reg_->PublishJobVersion("w1", v, true, "r", "system"), kFailedPrecondition);
  auto job = reg_->GetJob("", job_id_);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state, JobState::kRunning);
  EXPECT_TRUE(reg_->ListVersions("acme")->empty());
  // The same worker may then publish properly.
  EXPECT_OK(reg_->PublishJobVersion("w1", Version(), true, "r", "system"));
}

TEST_F(PublishJobTest, AJobThatAlreadyHasAVersionGetsItBack) {
  const int64_t earlier = Publish("acme", 0, job_id_);  // as a build with separate transactions left it
  ASSERT_EQ(earlier, 1);
  auto p = reg_->PublishJobVersion("w1", Version(), true, "r", "system");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->reused);
  EXPECT_EQ(p->version.version, earlier);
  EXPECT_EQ(reg_->ListVersions("acme")->size(), 1u);
  EXPECT_EQ(p->job.result_version, std::optional<int64_t>(earlier));
  EXPECT_EQ(*reg_->GetLive("acme"), earlier);
}

TEST_F(PublishJobTest, ArgumentsChecked) {
  NewVersion v = Version();
  v.job_id = "";
  EXPECT_CODE(reg_->PublishJobVersion("w1", v, false, "", "system"), kInvalidArgument);
  EXPECT_CODE(reg_->PublishJobVersion("", Version(), false, "", "system"), kInvalidArgument);
  v = Version();
  v.tenant_id = "beta";  // the job is acme's
  MakeTenant("beta");
  EXPECT_CODE(reg_->PublishJobVersion("w1", v, false, "", "system"), kNotFound);
}

}  // namespace
}  // namespace tessera::storage
