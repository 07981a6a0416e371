// The real tessera, tessera-admin and tessera-server binaries against a real server: --help, exit
// codes, one-line errors on stderr, --json, and the main flows (tenants, keys, datasets, jobs with
// live watch, generate, score, versions, promote/rollback printing the live version).
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

struct CliResult {
  int exit_code = -1;
  std::string out, err;
};

std::string BinaryDir() {
  const char* env = std::getenv("TESSERA_BINARY_DIR");
  return absl::StrCat(env != nullptr ? env : TESSERA_DEFAULT_BINARY_DIR, "/services");
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    TestServerOptions o;
    o.model = true;
    o.training = true;
    server_ = new TestServer(o);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  // Runs `binary args...` with `env` ("NAME=value" pairs) and captures both streams.
  CliResult Run(const std::string& binary, const std::vector<std::string>& args,
                const std::vector<std::string>& env = {}) {
    std::string dir = server_->data_dir();
    std::string cmd = "env -u TESSERA_API_KEY -u TESSERA_ADMIN_KEY -u TESSERA_TENANT";
    for (const std::string& e : env) absl::StrAppend(&cmd, " ", Quote(e));
    absl::StrAppend(&cmd, " ", Quote(absl::StrCat(BinaryDir(), "/", binary)));
    for (const std::string& a : args) absl::StrAppend(&cmd, " ", Quote(a));
    absl::StrAppend(&cmd, " >", dir, "/cli.out 2>", dir, "/cli.err");
    int rc = std::system(cmd.c_str());
    CliResult r;
    r.exit_code = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    r.out = ReadAll(dir + "/cli.out");
    r.err = ReadAll(dir + "/cli.err");
    return r;
  }
  std::vector<std::string> Admin(std::vector<std::string> args) {
    std::vector<std::string> all = {"--server", server_->address(), "--key-file", server_->data_dir() + "/admin.key"};
    all.insert(all.end(), args.begin(), args.end());
    return all;
  }
  std::vector<std::string> Tenant(std::vector<std::string> args) {
    std::vector<std::string> all = {"--server", server_->address(), "--tenant", "acme"};
    all.insert(all.end(), args.begin(), args.end());
    return all;
  }
  std::string KeyEnv() { return "TESSERA_API_KEY=" + acme_key_; }
  static std::string OneLine(const std::string& s) {
    EXPECT_FALSE(s.empty());
    EXPECT_EQ(std::count(s.begin(), s.end(), '\n'), 1) << s;
    return s;
  }

  void EnsureTenant() {
    if (!acme_key_.empty()) return;
    CliResult r = Run("tessera-admin", Admin({"--json", "tenants", "create", "acme", "--display-name", "ACME"}));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    nlohmann::json j = nlohmann::json::parse(r.out);
    acme_key_ = j["api_key"]["secret"].get<std::string>();
    ASSERT_FALSE(acme_key_.empty());
  }
  std::string UploadDataset() {
    std::string path = server_->data_dir() + "/add.jsonl";
    std::ofstream(path) << AdditionJsonl(24);
    CliResult r = Run("tessera", Tenant({"--json", "datasets", "upload", path, "--name", "add"}), {KeyEnv()});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out)["dataset_id"].get<std::string>();
  }

  static TestServer* server_;
  static std::string acme_key_;
};
TestServer* CliTest::server_ = nullptr;
std::string CliTest::acme_key_;

