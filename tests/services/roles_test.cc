// tessera-server --role (services/server_role.h) and the replica protocol (services/replicas.h): real
// servers on loopback ports; a control plane and its replicas/trainers share a real PostgreSQL registry
// (tests/storage/test_database.h starts one; skipped with a message where its binaries are missing)
// and, as processes sharing one blob store, one blobs directory.
#include <stdio.h>
#include <sys/wait.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>

#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "services/replicas.h"
#include "services/server_role.h"
#include "storage/blob_store.h"
#include "tests/services/http/http_client.h"
#include "tests/services/test_server.h"
#include "tests/storage/test_database.h"

namespace tessera::services {
namespace {

using testing::AdditionJsonl;
using testing::Ctx;
using testing::TestServer;
using testing::TestServerOptions;

// ---- flag combinations ----------------------------------------------------------------------------

TEST(RoleOptionsTest, ParsesTheFourRolesAndRefusesOthers) {
  for (const char* name : {"all", "control", "inference", "trainer"}) {
    absl::StatusOr<ServerRole> r = ParseServerRole(name);
    ASSERT_TRUE(r.ok()) << name;
    EXPECT_EQ(ServerRoleName(*r), name);
  }
  absl::StatusOr<ServerRole> bad = ParseServerRole("gateway");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("--role must be all, control, inference or trainer, got 'gateway'"),
            std::string::npos);
}

TEST(RoleOptionsTest, RefusesBadCombinationsNamingTheFlags) {
  const std::string pg = "postgres://tessera@127.0.0.1:5432/tessera";
  EXPECT_TRUE(CheckRoleOptions(ServerRole::kAll, "", "").ok());
  EXPECT_TRUE(CheckRoleOptions(ServerRole::kControl, pg, "").ok());
  EXPECT_TRUE(CheckRoleOptions(ServerRole::kInference, pg, "127.0.0.1:7070").ok());
  EXPECT_TRUE(CheckRoleOptions(ServerRole::kTrainer, pg, "127.0.0.1:7070").ok());
  struct Case {
    ServerRole role;
    std::string registry, control_plane, message;
  } cases[] = {
      {ServerRole::kInference, pg, "", "--role inference needs --control-plane HOST:PORT"},
      {ServerRole::kTrainer, pg, "", "--role trainer needs --control-plane HOST:PORT"},
      {ServerRole::kInference, "", "127.0.0.1:7070", "--role inference needs --registry postgres://"},
      {ServerRole::kTrainer, "sqlite", "127.0.0.1:7070", "--role trainer needs --registry postgres://"},
      {ServerRole::kInference, pg, "nocolon", "--control-plane must be HOST:PORT"},
      {ServerRole::kControl, pg, "127.0.0.1:7070", "--control-plane is for --role inference or trainer"},
      {ServerRole::kAll, "", "127.0.0.1:7070", "--control-plane is for --role inference or trainer"},
  };
  for (const Case& c : cases) {
    absl::Status s = CheckRoleOptions(c.role, c.registry, c.control_plane);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_NE(s.message().find(c.message), std::string::npos) << s.message();
  }
}

// What `tessera-server ARGS` prints on stderr and its exit status.
std::string RunServerBinary(const std::string& args, int* exit_code) {
  const char* env = std::getenv("TESSERA_BINARY_DIR");
  const std::string bin = std::string(env != nullptr ? env : TESSERA_DEFAULT_BINARY_DIR) + "/services/tessera-server";
  FILE* p = ::popen((bin + " " + args + " 2>&1").c_str(), "r");
  std::string out;
  char buf[512];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int st = ::pclose(p);
  *exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

TEST(RoleOptionsTest, ServerBinaryRefusesBadCombinationsBeforeLoadingAnything) {
  const std::string dir = "--data-dir /tmp/tessera_roles_test_never_created";
  struct Case {
    std::string args, message;
  } cases[] = {
      {"--role gpu", "--role must be all, control, inference or trainer, got 'gpu'"},
      {"--role inference", "--role inference needs --control-plane HOST:PORT"},
      {"--role trainer --control-plane 127.0.0.1:1", "--role trainer needs --registry postgres://"},
      {"--role inference --control-plane 127.0.0.1:1 --registry postgres://u@127.0.0.1:1/db",
       "--role inference needs --control-plane-key-file FILE"},
      {"--role control --control-plane 127.0.0.1:1", "--control-plane is for --role inference or trainer"},
      {"--control-plane-key-file /nonexistent", "--control-plane-key-file and --control-plane-ca are for --role"},
  };
  for (const Case& c : cases) {
    int code = 0;
    const std::string out = RunServerBinary(dir + " " + c.args, &code);
    EXPECT_EQ(code, 2) << c.args << "\n" << out;
    EXPECT_NE(out.find(c.message), std::string::npos) << c.args << "\n" << out;
  }
  EXPECT_FALSE(std::filesystem::exists("/tmp/tessera_roles_test_never_created"));
  int code = 0;
  const std::string help = RunServerBinary("--help", &code);
  EXPECT_EQ(code, 0);
  for (const char* flag : {"--role all|control|inference|trainer", "--control-plane HOST:PORT",
                           "--control-plane-key-file FILE", "--replica-wait-seconds S"}) {
    EXPECT_NE(help.find(flag), std::string::npos) << flag;
  }
}

// ---- the control plane alone (SQLite is fine: nothing follows it) ----------------------------------

TEST(RolesTest, ControlPlaneServesTheControlApisAndNoInference) {
  TestServerOptions o;
  o.model = true;     // asked for, but --role control builds no engine
  o.training = true;  // nor a job runner
  o.http = true;
  o.role = ServerRole::kControl;
  TestServer control(o);
  v1::RuntimeStatus st;
  ASSERT_TRUE(control.Admin()->GetRuntimeStatus(Ctx(control.admin_key()).get(), {}, &st).ok());
  EXPECT_EQ(st.role(), "control");
  EXPECT_FALSE(st.inference_available());
  EXPECT_FALSE(st.training_available());
  EXPECT_EQ(st.control_plane(), "");

  const std::string key = control.CreateTenant("acme");  // a control-plane mutation works
  v1::GenerateRequest g;
  g.set_tenant_id("acme");
  g.set_prompt("add(1,2)=");
  v1::GenerateResponse gr;
  grpc::Status s = control.Inference()->Generate(Ctx(key).get(), g, &gr);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(s.error_message().find("--role control"), std::string::npos) << s.error_message();

  testing::ApiClient api(control.server().http_port(), key);
  testing::HttpReply r = api.Post("/v1/completions", {{"model", "acme"}, {"prompt", "add(1,2)="}});
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("--role control"), std::string::npos) << r.body;

  // Jobs queue on the control plane; nothing here claims them.
  v1::Dataset ds;
  ASSERT_TRUE(control.Upload(key, "acme", "d", AdditionJsonl(8), &ds).ok());
  v1::CreateJobRequest req;
  req.set_tenant_id("acme");
  req.set_training_dataset_id(ds.dataset_id());
  req.mutable_hyperparameters()->set_max_steps(2);
  v1::Job job;
  ASSERT_TRUE(control.FineTuning()->CreateJob(Ctx(key).get(), req, &job).ok());
  EXPECT_EQ(job.state(), v1::QUEUED);
}

// ---- a control plane with replicas and trainers on one PostgreSQL registry -------------------------

// The grpc.health.v1 status of `service` ("" = the server): 1 SERVING, 2 NOT_SERVING, -1 error.
int HealthStatus(const std::shared_ptr<grpc::Channel>& channel, const std::string& service) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  std::string req;
  if (!service.empty()) req = std::string("\x0a", 1) + static_cast<char>(service.size()) + service;
  grpc::Slice slice(req);
  grpc::ByteBuffer request(&slice, 1), response;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status status;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response, [&](grpc::Status s) {
    std::lock_guard<std::mutex> lock(mu);
    status = s;
    done = true;
    cv.notify_all();
  });
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done; });
  if (!status.ok()) return -1;
  std::vector<grpc::Slice> slices;
  (void)response.Dump(&slices);
  std::string out;
  for (const grpc::Slice& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out.size() == 2 && out[0] == 0x08 ? out[1] : 0;
}

class ScaleOutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TESSERA_REQUIRE_DB(db_);
    TestServerOptions o;
    o.role = ServerRole::kControl;
    o.registry = db_.url();
    o.replica_wait = absl::Seconds(30);
    o.replica_fresh = absl::Seconds(30);  // a replica's heartbeat never goes stale on a busy machine here
    control_ = std::make_unique<TestServer>(o);
    key_ = control_->CreateTenant("acme");
  }

  // An inference replica following control_ (its own data dir; control_'s blob store).
  std::unique_ptr<TestServer> StartReplica(const std::string& id, bool http = false) {
    TestServerOptions o;
    o.role = ServerRole::kInference;
    o.model = true;
    o.http = http;
    o.registry = db_.url();
    o.control_plane = control_->address();
    o.control_plane_key = control_->admin_key();
    o.replica_id = id;
    o.live_follow_poll = absl::Milliseconds(50);
    // No shared blobs: the replica fetches them from the control plane (RemoteBlobStore).
    return std::make_unique<TestServer>(o);
  }

  std::unique_ptr<TestServer> StartTrainer(const std::string& id) {
    TestServerOptions o;
    o.role = ServerRole::kTrainer;
    o.training = true;
    o.registry = db_.url();
    o.control_plane = control_->address();
    o.control_plane_key = control_->admin_key();
    o.replica_id = id;
    // No shared blobs: the trainer fetches datasets and uploads results over the control plane's Blobs service.
    return std::make_unique<TestServer>(o);
  }

  v1::LiveVersionResponse Promote(int64_t version) {
    v1::PromoteRequest p;
    p.set_tenant_id("acme");
    p.set_version(version);
    v1::LiveVersionResponse r;
    grpc::Status s = control_->Admin()->Promote(Ctx(control_->admin_key()).get(), p, &r);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return r;
  }

  v1::RuntimeStatus StatusWithKey(TestServer& s, const std::string& key) {
    v1::RuntimeStatus st;
    grpc::Status g = s.Admin()->GetRuntimeStatus(Ctx(key).get(), {}, &st);
    EXPECT_TRUE(g.ok()) << g.error_message();
    return st;
  }
  static bool Resident(const v1::RuntimeStatus& st, const std::string& tenant, int64_t version) {
    for (const v1::ResidentVersion& r : st.resident_versions()) {
      if (r.tenant_id() == tenant && r.version() == version) return true;
    }
    return false;
  }

  storage::testing::TestDb db_;
  std::unique_ptr<TestServer> control_;
  std::string key_;
};

