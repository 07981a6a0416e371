// The control plane's watch stream (services/changes_service.h) and its client (services/
// change_watcher.h) over a real server on loopback: changes arrive in order with the head; a tenant
// key is refused; while the control plane is down the watcher reads the registry instead, and when it
// is back on the same address the stream resumes after the last head received.
#include "services/change_watcher.h"

#include "gtest/gtest.h"
#include "tests/services/test_server.h"
#include "tests/storage/temp_dir.h"

namespace tessera::services {
namespace {

using storage::testing::TempDir;
using testing::Ctx;
using testing::TestServer;
using testing::TestServerOptions;

bool WaitUntil(const std::function<bool()>& done, absl::Duration limit = absl::Seconds(60)) {
  const absl::Time end = absl::Now() + limit;
  while (!done()) {
    if (absl::Now() > end) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

std::vector<int64_t> Seqs(const std::vector<storage::Change>& changes) {
  std::vector<int64_t> out;
  for (const storage::Change& c : changes) out.push_back(c.seq);
  return out;
}

TEST(ChangeWatcherTest, StreamsChangesFallsBackToTheRegistryAndResumes) {
  TempDir dir;
  TestServerOptions o;
  o.data_dir = dir.path() + "/control";
  auto control = std::make_unique<TestServer>(o);
  control->CreateTenant("acme");
  const int port = control->server().port();
  // The replica's own handle on the shared registry (its fallback).
  auto fallback = storage::Registry::Open(o.data_dir, storage::Registry::Options());
  ASSERT_TRUE(fallback.ok()) << fallback.status();
  const int64_t start = (*fallback)->ChangeSequence().value();

  ChangeWatcher watcher(grpc::CreateChannel(control->address(), grpc::InsecureChannelCredentials()),
                        control->address(), control->admin_key(), fallback->get(), start, {});
  watcher.Start();
  ASSERT_TRUE(WaitUntil([&] { return watcher.connected(); }));

  // A publish and a promote on the control plane arrive, in order, without polling the database here.
  const int64_t v = testing::PublishScaledVersion(control->registry(), "acme", {{0, 1}}, 1.5f);
  v1::PromoteRequest p;
  p.set_tenant_id("acme");
  p.set_version(v);
  v1::LiveVersionResponse r;
  ASSERT_TRUE(control->Admin()->Promote(Ctx(control->admin_key()).get(), p, &r).ok());
  const int64_t after_promote = control->registry().ChangeSequence().value();
  ASSERT_TRUE(WaitUntil([&] { return watcher.Head().value() >= after_promote; }));
  auto changes = watcher.ListChangesSince(start, 0);
  ASSERT_TRUE(changes.ok()) << changes.status();
  ASSERT_EQ(changes->size(), 2u);
  EXPECT_EQ((*changes)[0].kind, storage::ChangeKind::kPublish);
  EXPECT_EQ((*changes)[1].kind, storage::ChangeKind::kPromote);
  EXPECT_EQ((*changes)[1].tenant_id, "acme");
  EXPECT_EQ((*changes)[1].live_version, v);
  EXPECT_LT((*changes)[0].seq, (*changes)[1].seq);
  EXPECT_TRUE(watcher.WaitForChange(start, absl::ZeroDuration()).value());
  EXPECT_FALSE(watcher.WaitForChange(after_promote, absl::Milliseconds(50)).value());
  EXPECT_TRUE(watcher.ListChangesSince(after_promote, 0).value().empty());  // consumed

  // Only ADMIN keys may watch.
  {
    const std::string tenant_key = control->CreateTenant("globex");
    auto stub = internal::v1::Changes::NewStub(control->channel());
    auto ctx = Ctx(tenant_key);
    internal::v1::WatchChangesRequest req;
    auto reader = stub->Watch(ctx.get(), req);
    internal::v1::ChangeBatch batch;
    EXPECT_FALSE(reader->Read(&batch));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  const int64_t before_outage = control->registry().ChangeSequence().value();
  ASSERT_TRUE(WaitUntil([&] { return watcher.Head().value() >= before_outage; }));

  // The control plane goes away: the watcher reads the registry (another process's publish is seen).
  control->Stop();
  ASSERT_TRUE(WaitUntil([&] { return !watcher.connected(); }));
  const int64_t v2 = testing::PublishScaledVersion(**fallback, "acme", {{0, 2}}, 1.25f);
  EXPECT_TRUE(watcher.WaitForChange(before_outage, absl::Seconds(30)).value());
  changes = watcher.ListChangesSince(before_outage, 0);
  ASSERT_TRUE(changes.ok()) << changes.status();
  ASSERT_EQ(changes->size(), 1u);
  EXPECT_EQ((*changes)[0].version, v2);
  const int64_t during_outage = (*changes)[0].seq;

  // Back on the same address: the stream resumes after the last head it had received, so the outage's
  // publish arrives over it too (the follower skips what it already applied: seq > its cursor).
  TestServerOptions again = o;
  again.port = port;
  auto back = std::make_unique<TestServer>(again);
  ASSERT_TRUE(WaitUntil([&] { return watcher.connected(); }));
  EXPECT_EQ(watcher.connects(), 2);
  ASSERT_TRUE(WaitUntil([&] { return watcher.Head().value() >= during_outage; }));
  EXPECT_EQ(Seqs(watcher.ListChangesSince(before_outage, 0).value()), std::vector<int64_t>({during_outage}));
  watcher.Stop();
}

}  // namespace
}  // namespace tessera::services