TEST_F(CliTest, HelpAndUsageErrors) {
  for (const char* bin : {"tessera", "tessera-admin", "tessera-server"}) {
    CliResult r = Run(bin, {"--help"});
    EXPECT_EQ(r.exit_code, 0) << bin;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << bin;
    EXPECT_NE(r.out.find("--server"), std::string::npos + (std::string(bin) == "tessera-server")) << bin;
  }
  EXPECT_NE(Run("tessera-server", {"--help"}).out.find("--data-dir"), std::string::npos);
  EXPECT_NE(Run("tessera-admin", {"--help"}).out.find("rollback --tenant T"), std::string::npos);
  EXPECT_NE(Run("tessera", {"--help"}).out.find("jobs watch"), std::string::npos);

  CliResult r = Run("tessera-admin", {"--server", server_->address(), "tenants", "list"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(OneLine(r.err).find("TESSERA_ADMIN_KEY"), std::string::npos);
  r = Run("tessera", {"--server", server_->address(), "datasets", "list"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(OneLine(r.err).find("TESSERA_API_KEY"), std::string::npos);
  r = Run("tessera-admin", Admin({"frobnicate"}));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(OneLine(r.err).find("unknown command"), std::string::npos);
  r = Run("tessera-admin", Admin({"promote", "--tenant", "acme", "--version", "x"}));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(OneLine(r.err).find("--version"), std::string::npos);
  r = Run("tessera-server", {"--bogus"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(OneLine(r.err).find("--bogus"), std::string::npos);
  r = Run("tessera-server", {"--listen", "127.0.0.1:0"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(OneLine(r.err).find("--data-dir"), std::string::npos);
  // Nothing listening there: exit 1, one line.
  r = Run("tessera-admin", {"--server", "127.0.0.1:1", "--key-file", server_->data_dir() + "/admin.key", "status"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(OneLine(r.err).find("UNAVAILABLE"), std::string::npos);
}

TEST_F(CliTest, AdminTenantsKeysAndStatus) {
  EnsureTenant();
  CliResult r = Run("tessera-admin", Admin({"tenants", "list"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("acme"), std::string::npos);
  r = Run("tessera-admin", Admin({"tenants", "create", "acme"}));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(OneLine(r.err).find("ALREADY_EXISTS"), std::string::npos);

  r = Run("tessera-admin", Admin({"--json", "keys", "issue", "--tenant", "acme"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json key = nlohmann::json::parse(r.out);
  std::string secret = key["api_key"]["secret"], key_id = key["api_key"]["key_id"];
  r = Run("tessera", Tenant({"datasets", "list"}), {"TESSERA_API_KEY=" + secret});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = Run("tessera-admin", Admin({"keys", "revoke", key_id}));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = Run("tessera", Tenant({"datasets", "list"}), {"TESSERA_API_KEY=" + secret});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(OneLine(r.err).find("UNAUTHENTICATED"), std::string::npos);

  // Scoped, expiring keys; the list shows them without secrets; rotation.
  r = Run("tessera-admin", Admin({"--json", "keys", "issue", "--tenant", "acme", "--scopes", "inference,read",
                                  "--expires-in", "2h"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  key = nlohmann::json::parse(r.out);
  EXPECT_EQ(key["api_key"]["scopes"], nlohmann::json::array({"inference", "read"}));
  std::string scoped_id = key["api_key"]["key_id"], scoped_secret = key["api_key"]["secret"];
  r = Run("tessera", Tenant({"datasets", "upload", server_->data_dir() + "/admin.key"}),
          {"TESSERA_API_KEY=" + scoped_secret});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(OneLine(r.err).find("PERMISSION_DENIED"), std::string::npos);
  EXPECT_NE(r.err.find("fine-tune"), std::string::npos) << r.err;
  r = Run("tessera-admin", Admin({"keys", "list", "--tenant", "acme"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(scoped_id), std::string::npos);
  EXPECT_NE(r.out.find("inference,read"), std::string::npos);
  EXPECT_NE(r.out.find("revoked"), std::string::npos);  // the key revoked above is listed as such
  EXPECT_EQ(r.out.find(scoped_secret.substr(17)), std::string::npos);
  r = Run("tessera-admin", Admin({"--json", "keys", "list"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_GE(nlohmann::json::parse(r.out)["api_keys"].size(), 3u);
  r = Run("tessera-admin", Admin({"--json", "keys", "rotate", scoped_id, "--grace", "1h"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["api_key"]["scopes"], nlohmann::json::array({"inference", "read"}));
  r = Run("tessera-admin", Admin({"keys", "issue", "--tenant", "acme", "--expires-in", "soon"}));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(OneLine(r.err).find("--expires-in"), std::string::npos);
  r = Run("tessera-admin", Admin({"keys", "issue", "--tenant", "acme", "--scopes", "everything"}));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(OneLine(r.err).find("INVALID_ARGUMENT"), std::string::npos);

  r = Run("tessera-admin", Admin({"status"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("random:tiny"), std::string::npos);
  EXPECT_NE(r.out.find("inference: available"), std::string::npos);
  r = Run("tessera-admin", Admin({"--json", "status"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["backbone"]["num_experts"], 16);
  // A tenant key on the admin CLI.
  r = Run("tessera-admin", {"--server", server_->address(), "tenants", "list"}, {"TESSERA_ADMIN_KEY=" + acme_key_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(OneLine(r.err).find("PERMISSION_DENIED"), std::string::npos);
}

TEST_F(CliTest, AdminAuditAndTenantDelete) {
  CliResult r = Run("tessera-admin", Admin({"tenants", "create", "doomed"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = Run("tessera-admin", Admin({"--json", "audit", "--tenant", "doomed", "--since", "1h"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json events = nlohmann::json::parse(r.out)["events"];
  ASSERT_GE(events.size(), 2u);  // the tenant and its first key
  for (const auto& e : events) EXPECT_EQ(e["tenant_id"], "doomed");
  EXPECT_EQ(events.back()["action"], "tenant.create");
  EXPECT_EQ(events.back()["result"], "OK");
  r = Run("tessera-admin", Admin({"audit", "--action", "tenant.", "--page-size", "1"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("tenant.create"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("next page: --page-token"), std::string::npos) << r.out;
  r = Run("tessera-admin", Admin({"audit", "--since", "yesterday-ish"}));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(OneLine(r.err).find("--since"), std::string::npos);

  r = Run("tessera-admin", Admin({"tenants", "delete", "--tenant", "doomed"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("deleted tenant doomed"), std::string::npos) << r.out;
  r = Run("tessera-admin", Admin({"tenants", "delete", "--tenant", "doomed", "--force"}));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(OneLine(r.err).find("NOT_FOUND"), std::string::npos);
  r = Run("tessera-admin", Admin({"--json", "audit", "--tenant", "doomed", "--action", "tenant.delete"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  events = nlohmann::json::parse(r.out)["events"];
  ASSERT_EQ(events.size(), 2u);  // the deletion, then the refused second one
  EXPECT_EQ(events[0]["result"], "NOT_FOUND");
  EXPECT_EQ(events[1]["result"], "OK");
}

TEST_F(CliTest, DatasetsJobsWatchGenerateAndRollback) {
  EnsureTenant();
  std::string ds = UploadDataset();
  std::string bad = server_->data_dir() + "/bad.jsonl";
  std::ofstream(bad) << "{\"text\": \"fine\"}\n{\"prompt\": \"no completion\"}\n";
  CliResult r = Run("tessera", Tenant({"--quiet", "datasets", "upload", bad}), {KeyEnv()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(OneLine(r.err).find("INVALID_ARGUMENT: line 2"), std::string::npos) << r.err;

  r = Run("tessera", Tenant({"jobs", "create", "--dataset", ds, "--seq-len", "99999"}), {KeyEnv()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(OneLine(r.err).find("hyperparameters.seq_len"), std::string::npos);

  // A real (tiny) training run, followed live.
  r = Run("tessera", Tenant({"jobs", "create", "--dataset", ds, "--max-steps", "3", "--batch-size", "4", "--seq-len",
                             "32", "--slots", "0.1,L2.E3", "--watch"}),
          {KeyEnv()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("step 1/3"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("ETA"), std::string::npos);
  EXPECT_NE(r.out.find("experts selected: L0.E1,L2.E3"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("published version 1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("state SUCCEEDED"), std::string::npos);
  std::string job_id = std::vector<std::string>(absl::StrSplit(r.out, ' '))[1];

  r = Run("tessera", Tenant({"--json", "jobs", "get", job_id}), {KeyEnv()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json job = nlohmann::json::parse(r.out);
  EXPECT_EQ(job["state"], "SUCCEEDED");
  EXPECT_EQ(job["result_version"], "1");  // int64 in proto JSON is a string
  r = Run("tessera", Tenant({"jobs", "list"}), {KeyEnv()});
  EXPECT_NE(r.out.find(job_id), std::string::npos);
  r = Run("tessera", Tenant({"jobs", "cancel", job_id}), {KeyEnv()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(OneLine(r.err).find("FAILED_PRECONDITION"), std::string::npos);

  r = Run("tessera", Tenant({"versions", "list"}), {KeyEnv()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("v1"), std::string::npos);

  r = Run("tessera-admin", Admin({"promote", "--tenant", "acme", "--version", "1"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("live version is now 1"), std::string::npos) << r.out;
  r = Run("tessera", Tenant({"--json", "generate", "add(1,2)=", "--max-tokens", "4"}), {KeyEnv()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["expert_version"], "1");
  r = Run("tessera", Tenant({"generate", "add(1,2)=", "--max-tokens", "4", "--stream"}), {KeyEnv()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("version 1"), std::string::npos);
  r = Run("tessera", Tenant({"score", "add(1,2)=3"}), {KeyEnv()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("perplexity"), std::string::npos);

  r = Run("tessera-admin", Admin({"rollback", "--tenant", "acme"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("live version is now 0 (was 1)"), std::string::npos) << r.out;
  r = Run("tessera", Tenant({"--json", "generate", "add(1,2)=", "--max-tokens", "4"}), {KeyEnv()});
  EXPECT_EQ(nlohmann::json::parse(r.out)["expert_version"], "0");
  r = Run("tessera-admin", Admin({"rollback", "--tenant", "acme"}));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(OneLine(r.err).find("FAILED_PRECONDITION"), std::string::npos);
  r = Run("tessera-admin", Admin({"versions", "list", "--tenant", "acme"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("live version 0"), std::string::npos);
  r = Run("tessera-admin", Admin({"jobs", "list"}));
  EXPECT_NE(r.out.find(job_id), std::string::npos);
}

TEST_F(CliTest, WatchOfACancelledJobFails) {
  EnsureTenant();
  std::string ds = UploadDataset();
  // Queue a long job behind nothing, cancel it via the admin CLI, then watch it.
  CliResult r = Run("tessera", Tenant({"--json", "jobs", "create", "--dataset", ds, "--max-steps", "100000",
                                       "--warmup-steps", "0"}),
                    {KeyEnv()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string job_id = nlohmann::json::parse(r.out)["job_id"];
  r = Run("tessera-admin", Admin({"jobs", "cancel", job_id}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("CANCELLED"), std::string::npos);
  r = Run("tessera", Tenant({"jobs", "watch", job_id}), {KeyEnv()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(OneLine(r.err).find("CANCELLED"), std::string::npos) << r.err;
}

TEST_F(CliTest, JobsCreateWithMethodLora) {
  EnsureTenant();
  std::string ds = UploadDataset();
  CliResult r = Run("tessera", Tenant({"jobs", "create", "--dataset", ds, "--method", "qlora"}), {KeyEnv()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(OneLine(r.err).find("INVALID_ARGUMENT: method"), std::string::npos) << r.err;
  r = Run("tessera", Tenant({"jobs", "create", "--dataset", ds, "--method", "lora", "--lora-rank", "4", "--max-steps",
                             "2", "--batch-size", "4", "--seq-len", "32", "--slots", "0.1,L2.E3", "--watch"}),
          {KeyEnv()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("state SUCCEEDED"), std::string::npos) << r.out;
  std::string job_id = std::vector<std::string>(absl::StrSplit(r.out, ' '))[1];
  r = Run("tessera", Tenant({"--json", "jobs", "get", job_id}), {KeyEnv()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json job = nlohmann::json::parse(r.out);
  EXPECT_EQ(job["method"], "lora");
  EXPECT_EQ(job["lora_rank"], 4);
  r = Run("tessera", Tenant({"versions", "list"}), {KeyEnv()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("lora r4 "), std::string::npos) << r.out;
}

// Long work (here an upload) shows progress on stderr (a log gets lines, not redraws) while stdout stays the result, so
// --json output still parses; --quiet hides it.
TEST_F(CliTest, UploadAndExportShowProgressOnStderr) {
  EnsureTenant();
  std::string path = server_->data_dir() + "/progress.jsonl";
  std::ofstream(path) << AdditionJsonl(40);
  CliResult r = Run("tessera", Tenant({"--json", "datasets", "upload", path, "--name", "p"}), {KeyEnv()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(nlohmann::json::parse(r.out, nullptr, false).is_object()) << r.out;
  EXPECT_NE(r.err.find("upload p: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("(100%), validated by the server"), std::string::npos) << r.err;
  r = Run("tessera", Tenant({"--quiet", "datasets", "upload", path}), {KeyEnv()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  // Exports: tests/services/export_test.cc (a backbone with a checkpoint directory). Backups:
  r = Run("tessera-admin", Admin({"--json", "backup", "--out", server_->data_dir() + "/cli-backup-progress"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(nlohmann::json::parse(r.out, nullptr, false).is_object()) << r.out;
  EXPECT_NE(r.err.find("backup: 100%"), std::string::npos) << r.err;
  r = Run("tessera-admin", Admin({"--quiet", "backup", "--out", server_->data_dir() + "/cli-backup-quiet"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  std::filesystem::remove_all(server_->data_dir() + "/cli-backup-progress");
  std::filesystem::remove_all(server_->data_dir() + "/cli-backup-quiet");
}

// --json everywhere: every read command of both CLIs prints JSON a script can parse (one object per
// line), and `generate --logprobs` carries the tokens' logprobs.
// --server A,B: generate and score go through the replica router (services/cli/replica_router.h): with
// one address dead (nothing listens on port 1) the call lands on the live one whichever order the
// tenant's hash gives; with both dead it fails at once as UNAVAILABLE naming both.
TEST_F(CliTest, ServerListFailsOverToALiveReplica) {
  EnsureTenant();
  const std::string dead = "127.0.0.1:1";
  for (const std::string& list : {dead + "," + server_->address(), server_->address() + "," + dead}) {
    CliResult g = Run("tessera", {"--server", list, "--tenant", "acme", "--json", "generate", "add(2,3)=",
                                  "--max-tokens", "2"},
                      {KeyEnv()});
    EXPECT_EQ(g.exit_code, 0) << list << ": " << g.err;
    EXPECT_NE(g.out.find("\"usage\""), std::string::npos) << g.out;
    CliResult s = Run("tessera", {"--server", list, "--tenant", "acme", "score", "add(2,3)=5"}, {KeyEnv()});
    EXPECT_EQ(s.exit_code, 0) << list << ": " << s.err;
  }
  CliResult none = Run("tessera", {"--server", dead + ",127.0.0.1:2", "--tenant", "acme", "generate", "x"}, {KeyEnv()});
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.err.find("127.0.0.1:1"), std::string::npos) << none.err;
  EXPECT_NE(none.err.find("127.0.0.1:2"), std::string::npos) << none.err;
  CliResult bad = Run("tessera", {"--server", dead + ",," + server_->address(), "--tenant", "acme", "generate", "x"},
                      {KeyEnv()});
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
}

TEST_F(CliTest, EveryReadCommandHasJson) {
  EnsureTenant();
  UploadDataset();
  const std::vector<std::vector<std::string>> tenant_cmds = {
      {"datasets", "list"}, {"jobs", "list"}, {"versions", "list"}, {"score", "add(1,2)=3"},
      {"generate", "add(1,2)=", "--max-tokens", "3"}, {"generate", "add(1,2)=", "--max-tokens", "3", "--stream"}};
  for (const auto& cmd : tenant_cmds) {
    std::vector<std::string> args = {"--json"};
    args.insert(args.end(), cmd.begin(), cmd.end());
    CliResult r = Run("tessera", Tenant(args), {KeyEnv()});
    ASSERT_EQ(r.exit_code, 0) << absl::StrJoin(cmd, " ") << ": " << r.err;
    for (absl::string_view line : absl::StrSplit(r.out, '\n', absl::SkipEmpty())) {
      EXPECT_TRUE(nlohmann::json::parse(line, nullptr, false).is_object()) << absl::StrJoin(cmd, " ") << ": " << line;
    }
  }
  const std::vector<std::vector<std::string>> admin_cmds = {{"tenants", "list"}, {"keys", "list"},
                                                            {"versions", "list", "--tenant", "acme"},
                                                            {"jobs", "list"}, {"status"}, {"audit"}};
  for (const auto& cmd : admin_cmds) {
    std::vector<std::string> args = {"--json"};
    args.insert(args.end(), cmd.begin(), cmd.end());
    CliResult r = Run("tessera-admin", Admin(args));
    ASSERT_EQ(r.exit_code, 0) << absl::StrJoin(cmd, " ") << ": " << r.err;
    EXPECT_TRUE(nlohmann::json::parse(r.out, nullptr, false).is_object()) << absl::StrJoin(cmd, " ") << ": " << r.out;
  }

  CliResult r = Run("tessera", Tenant({"--json", "generate", "add(1,2)=", "--max-tokens", "3", "--logprobs", "2"}),
                    {KeyEnv()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json g = nlohmann::json::parse(r.out);
  ASSERT_EQ(g["logprobs"].size(), static_cast<size_t>(g["usage"]["completion_tokens"].get<int>()));
  for (const nlohmann::json& t : g["logprobs"]) {
    EXPECT_LE(t["logprob"].get<double>(), 0.0);
    EXPECT_EQ(t["top_logprobs"].size(), 2u);
  }
  r = Run("tessera", Tenant({"generate", "add(1,2)=", "--max-tokens", "3", "--logprobs", "1"}), {KeyEnv()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("top: "), std::string::npos) << r.out;
  r = Run("tessera", Tenant({"generate", "add(1,2)=", "--logprobs", "21"}), {KeyEnv()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("top_logprobs"), std::string::npos) << r.err;
  // A job's suffix: a bad one refused naming it.
  r = Run("tessera", Tenant({"jobs", "create", "--dataset", "ds_x", "--suffix", "bad suffix"}), {KeyEnv()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("INVALID_ARGUMENT: suffix"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace tessera::services::testing