TEST_F(ScaleOutTest, ReplicaServesInferenceWithTheSharedKeysAndRefusesRegistryChanges) {
  std::unique_ptr<TestServer> replica = StartReplica("replica-a", /*http=*/true);
  const std::string admin = control_->admin_key();
  // Keys are the control plane's (from the shared registry): the replica bootstraps none of its own.
  EXPECT_TRUE(replica->admin_key().empty());
  v1::RuntimeStatus st = StatusWithKey(*replica, admin);
  EXPECT_EQ(st.role(), "inference");
  EXPECT_EQ(st.control_plane(), control_->address());
  EXPECT_EQ(st.replica_id(), "replica-a");
  EXPECT_TRUE(st.inference_available());
  EXPECT_FALSE(st.training_available());

  v1::GenerateRequest g;
  g.set_tenant_id("acme");
  g.set_prompt("add(1,2)=");
  g.set_max_tokens(4);
  v1::GenerateResponse gr;
  grpc::Status s = replica->Inference()->Generate(Ctx(key_).get(), g, &gr);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(replica->Inference()->Generate(Ctx("tsk_not_a_key").get(), g, &gr).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  auto expect_refused = [&](const grpc::Status& st, const std::string& what) {
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << what << ": " << st.error_message();
    EXPECT_NE(st.error_message().find("control plane at " + control_->address()), std::string::npos)
        << what << ": " << st.error_message();
  };
  v1::PromoteRequest p;
  p.set_tenant_id("acme");
  v1::LiveVersionResponse lr;
  expect_refused(replica->Admin()->Promote(Ctx(admin).get(), p, &lr), "Promote");
  v1::RollbackRequest rb;
  rb.set_tenant_id("acme");
  expect_refused(replica->Admin()->Rollback(Ctx(admin).get(), rb, &lr), "Rollback");
  v1::CreateTenantRequest ct;
  ct.set_tenant_id("other");
  v1::CreateTenantResponse ctr;
  expect_refused(replica->Admin()->CreateTenant(Ctx(admin).get(), ct, &ctr), "CreateTenant");
  v1::CreateJobRequest cj;
  cj.set_tenant_id("acme");
  cj.set_training_dataset_id("ds_x");
  v1::Job job;
  expect_refused(replica->FineTuning()->CreateJob(Ctx(key_).get(), cj, &job), "CreateJob");
  v1::Dataset ds;
  expect_refused(replica->Upload(key_, "acme", "d", AdditionJsonl(4), &ds), "UploadDataset");

  // Reads work (the shared registry), and the same rule holds over HTTP.
  v1::ListTenantsResponse tenants;
  ASSERT_TRUE(replica->Admin()->ListTenants(Ctx(admin).get(), {}, &tenants).ok());
  EXPECT_EQ(tenants.tenants_size(), 1);
  testing::ApiClient api(replica->server().http_port(), key_);
  testing::HttpReply r = api.Post("/v1/fine_tuning/jobs", {{"model", "acme"}, {"training_file", "ds_x"}});
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("control plane at " + control_->address()), std::string::npos) << r.body;
  r = api.Post("/v1/completions", {{"model", "acme"}, {"prompt", "add(1,2)="}, {"max_tokens", 2}});
  EXPECT_EQ(r.status, 200) << r.body;

  // Nothing of this reached the audit log (refused before authentication, on the replica).
  v1::ListAuditEventsRequest aq;
  aq.set_action("version.");
  v1::ListAuditEventsResponse audit;
  ASSERT_TRUE(control_->Admin()->ListAuditEvents(Ctx(admin).get(), aq, &audit).ok());
  EXPECT_EQ(audit.events_size(), 0);
}

