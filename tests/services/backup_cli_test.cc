// The real binaries: `tessera-admin backup --out DIR` (--json summary, progress on stderr, refusals as
// one line and exit 1) and `tessera-server --restore DIR --data-dir NEW` (serves the restored registry
// to the old admin key; a non-empty data dir or a damaged backup exits non-zero naming the problem and
// leaves the data dir as it was).
#include <signal.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

namespace fs = std::filesystem;

std::string Bin(const std::string& name) {
  const char* env = std::getenv("TESSERA_BINARY_DIR");
  return absl::StrCat(env != nullptr ? env : TESSERA_DEFAULT_BINARY_DIR, "/services/", name);
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

struct Result {
  int code = -1;
  std::string out, err;
};

// Runs a shell command line with stdout/stderr captured in files under `dir`.
Result Sh(const std::string& dir, const std::string& cmd) {
  const std::string out = dir + "/out.txt", err = dir + "/err.txt";
  const int status = std::system(absl::StrCat(cmd, " >", out, " 2>", err).c_str());
  return Result{WIFEXITED(status) ? WEXITSTATUS(status) : -1, ReadAll(out), ReadAll(err)};
}

class ScratchDir {
 public:
  ScratchDir() {
    char tmpl[] = "/tmp/tessera_backup_cli_XXXXXX";
    root_ = mkdtemp(tmpl);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  std::string Path(const std::string& name) const { return root_ + "/" + name; }
  const std::string& root() const { return root_; }

 private:
  std::string root_;
};

TEST(BackupCliTest, BackupThenRestoreWithTheRealBinaries) {
  TestServer a;
  const std::string acme_key = a.CreateTenant("acme");
  v1::Dataset ds;
  ASSERT_TRUE(a.Upload(acme_key, "acme", "d", AdditionJsonl(8), &ds).ok());
  ScratchDir scratch;
  const std::string admin = absl::StrCat("TESSERA_ADMIN_KEY=", a.admin_key(), " ", Bin("tessera-admin"),
                                         " --server ", a.address());

  // --json: one JSON object; the directory is complete and verified.
  Result r = Sh(scratch.root(), absl::StrCat(admin, " --json backup --out ", scratch.Path("b1")));
  ASSERT_EQ(r.code, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_EQ(j["files"], 2);
  EXPECT_EQ(j["counts"]["tenants"], 1);
  EXPECT_EQ(j["counts"]["datasets"], 1);
  EXPECT_EQ(j["verified"], true);
  EXPECT_TRUE(fs::exists(scratch.Path("b1/manifest.json")));
  EXPECT_NE(r.err.find("backup: 100%"), std::string::npos) << r.err;  // progress (not a terminal)
  // Human output; an existing non-empty --out is refused in one line, exit 1.
  r = Sh(scratch.root(), absl::StrCat(admin, " backup --out ", scratch.Path("b1")));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("exists and is not empty"), std::string::npos) << r.err;
  r = Sh(scratch.root(), absl::StrCat("TESSERA_ADMIN_KEY=", acme_key, " ", Bin("tessera-admin"), " --server ",
                                      a.address(), " backup --out ", scratch.Path("b2")));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("PERMISSION_DENIED"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(scratch.Path("b2")));

  // --restore into a non-empty data dir: refused before anything loads, the dir untouched.
  fs::create_directories(scratch.Path("busy"));
  std::ofstream(scratch.Path("busy/keep")) << "mine";
  const std::string server = Bin("tessera-server");
  r = Sh(scratch.root(), absl::StrCat(server, " --restore ", scratch.Path("b1"), " --data-dir ", scratch.Path("busy"),
                                      " --backbone random:tiny --listen 127.0.0.1:0"));
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("is not empty"), std::string::npos) << r.err;
  EXPECT_EQ(ReadAll(scratch.Path("busy/keep")), "mine");
  // A damaged backup: refused naming the file, the data dir not created.
  fs::copy(scratch.Path("b1"), scratch.Path("bad"), fs::copy_options::recursive);
  std::ofstream(scratch.Path("bad/registry.db"), std::ios::app) << "x";
  r = Sh(scratch.root(), absl::StrCat(server, " --restore ", scratch.Path("bad"), " --data-dir ", scratch.Path("new1"),
                                      " --backbone random:tiny --listen 127.0.0.1:0"));
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("registry.db"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(scratch.Path("new1/registry.db")));

  // A good restore serves: the old admin key lists the tenant, the old tenant key reads its dataset.
  const std::string log = scratch.Path("server.out");
  const std::string pid_file = scratch.Path("server.pid");
  ASSERT_EQ(std::system(absl::StrCat(server, " --restore ", scratch.Path("b1"), " --data-dir ", scratch.Path("new2"),
                                     " --backbone random:tiny --no-jobs --listen 127.0.0.1:0 >", log, " 2>",
                                     scratch.Path("server.err"), " & echo $! >", pid_file)
                            .c_str()),
            0);
  std::string port;
  for (int i = 0; i < 3000 && port.empty(); ++i) {  // up to 300 s: a busy machine starts it slowly
    const std::string out = ReadAll(log);
    const size_t at = out.find("listening on port ");
    if (at != std::string::npos) {
      port = out.substr(at + 18, out.find_first_not_of("0123456789", at + 18) - (at + 18));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  const int pid = std::atoi(ReadAll(pid_file).c_str());
  ASSERT_FALSE(port.empty()) << ReadAll(log) << ReadAll(scratch.Path("server.err"));
  EXPECT_NE(ReadAll(log).find("restored " + scratch.Path("b1")), std::string::npos) << ReadAll(log);
  r = Sh(scratch.root(), absl::StrCat("TESSERA_ADMIN_KEY=", a.admin_key(), " ", Bin("tessera-admin"),
                                      " --server 127.0.0.1:", port, " tenants list"));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("acme"), std::string::npos) << r.out;
  r = Sh(scratch.root(), absl::StrCat("TESSERA_API_KEY=", acme_key, " TESSERA_TENANT=acme ", Bin("tessera"),
                                      " --server 127.0.0.1:", port, " datasets list"));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find(ds.dataset_id()), std::string::npos) << r.out;
  if (pid > 0) ::kill(pid, SIGTERM);
  for (int i = 0; i < 100 && pid > 0 && ::kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
}

}  // namespace
}  // namespace tessera::services::testing
