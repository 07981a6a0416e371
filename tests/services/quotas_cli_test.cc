// tessera-admin quotas set/get through the real binary against a real server, and tessera-server's
// --help documenting the --default-* quota flags.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

struct CliResult {
  int exit_code = -1;
  std::string out, err;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

CliResult RunCli(const std::string& dir, const std::string& binary, const std::vector<std::string>& args) {
  const char* env = std::getenv("TESSERA_BINARY_DIR");
  std::string cmd = absl::StrCat("env -u TESSERA_ADMIN_KEY ", env != nullptr ? env : TESSERA_DEFAULT_BINARY_DIR,
                                 "/services/", binary);
  for (const std::string& a : args) absl::StrAppend(&cmd, " '", a, "'");
  absl::StrAppend(&cmd, " >", dir, "/cli.out 2>", dir, "/cli.err");
  const int rc = std::system(cmd.c_str());
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, ReadAll(dir + "/cli.out"), ReadAll(dir + "/cli.err")};
}

TEST(QuotasCliTest, SetAndGetThroughTesseraAdmin) {
  TestServerOptions o;
  o.default_quotas[storage::Quota::kMaxQueuedJobs] = 100;
  TestServer server(o);
  server.CreateTenant("acme");
  const std::string dir = server.data_dir();
  auto admin = [&](std::vector<std::string> args) {
    std::vector<std::string> all = {"--server", server.address(), "--key-file", dir + "/admin.key"};
    all.insert(all.end(), args.begin(), args.end());
    return RunCli(dir, "tessera-admin", all);
  };

  CliResult set = admin({"quotas", "set", "--tenant", "acme", "--requests-per-second", "5", "--tokens-per-minute",
                         "60000", "--storage-bytes", "0", "--max-versions", "12"});
  ASSERT_EQ(set.exit_code, 0) << set.err;
  EXPECT_TRUE(absl::StrContains(set.out, "requests_per_second   5")) << set.out;
  EXPECT_TRUE(absl::StrContains(set.out, "storage_bytes         unlimited      override")) << set.out;
  EXPECT_TRUE(absl::StrContains(set.out, "max_queued_jobs       100            default")) << set.out;

  CliResult get = admin({"--json", "quotas", "get", "--tenant", "acme"});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  nlohmann::json j = nlohmann::json::parse(get.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << get.out;
  // --json: proto field names; int64 fields are JSON strings in proto3's JSON mapping.
  EXPECT_EQ(j["quotas"]["effective"]["requests_per_second"], "5") << get.out;
  EXPECT_EQ(j["quotas"]["effective"]["tokens_per_minute"], "60000") << get.out;
  EXPECT_EQ(j["quotas"]["effective"]["max_versions"], "12") << get.out;
  EXPECT_EQ(j["quotas"]["effective"]["max_queued_jobs"], "100") << get.out;
  EXPECT_EQ(j["quotas"]["overrides"]["storage_bytes"], "0") << get.out;
  EXPECT_FALSE(j["quotas"]["overrides"].contains("max_queued_jobs")) << get.out;

  // "default" removes an override; unnamed quotas stay.
  CliResult reset = admin({"--json", "quotas", "set", "--tenant", "acme", "--max-versions", "default"});
  ASSERT_EQ(reset.exit_code, 0) << reset.err;
  j = nlohmann::json::parse(reset.out, nullptr, false);
  EXPECT_FALSE(j["quotas"]["overrides"].contains("max_versions")) << reset.out;
  EXPECT_EQ(j["quotas"]["overrides"]["requests_per_second"], "5") << reset.out;

  // Usage errors (exit 2) and refusals (exit 1), one line on stderr.
  CliResult bad = admin({"quotas", "set", "--tenant", "acme", "--max-versions", "-3"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(bad.err, "--max-versions needs an integer >= 0")) << bad.err;
  CliResult none = admin({"quotas", "set", "--tenant", "acme"});
  EXPECT_EQ(none.exit_code, 2) << none.err;
  CliResult unknown = admin({"quotas", "set", "--tenant", "acme", "--max-jobs", "3"});
  EXPECT_EQ(unknown.exit_code, 2) << unknown.err;
  CliResult missing = admin({"quotas", "get", "--tenant", "nobody"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(missing.err, "nobody")) << missing.err;
}

TEST(QuotasCliTest, ServerHelpDocumentsTheDefaultFlags) {
  TestServer server;  // only for a scratch dir
  CliResult help = RunCli(server.data_dir(), "tessera-server", {"--help"});
  ASSERT_EQ(help.exit_code, 0);
  for (const char* flag : {"--default-requests-per-second", "--default-tokens-per-minute", "--default-max-running-jobs",
                           "--default-max-queued-jobs", "--default-storage-bytes", "--default-max-versions"}) {
    EXPECT_TRUE(absl::StrContains(help.out, flag)) << flag;
  }
  CliResult bad = RunCli(server.data_dir(), "tessera-server",
                         {"--data-dir", server.data_dir() + "/x", "--default-max-versions", "-1"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(bad.err, "--default-max-versions needs an integer >= 0")) << bad.err;
}

// What --help says each default is, and what the real binary then applies: started without quota flags
// but one (which must win), a tenant's GetQuotas defaults are the documented numbers.
TEST(QuotasCliTest, ServerHelpStatesTheDefaultsTheServerApplies) {
  TestServer scratch;  // only for a scratch dir
  const std::string dir = scratch.data_dir();
  CliResult help = RunCli(dir, "tessera-server", {"--help"});
  ASSERT_EQ(help.exit_code, 0);
  std::map<std::string, int64_t> documented;
  for (const char* name : {"requests_per_second", "tokens_per_minute", "max_running_jobs", "max_queued_jobs",
                           "storage_bytes", "max_versions"}) {
    std::string flag = absl::StrCat("--default-", name);
    std::replace(flag.begin(), flag.end(), '_', '-');
    const size_t at = help.out.find(flag + " N");
    ASSERT_NE(at, std::string::npos) << flag;
    const size_t d = help.out.find("(default ", at);
    ASSERT_NE(d, std::string::npos) << flag;
    int64_t v = -1;
    const size_t start = d + 9;
    ASSERT_TRUE(absl::SimpleAtoi(help.out.substr(start, help.out.find_first_not_of("0123456789", start) - start), &v))
        << flag;
    documented[name] = v;
  }

  const std::string data = dir + "/real";
  const std::string bin = absl::StrCat(std::getenv("TESSERA_BINARY_DIR") != nullptr ? std::getenv("TESSERA_BINARY_DIR")
                                                                                     : TESSERA_DEFAULT_BINARY_DIR,
                                       "/services/");
  ASSERT_EQ(std::system(absl::StrCat(bin, "tessera-server --data-dir ", data,
                                     " --backbone random:tiny --no-jobs --listen 127.0.0.1:0 --default-max-versions 7 >",
                                     dir, "/server.out 2>", dir, "/server.err & echo $! >", dir, "/server.pid")
                            .c_str()),
            0);
  std::string port;
  for (int i = 0; i < 1200 && port.empty(); ++i) {  // up to 2 minutes on a busy machine
    const std::string out = ReadAll(dir + "/server.out");
    const size_t at = out.find("listening on port ");
    if (at != std::string::npos) {
      port = out.substr(at + 18, out.find_first_not_of("0123456789", at + 18) - (at + 18));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  const int pid = std::atoi(ReadAll(dir + "/server.pid").c_str());
  auto stop = [pid] {
    if (pid <= 0) return;
    ::kill(pid, SIGTERM);
    for (int i = 0; i < 300 && ::kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  };
  if (port.empty()) stop();
  ASSERT_FALSE(port.empty()) << ReadAll(dir + "/server.err");
  auto admin = [&](std::vector<std::string> args) {
    std::vector<std::string> all = {"--server", "127.0.0.1:" + port, "--key-file", data + "/admin.key"};
    all.insert(all.end(), args.begin(), args.end());
    return RunCli(dir, "tessera-admin", all);
  };
  CliResult created = admin({"tenants", "create", "acme"});
  CliResult get = admin({"--json", "quotas", "get", "--tenant", "acme"});
  stop();
  ASSERT_EQ(created.exit_code, 0) << created.err;
  ASSERT_EQ(get.exit_code, 0) << get.err;
  nlohmann::json j = nlohmann::json::parse(get.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << get.out;
  for (const auto& [name, value] : documented) {
    // proto3 JSON: int64 as a string, and a zero field is left out.
    const nlohmann::json& d = j["quotas"]["defaults"];
    const int64_t served = d.contains(name) ? std::stoll(d[name].get<std::string>()) : 0;
    EXPECT_EQ(served, name == "max_versions" ? 7 : value) << name << " in " << get.out;
  }
  EXPECT_EQ(documented["max_versions"], 1000);  // the flag above replaced a documented default
}

}  // namespace
}  // namespace tessera::services::testing