TEST_F(ScaleOutTest, ReplicaLoadsTheLiveVersionsBeforeReportingServingAndRegisters) {
  const int64_t v = testing::PublishScaledVersion(control_->registry(), "acme", {{0, 1}}, 1.5f);
  ASSERT_EQ(Promote(v).live_version(), v);  // no replica yet: nothing to wait for
  const int64_t seq = control_->registry().ChangeSequence().value();

  std::unique_ptr<TestServer> replica = StartReplica("replica-a");
  // Start returned: SERVING, with acme's live version already resident and the sequence applied.
  EXPECT_EQ(HealthStatus(replica->channel(), ""), 1);
  v1::RuntimeStatus st = StatusWithKey(*replica, control_->admin_key());
  EXPECT_TRUE(Resident(st, "acme", v)) << st.DebugString();
  EXPECT_GE(st.applied_change_seq(), seq);
  // It shares no blob directory with the control plane: the version's blob came over the Blobs service
  // into its own verified cache.
  const std::string digest = control_->registry().GetVersion("acme", v).value().sha256;
  EXPECT_FALSE(std::filesystem::exists(replica->data_dir() + "/blobs"));
  EXPECT_TRUE(std::filesystem::exists(replica->data_dir() + "/blob-cache"));
  EXPECT_TRUE(storage::BlobStore::Create(replica->data_dir() + "/blob-cache").value()->Verify(digest).ok());
  const std::string scraped = replica->server().metrics().Render();
  EXPECT_NE(scraped.find("tessera_remote_blob_operations_total{op=\"fetch\"} 1"), std::string::npos) << scraped;
  EXPECT_EQ(control_->server().metrics().Render().find("tessera_remote_blob_operations_total{"), std::string::npos);
  absl::StatusOr<std::vector<storage::Replica>> rows = control_->registry().ListReplicas();
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].replica_id, "replica-a");
  EXPECT_EQ((*rows)[0].role, "inference");
  EXPECT_EQ((*rows)[0].address, replica->address());
  EXPECT_GE((*rows)[0].applied_seq, seq);

  // A clean stop removes its row.
  replica->Stop();
  rows = control_->registry().ListReplicas();
  ASSERT_TRUE(rows.ok());
  EXPECT_TRUE(rows->empty());
}

