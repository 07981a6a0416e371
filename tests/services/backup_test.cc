// Admin.Backup + tessera-admin backup's writer + tessera-server --restore's RestoreBackup: a backup
// taken while a job trains and Generate requests are served restores into a fresh data dir where every
// tenant, key (the old secrets authenticate; a revoked one stays revoked), version, live pointer (and
// its undo history), dataset and job is as it was, every blob verifies, Generate answers identically
// (greedy) for the live, pinned and base versions, and the job that was training resumes from the
// checkpoint the backup carries. Bad backups and bad targets are refused with the file or field named.
#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "gtest/gtest.h"
#include "services/cli/backup_client.h"
#include "services/restore.h"
#include "storage/backup.h"
#include "tests/services/checkpoint_gate.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

namespace fs = std::filesystem;

// A temp directory removed on destruction; path() does not exist until someone creates it.
class ScratchDir {
 public:
  ScratchDir() {
    char tmpl[] = "/tmp/tessera_backup_test_XXXXXX";
    root_ = mkdtemp(tmpl);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  std::string Path(const std::string& name) const { return root_ + "/" + name; }

 private:
  std::string root_;
};

std::string Generate(TestServer& server, const std::string& key, const std::string& tenant,
                     std::optional<int64_t> version, int64_t* served_version, grpc::Status* status) {
  v1::GenerateRequest req;
  req.set_tenant_id(tenant);
  req.set_prompt("add(12,30)=");
  req.set_max_tokens(12);
  req.set_temperature(0);
  if (version.has_value()) req.set_version(*version);
  v1::GenerateResponse resp;
  *status = server.Inference()->Generate(Ctx(key).get(), req, &resp);
  *served_version = resp.expert_version();
  return resp.text();
}

absl::StatusOr<cli::BackupOutcome> Backup(TestServer& server, const std::string& key, const std::string& out) {
  auto ctx = Ctx(key);
  return cli::WriteBackup(*server.Admin(), ctx.get(), out, nullptr);
}

template <typename Msg>
std::vector<std::string> Serialized(const google::protobuf::RepeatedPtrField<Msg>& items) {
  std::vector<std::string> out;
  for (const Msg& m : items) out.push_back(m.SerializeAsString());
  return out;
}

TEST(BackupRestoreTest, BackupWhileTrainingAndServingRestoresEverything) {
  CheckpointGate gate;  // holds A's long job at its first checkpoint: running, with a checkpoint, throughout the backup
  TestServerOptions o = WithModel();
  o.wrap_runner = gate.Wrapper();
  o.training = true;
  TestServer a(o);
  const std::string admin = a.admin_key();
  const std::string acme_key = a.CreateTenant("acme");
  const std::string beta_key = a.CreateTenant("beta");
  // A second acme key, and a revoked one.
  v1::IssueApiKeyRequest issue;
  issue.set_tenant_id("acme");
  issue.add_scopes("inference");
  v1::IssueApiKeyResponse second, revoked;
  ASSERT_TRUE(a.Admin()->IssueApiKey(Ctx(admin).get(), issue, &second).ok());
  ASSERT_TRUE(a.Admin()->IssueApiKey(Ctx(admin).get(), issue, &revoked).ok());
  v1::RevokeApiKeyRequest rk;
  rk.set_key_id(revoked.api_key().key_id());
  v1::RevokeApiKeyResponse rk_resp;
  ASSERT_TRUE(a.Admin()->RevokeApiKey(Ctx(admin).get(), rk, &rk_resp).ok());

  v1::Dataset acme_ds, beta_ds;
  ASSERT_TRUE(a.Upload(acme_key, "acme", "acme-train", AdditionJsonl(32, 1), &acme_ds).ok());
  ASSERT_TRUE(a.Upload(beta_key, "beta", "beta-train", AdditionJsonl(24, 2), &beta_ds).ok());

  // Versions and live pointers with an undo history: acme 1 -> 2 -> rollback (live 1); beta live 1.
  ASSERT_EQ(PublishScaledVersion(a.registry(), "acme", {{0, 1}, {1, 2}}, 1.7f), 1);
  ASSERT_EQ(PublishScaledVersion(a.registry(), "acme", {{2, 3}, {3, 4}}, 0.4f), 2);
  ASSERT_EQ(PublishScaledVersion(a.registry(), "beta", {{0, 5}, {2, 6}}, 1.9f), 1);
  for (auto [tenant, version] : std::vector<std::pair<std::string, int64_t>>{{"acme", 1}, {"acme", 2}, {"beta", 1}}) {
    v1::PromoteRequest p;
    p.set_tenant_id(tenant);
    p.set_version(version);
    v1::LiveVersionResponse r;
    ASSERT_TRUE(a.Admin()->Promote(Ctx(admin).get(), p, &r).ok());
  }
  v1::RollbackRequest rb;
  rb.set_tenant_id("acme");
  v1::LiveVersionResponse rb_resp;
  ASSERT_TRUE(a.Admin()->Rollback(Ctx(admin).get(), rb, &rb_resp).ok());
  ASSERT_EQ(rb_resp.live_version(), 1);

  // A finished job (beta) and one training during the backup (acme).
  v1::CreateJobRequest done_req;
  done_req.set_tenant_id("beta");
  done_req.set_training_dataset_id(beta_ds.dataset_id());
  done_req.mutable_hyperparameters()->set_max_steps(4);
  done_req.mutable_hyperparameters()->set_batch_size(4);
  done_req.mutable_hyperparameters()->set_seq_len(32);
  v1::Job done_job;
  ASSERT_TRUE(a.FineTuning()->CreateJob(Ctx(beta_key).get(), done_req, &done_job).ok());
  for (absl::Time deadline = absl::Now() + absl::Seconds(300);;) {
    auto j = a.registry().GetJob("beta", done_job.job_id());
    ASSERT_TRUE(j.ok());
    if (storage::IsTerminal(j->state)) {
      ASSERT_EQ(j->state, storage::JobState::kSucceeded) << j->error;
      break;
    }
    ASSERT_LT(absl::Now(), deadline);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  v1::CreateJobRequest run_req;
  run_req.set_tenant_id("acme");
  run_req.set_training_dataset_id(acme_ds.dataset_id());
  run_req.mutable_hyperparameters()->set_max_steps(60);  // checkpoints every 15 steps
  run_req.mutable_hyperparameters()->set_batch_size(4);
  run_req.mutable_hyperparameters()->set_seq_len(32);
  run_req.mutable_expert_selection()->mutable_explicit_()->add_slots()->set_expert(2);
  v1::Job running;
  ASSERT_TRUE(a.FineTuning()->CreateJob(Ctx(acme_key).get(), run_req, &running).ok());
  ASSERT_TRUE(gate.WaitHeld(absl::Seconds(300))) << "the job never reached its first checkpoint";
  {
    auto j = a.registry().GetJob("acme", running.job_id());
    ASSERT_TRUE(j.ok());
    ASSERT_EQ(j->state, storage::JobState::kRunning);
    ASSERT_FALSE(j->checkpoint.empty());
  }

  // Backup while two clients keep generating: none of their requests fails.
  std::atomic<bool> stop{false};
  std::atomic<int> served{0}, failed{0};
  std::vector<std::thread> clients;
  for (const auto& [tenant, key] : std::vector<std::pair<std::string, std::string>>{{"acme", acme_key}, {"beta", beta_key}}) {
    clients.emplace_back([&, tenant = tenant, key = key] {
      do {  // at least one request each, however late the thread starts
        int64_t v = -1;
        grpc::Status st;
        Generate(a, key, tenant, std::nullopt, &v, &st);
        (st.ok() ? served : failed).fetch_add(1);
      } while (!stop.load());
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ScratchDir scratch;
  const std::string out = scratch.Path("backup");
  absl::StatusOr<cli::BackupOutcome> backup = Backup(a, admin, out);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  stop = true;
  for (std::thread& t : clients) t.join();
  ASSERT_TRUE(backup.ok()) << backup.status();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GT(served.load(), 0);
  {
    auto j = a.registry().GetJob("acme", running.job_id());
    ASSERT_TRUE(j.ok());
    ASSERT_EQ(j->state, storage::JobState::kRunning);  // held by the gate
  }
  const BackupManifest& m = backup->manifest;
  EXPECT_EQ(m.counts.tenants, 2);
  EXPECT_EQ(m.counts.versions, 4);  // acme 1, 2; beta 1 and the finished job's
  EXPECT_EQ(m.counts.datasets, 2);
  EXPECT_EQ(m.counts.jobs, 2);
  EXPECT_EQ(m.counts.jobs_unfinished, 1);
  EXPECT_EQ(m.backbone_sha256, a.server().backbone().sha256);
  EXPECT_TRUE(fs::exists(out + "/manifest.json"));
  EXPECT_FALSE(fs::exists(out + ".partial-" + std::to_string(::getpid())));
  // Stop A's job: what it does after the backup is not in the backup.
  v1::CancelJobRequest cancel;
  cancel.set_job_id(running.job_id());
  v1::Job cancelled;
  ASSERT_TRUE(a.Admin()->CancelJob(Ctx(admin).get(), cancel, &cancelled).ok());

  // Restore into a fresh data dir and serve it.
  const std::string data = scratch.Path("restored");
  absl::StatusOr<BackupManifest> restored = RestoreBackup(out, data);
  ASSERT_TRUE(restored.ok()) << restored.status();
  ASSERT_TRUE(CheckBackupBackbone(*restored, a.server().backbone().sha256).ok());
  TestServerOptions ob = WithModel();
  ob.training = true;
  ob.data_dir = data;
  TestServer b(ob);
  EXPECT_TRUE(b.admin_key().empty());  // no new admin key: the old one works

  // Tenants and live pointers.
  v1::ListTenantsResponse ta, tb;
  ASSERT_TRUE(a.Admin()->ListTenants(Ctx(admin).get(), {}, &ta).ok());
  grpc::Status st = b.Admin()->ListTenants(Ctx(admin).get(), {}, &tb);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(Serialized(ta.tenants()), Serialized(tb.tenants()));
  ASSERT_EQ(tb.tenants_size(), 2);
  EXPECT_EQ(tb.tenants(0).live_version(), 1);

  // Keys: the same ids, roles, scopes, revocations (last use is per server); old secrets work.
  v1::ListApiKeysResponse ka, kb;
  ASSERT_TRUE(a.Admin()->ListApiKeys(Ctx(admin).get(), {}, &ka).ok());
  ASSERT_TRUE(b.Admin()->ListApiKeys(Ctx(admin).get(), {}, &kb).ok());
  ASSERT_EQ(ka.api_keys_size(), kb.api_keys_size());
  for (int i = 0; i < ka.api_keys_size(); ++i) {
    v1::ApiKey x = ka.api_keys(i), y = kb.api_keys(i);
    x.clear_last_used_at();
    y.clear_last_used_at();
    EXPECT_EQ(x.SerializeAsString(), y.SerializeAsString()) << x.key_id();
  }
  v1::ListDatasetsRequest ld;
  ld.set_tenant_id("acme");
  v1::ListDatasetsResponse da, db;
  ASSERT_TRUE(a.Datasets()->ListDatasets(Ctx(acme_key).get(), ld, &da).ok());
  st = b.Datasets()->ListDatasets(Ctx(acme_key).get(), ld, &db);
  ASSERT_TRUE(st.ok()) << "the old tenant key: " << st.error_message();
  EXPECT_EQ(Serialized(da.datasets()), Serialized(db.datasets()));
  ld.set_tenant_id("beta");
  ASSERT_TRUE(a.Datasets()->ListDatasets(Ctx(beta_key).get(), ld, &da).ok());
  ASSERT_TRUE(b.Datasets()->ListDatasets(Ctx(beta_key).get(), ld, &db).ok());
  EXPECT_EQ(Serialized(da.datasets()), Serialized(db.datasets()));
  int64_t v = -1;
  Generate(b, second.api_key().secret(), "acme", std::nullopt, &v, &st);
  EXPECT_TRUE(st.ok()) << "the second acme key: " << st.error_message();
  Generate(b, revoked.api_key().secret(), "acme", std::nullopt, &v, &st);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);

  // Versions, with their blobs present and intact.
  for (const std::string tenant : {"acme", "beta"}) {
    v1::ListVersionsRequest lv;
    lv.set_tenant_id(tenant);
    v1::ListVersionsResponse va, vb;
    ASSERT_TRUE(a.Admin()->ListVersions(Ctx(admin).get(), lv, &va).ok());
    ASSERT_TRUE(b.Admin()->ListVersions(Ctx(admin).get(), lv, &vb).ok());
    EXPECT_EQ(Serialized(va.versions()), Serialized(vb.versions())) << tenant;
    for (const v1::ExpertVersion& ev : vb.versions()) {
      EXPECT_TRUE(b.registry().blobs().Verify(ev.sha256()).ok()) << tenant << " v" << ev.version();
    }
  }
  for (const v1::Dataset& d : db.datasets()) EXPECT_TRUE(b.registry().blobs().Verify(d.sha256()).ok());

  // Jobs: the finished one exactly; the running one requeued with its checkpoint (blob present).
  v1::ListJobsResponse ja, jb;
  ASSERT_TRUE(a.Admin()->ListJobs(Ctx(admin).get(), {}, &ja).ok());
  ASSERT_TRUE(b.Admin()->ListJobs(Ctx(admin).get(), {}, &jb).ok());
  ASSERT_EQ(ja.jobs_size(), jb.jobs_size());
  for (const v1::Job& j : jb.jobs()) {
    if (j.job_id() == done_job.job_id()) {
      v1::GetJobRequest g;
      g.set_tenant_id("beta");
      g.set_job_id(j.job_id());
      v1::Job x, y;
      ASSERT_TRUE(a.FineTuning()->GetJob(Ctx(beta_key).get(), g, &x).ok());
      ASSERT_TRUE(b.FineTuning()->GetJob(Ctx(beta_key).get(), g, &y).ok());
      EXPECT_EQ(x.SerializeAsString(), y.SerializeAsString());
      EXPECT_EQ(y.state(), v1::SUCCEEDED);
    } else {
      EXPECT_EQ(j.job_id(), running.job_id());
      EXPECT_NE(j.state(), v1::CANCELLED);  // A's cancel came after the backup
    }
  }
  auto restored_job = b.registry().GetJob("acme", running.job_id());
  ASSERT_TRUE(restored_job.ok());
  ASSERT_FALSE(restored_job->checkpoint.empty());
  EXPECT_TRUE(b.registry().blobs().Verify(restored_job->checkpoint).ok());

  // Generate answers identically (greedy) for the live, every pinned and the base version.
  for (const auto& [tenant, key] : std::vector<std::pair<std::string, std::string>>{{"acme", acme_key}, {"beta", beta_key}}) {
    std::vector<std::optional<int64_t>> versions = {std::nullopt, 0, 1};
    if (tenant == "acme") versions.push_back(2);
    for (const std::optional<int64_t>& pin : versions) {
      int64_t va = -1, vb = -1;
      grpc::Status sa, sb;
      const std::string ta_text = Generate(a, key, tenant, pin, &va, &sa);
      const std::string tb_text = Generate(b, key, tenant, pin, &vb, &sb);
      ASSERT_TRUE(sa.ok() && sb.ok()) << sa.error_message() << " / " << sb.error_message();
      EXPECT_EQ(ta_text, tb_text) << tenant << " version " << (pin ? std::to_string(*pin) : "live");
      EXPECT_EQ(va, vb);
      EXPECT_EQ(vb, pin.value_or(1));
    }
  }
  // The live pointer's undo history came along: a plain rollback goes where A's goes.
  for (TestServer* s : {&a, &b}) {
    v1::LiveVersionResponse r;
    ASSERT_TRUE(s->Admin()->Rollback(Ctx(admin).get(), rb, &r).ok());
    EXPECT_EQ(r.live_version(), 0);
  }

  // The job that was training resumes on B from the backup's checkpoint.
  bool resumed = false;
  {
    v1::WatchJobRequest w;
    w.set_tenant_id("acme");
    w.set_job_id(running.job_id());
    auto ctx = Ctx(acme_key);
    auto stub = b.FineTuning();
    auto reader = stub->WatchJob(ctx.get(), w);
    v1::JobEvent e;
    while (!resumed && reader->Read(&e)) {
      resumed = e.log().find("resumed from the checkpoint at step") != std::string::npos;
    }
    ctx->TryCancel();
    reader->Finish();
  }
  EXPECT_TRUE(resumed);
  v1::Job c2;
  b.Admin()->CancelJob(Ctx(admin).get(), cancel, &c2);

  // Both audit logs: the backup on A, the restore on B.
  auto audit_a = a.registry().ListAudit(0);
  auto audit_b = b.registry().ListAudit(0);
  ASSERT_TRUE(audit_a.ok() && audit_b.ok());
  auto has = [](const std::vector<storage::AuditEntry>& log, const std::string& action) {
    for (const storage::AuditEntry& e : log) {
      if (e.action == action) return true;
    }
    return false;
  };
  EXPECT_TRUE(has(*audit_a, "backup.create"));
  EXPECT_TRUE(has(*audit_b, "backup.restore"));
}

TEST(BackupRestoreTest, RefusesBadBackupsTargetsAndCallers) {
  TestServer a;  // registry only: datasets give it blobs
  const std::string admin = a.admin_key();
  const std::string key = a.CreateTenant("acme");
  v1::Dataset ds;
  ASSERT_TRUE(a.Upload(key, "acme", "d", AdditionJsonl(8), &ds).ok());
  ScratchDir scratch;

  // Only an ADMIN key may take a backup.
  absl::StatusOr<cli::BackupOutcome> denied = Backup(a, key, scratch.Path("denied"));
  EXPECT_EQ(denied.status().code(), absl::StatusCode::kPermissionDenied) << denied.status();
  EXPECT_EQ(Backup(a, "", scratch.Path("anon")).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_FALSE(fs::exists(scratch.Path("denied")));
  // --out must be new or empty.
  fs::create_directories(scratch.Path("full"));
  std::ofstream(scratch.Path("full/x")) << "x";
  EXPECT_EQ(Backup(a, admin, scratch.Path("full")).status().code(), absl::StatusCode::kFailedPrecondition);

  const std::string good = scratch.Path("good");
  absl::StatusOr<cli::BackupOutcome> ok = Backup(a, admin, good);
  ASSERT_TRUE(ok.ok()) << ok.status();
  ASSERT_EQ(ok->manifest.files.size(), 2u);  // registry.db + the dataset's blob
  const std::string blob = ok->manifest.files[1].path;

  // A restore target that is not empty.
  fs::create_directories(scratch.Path("busy"));
  std::ofstream(scratch.Path("busy/registry.db")) << "mine";
  absl::StatusOr<BackupManifest> r = RestoreBackup(good, scratch.Path("busy"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_NE(r.status().message().find("not empty"), std::string::npos);

  // Damaged copies of the backup: each refused, naming what is wrong, with nothing written.
  struct Case {
    std::string name;
    std::function<void(const std::string& dir)> damage;
    absl::StatusCode code;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"flipped byte", [&](const std::string& d) {
         std::fstream f(d + "/" + blob, std::ios::in | std::ios::out | std::ios::binary);
         char c;
         f.read(&c, 1);
         f.seekp(0);
         c ^= 1;
         f.write(&c, 1);
       }, absl::StatusCode::kDataLoss, blob},
      {"truncated", [&](const std::string& d) { fs::resize_file(d + "/" + blob, 3); },
       absl::StatusCode::kDataLoss, blob},
      {"missing file", [&](const std::string& d) { fs::remove(d + "/" + blob); },
       absl::StatusCode::kFailedPrecondition, blob},
      {"extra file", [&](const std::string& d) { std::ofstream(d + "/notes.txt") << "hi"; },
       absl::StatusCode::kFailedPrecondition, "notes.txt"},
      {"no manifest", [&](const std::string& d) { fs::remove(d + "/manifest.json"); },
       absl::StatusCode::kFailedPrecondition, "manifest.json"},
      {"malformed manifest", [&](const std::string& d) { std::ofstream(d + "/manifest.json") << "{\"format\": 1"; },
       absl::StatusCode::kInvalidArgument, "manifest.json"},
      {"path outside", [&](const std::string& d) {
         std::ifstream in(d + "/manifest.json");
         std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
         const size_t at = text.find(blob);
         text.replace(at, blob.size(), "../../etc/passwd");
         std::ofstream(d + "/manifest.json", std::ios::trunc) << text;
       }, absl::StatusCode::kInvalidArgument, "../../etc/passwd"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    const std::string copy = scratch.Path("copy" + std::to_string(i));
    fs::copy(good, copy, fs::copy_options::recursive);
    c.damage(copy);
    const std::string target = scratch.Path("target" + std::to_string(i));
    absl::StatusOr<BackupManifest> res = RestoreBackup(copy, target);
    EXPECT_EQ(res.status().code(), c.code) << c.name << ": " << res.status();
    EXPECT_NE(res.status().message().find(c.says), std::string::npos) << c.name << ": " << res.status();
    EXPECT_FALSE(fs::exists(target)) << c.name;
  }

  // Another backbone: both digests named.
  BackupManifest other = ok->manifest;
  other.backbone_sha256 = std::string(64, 'a');
  absl::Status bb = CheckBackupBackbone(other, std::string(64, 'b'));
  EXPECT_EQ(bb.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(bb.message().find(std::string(64, 'a')), std::string::npos);
  EXPECT_NE(bb.message().find(std::string(64, 'b')), std::string::npos);

  // The intact backup restores, and the dataset is there with its bytes.
  const std::string target = scratch.Path("fresh");
  ASSERT_TRUE(RestoreBackup(good, target).ok());
  TestServerOptions ob;
  ob.data_dir = target;
  TestServer b(ob);
  v1::GetDatasetRequest g;
  g.set_tenant_id("acme");
  g.set_dataset_id(ds.dataset_id());
  v1::Dataset got;
  ASSERT_TRUE(b.Datasets()->GetDataset(Ctx(key).get(), g, &got).ok());
  EXPECT_EQ(got.SerializeAsString(), ds.SerializeAsString());
  EXPECT_TRUE(b.registry().blobs().Verify(ds.sha256()).ok());
}

}  // namespace
}  // namespace tessera::services::testing