// Admin.DeleteTenant on the control plane reaches a replica (services/tenant_sweeper.h): it forgets the
// tenant's resident overlay and prunes the deleted version's blob from its cache; a tenant re-created
// under the same id is served the base experts, never the deleted tenant's version.
TEST_F(ScaleOutTest, ReplicaForgetsATenantDeletedOnTheControlPlane) {
  const int64_t v = testing::PublishScaledVersion(control_->registry(), "acme", {{0, 1}}, 1.5f);
  ASSERT_EQ(Promote(v).live_version(), v);
  const std::string digest = control_->registry().GetVersion("acme", v).value().sha256;
  std::unique_ptr<TestServer> replica = StartReplica("replica-a");
  ASSERT_TRUE(Resident(StatusWithKey(*replica, control_->admin_key()), "acme", v));
  const std::string cached = replica->data_dir() + "/blob-cache/" + digest.substr(0, 2) + "/" + digest;
  ASSERT_TRUE(std::filesystem::exists(cached));
  // Older than the sweeper's grace for fresh fetches (60 s).
  std::filesystem::last_write_time(cached, std::filesystem::last_write_time(cached) - std::chrono::minutes(5));

  v1::DeleteTenantRequest del;
  del.set_tenant_id("acme");
  del.set_force(true);
  v1::DeleteTenantResponse gone;
  ASSERT_TRUE(control_->Admin()->DeleteTenant(Ctx(control_->admin_key()).get(), del, &gone).ok());
  EXPECT_EQ(gone.versions_deleted(), 1);
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < deadline && (Resident(StatusWithKey(*replica, control_->admin_key()), "acme", v) ||
                                    std::filesystem::exists(cached))) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_FALSE(Resident(StatusWithKey(*replica, control_->admin_key()), "acme", v));
  EXPECT_FALSE(std::filesystem::exists(cached)) << "the deleted version's weights are still on the replica's disk";
  const std::string scraped = replica->server().metrics().Render();
  EXPECT_NE(scraped.find("tessera_tenant_deletions_followed_total 1"), std::string::npos) << scraped;

  // The same id again: a new tenant at the base experts.
  const std::string key = control_->CreateTenant("acme");
  v1::GenerateRequest g;
  g.set_tenant_id("acme");
  g.set_prompt("add(1,2)=");
  g.set_max_tokens(2);
  v1::GenerateResponse r;
  grpc::Status s = replica->Inference()->Generate(Ctx(key).get(), g, &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(r.expert_version(), 0);
}

TEST_F(ScaleOutTest, PromoteAndRollbackReturnOnceEveryReplicaServesTheMove) {
  std::unique_ptr<TestServer> a = StartReplica("replica-a");
  std::unique_ptr<TestServer> b = StartReplica("replica-b");
  const int64_t v1 = testing::PublishScaledVersion(control_->registry(), "acme", {{0, 1}}, 1.5f);
  const int64_t v2 = testing::PublishScaledVersion(control_->registry(), "acme", {{1, 2}}, 0.5f);
  for (int64_t v : {v1, v2}) {
    v1::LiveVersionResponse r = Promote(v);
    EXPECT_EQ(r.live_version(), v);
    EXPECT_EQ(r.replicas_applied(), 2);
    EXPECT_EQ(r.lagging_replicas_size(), 0);
    const int64_t seq = control_->registry().ChangeSequence().value();
    // Returned: both replicas already serve v (no waiting here).
    for (TestServer* replica : {a.get(), b.get()}) {
      v1::RuntimeStatus st = StatusWithKey(*replica, control_->admin_key());
      EXPECT_GE(st.applied_change_seq(), seq);
      EXPECT_TRUE(Resident(st, "acme", v)) << st.DebugString();
    }
  }
  v1::RollbackRequest rb;
  rb.set_tenant_id("acme");
  v1::LiveVersionResponse r;
  ASSERT_TRUE(control_->Admin()->Rollback(Ctx(control_->admin_key()).get(), rb, &r).ok());
  EXPECT_EQ(r.live_version(), v1);
  EXPECT_EQ(r.replicas_applied(), 2);
  EXPECT_EQ(r.lagging_replicas_size(), 0);
  const int64_t seq = control_->registry().ChangeSequence().value();
  for (TestServer* replica : {a.get(), b.get()}) {
    EXPECT_GE(StatusWithKey(*replica, control_->admin_key()).applied_change_seq(), seq);
  }
  // The same answer through the same Generate on both replicas (same live version, same weights).
  v1::GenerateRequest g;
  g.set_tenant_id("acme");
  g.set_prompt("add(12,30)=");
  g.set_max_tokens(6);
  v1::GenerateResponse ga, gb;
  ASSERT_TRUE(a->Inference()->Generate(Ctx(key_).get(), g, &ga).ok());
  ASSERT_TRUE(b->Inference()->Generate(Ctx(key_).get(), g, &gb).ok());
  EXPECT_EQ(ga.expert_version(), v1);
  EXPECT_EQ(gb.expert_version(), v1);
  EXPECT_EQ(ga.text(), gb.text());
}

TEST_F(ScaleOutTest, PromoteNamesAReplicaThatStoppedAsLaggingAndIgnoresStaleOnes) {
  std::unique_ptr<TestServer> a = StartReplica("replica-a");
  // A replica that registered and died: its heartbeat is fresh, it never applies anything.
  storage::Replica dead;
  dead.replica_id = "replica-dead";
  dead.role = "inference";
  dead.address = "127.0.0.1:1";
  ASSERT_TRUE(control_->registry().HeartbeatReplica(dead).ok());
  // A trainer's row is never waited for.
  storage::Replica trainer = dead;
  trainer.replica_id = "trainer-x";
  trainer.role = "trainer";
  ASSERT_TRUE(control_->registry().HeartbeatReplica(trainer).ok());

  TestServerOptions o;  // a control plane that waits 1 s (the fixture's waits 30 s)
  o.role = ServerRole::kControl;
  o.registry = db_.url();
  o.replica_wait = absl::Seconds(1);
  o.replica_fresh = absl::Seconds(30);
  o.share_blobs_with = control_->data_dir();
  TestServer impatient(o);
  const int64_t v = testing::PublishScaledVersion(impatient.registry(), "acme", {{0, 1}}, 1.5f);
  v1::PromoteRequest p;
  p.set_tenant_id("acme");
  p.set_version(v);
  v1::LiveVersionResponse r;
  ASSERT_TRUE(impatient.Admin()->Promote(Ctx(control_->admin_key()).get(), p, &r).ok());
  EXPECT_EQ(r.live_version(), v);  // the move is committed either way
  ASSERT_EQ(r.lagging_replicas_size(), 1) << r.DebugString();
  EXPECT_EQ(r.lagging_replicas(0), "replica-dead");
  EXPECT_EQ(r.replicas_applied(), 1);

  // Once its heartbeat is older than the freshness window it no longer counts.
  ASSERT_TRUE(storage::testing::RawExec(db_.url(), "UPDATE replicas SET heartbeat_at_us = 1 WHERE replica_id = "
                                                   "'replica-dead'")
                  .ok());
  v1::RollbackRequest rb;
  rb.set_tenant_id("acme");
  ASSERT_TRUE(impatient.Admin()->Rollback(Ctx(control_->admin_key()).get(), rb, &r).ok());
  EXPECT_EQ(r.live_version(), 0);
  EXPECT_EQ(r.lagging_replicas_size(), 0) << r.DebugString();
  EXPECT_EQ(r.replicas_applied(), 1);
}

TEST_F(ScaleOutTest, ReplicaRefusesAControlPlaneThatIsNotOne) {
  std::unique_ptr<TestServer> a = StartReplica("replica-a");
  ServerOptions so;
  so.data_dir = control_->data_dir() + "/second";
  so.listen = "127.0.0.1:0";
  so.role = ServerRole::kInference;
  so.registry.database = db_.url();
  so.control_plane = a->address();  // a replica, not the control plane
  so.control_plane_key = control_->admin_key();
  absl::StatusOr<std::unique_ptr<TesseraServer>> s = TesseraServer::Start(so, ServerComponents());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.status().message().find("runs --role inference, not the control plane"), std::string::npos)
      << s.status();
  so.control_plane = control_->address();
  so.control_plane_key = key_;  // a tenant key
  s = TesseraServer::Start(so, ServerComponents());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("--control-plane-key-file must hold an ADMIN key"), std::string::npos)
      << s.status();
}

TEST_F(ScaleOutTest, TrainerCompletesAJobCreatedOnTheControlPlane) {
  std::unique_ptr<TestServer> trainer = StartTrainer("trainer-a");
  v1::RuntimeStatus st = StatusWithKey(*trainer, control_->admin_key());
  EXPECT_EQ(st.role(), "trainer");
  EXPECT_TRUE(st.training_available());
  EXPECT_FALSE(st.inference_available());
  v1::GenerateRequest g;
  g.set_tenant_id("acme");
  g.set_prompt("add(1,2)=");
  v1::GenerateResponse gr;
  grpc::Status s = trainer->Inference()->Generate(Ctx(key_).get(), g, &gr);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(s.error_message().find("--role trainer"), std::string::npos) << s.error_message();

  v1::Dataset ds;
  ASSERT_TRUE(control_->Upload(key_, "acme", "d", AdditionJsonl(16), &ds).ok());
  v1::CreateJobRequest req;
  req.set_tenant_id("acme");
  req.set_training_dataset_id(ds.dataset_id());
  req.mutable_hyperparameters()->set_max_steps(3);
  req.mutable_hyperparameters()->set_batch_size(4);
  req.mutable_hyperparameters()->set_seq_len(32);
  v1::Job job;
  ASSERT_TRUE(control_->FineTuning()->CreateJob(Ctx(key_).get(), req, &job).ok());
  // The control plane runs no scheduler: only the trainer can finish it. Follow it on the control plane.
  auto watch = control_->FineTuning();
  auto ctx = Ctx(key_);
  v1::WatchJobRequest w;
  w.set_tenant_id("acme");
  w.set_job_id(job.job_id());
  auto reader = watch->WatchJob(ctx.get(), w);
  v1::JobEvent e;
  while (reader->Read(&e)) {
  }
  ASSERT_TRUE(reader->Finish().ok());
  v1::GetJobRequest gj;
  gj.set_tenant_id("acme");
  gj.set_job_id(job.job_id());
  ASSERT_TRUE(control_->FineTuning()->GetJob(Ctx(key_).get(), gj, &job).ok());
  ASSERT_EQ(job.state(), v1::SUCCEEDED) << job.error();
  EXPECT_GE(job.result_version(), 1);
  // The trainer uploaded its version's blob to the control plane (it has no blob directory of its own;
  // the dataset came down into its cache).
  absl::StatusOr<storage::ExpertVersion> version = control_->registry().GetVersion("acme", job.result_version());
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_TRUE(control_->registry().owned_blobs()->Verify(version->sha256).ok());
  EXPECT_FALSE(std::filesystem::exists(trainer->data_dir() + "/blobs"));
  EXPECT_TRUE(storage::BlobStore::Create(trainer->data_dir() + "/blob-cache").value()->Verify(ds.sha256()).ok());
}

}  // namespace
}  // namespace tessera::services
