// Test certificates made at test time by openssl (Debian's `openssl`, in ops/install-deps.sh): a CA,
// another CA, a server certificate for localhost/127.0.0.1 and client certificates, in a temp dir
// removed at the end. Shared by the gRPC (tls_test.cc) and HTTPS (http/https_test.cc) tests.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace tessera::services::testing {

// A CA plus server and client certificates in a temp dir (openssl, RSA 2048, valid for a day).
class Pki {
 public:
  Pki() {
    char tmpl[] = "/tmp/tessera_tls_test_XXXXXX";
    dir_ = mkdtemp(tmpl);
    MakeCa("ca");
    MakeCa("other-ca");
    Sign("server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1");
    Sign("client", "ca", "extendedKeyUsage=clientAuth");
    Sign("stranger", "other-ca", "extendedKeyUsage=clientAuth");
  }
  ~Pki() { std::filesystem::remove_all(dir_); }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  std::string Pem(const std::string& name) const {
    std::ifstream in(Path(name));
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }

 private:
  static int Run(const std::string& cmd) {
    int rc = std::system(cmd.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  }
  void MakeCa(const std::string& name) {
    ASSERT_EQ(Run(absl::StrCat("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=", name,
                              " -keyout ", Path(name + ".key"), " -out ", Path(name + ".pem"),
                              " >/dev/null 2>&1")),
              0);
  }
  void Sign(const std::string& name, const std::string& ca, const std::string& ext) {
    std::ofstream(Path(name + ".ext")) << ext << "\n";
    ASSERT_EQ(Run(absl::StrCat("openssl req -newkey rsa:2048 -nodes -subj /CN=", name == "server" ? "localhost" : name,
                              " -keyout ", Path(name + ".key"), " -out ", Path(name + ".csr"), " >/dev/null 2>&1")),
              0);
    ASSERT_EQ(Run(absl::StrCat("openssl x509 -req -in ", Path(name + ".csr"), " -CA ", Path(ca + ".pem"), " -CAkey ",
                              Path(ca + ".key"), " -CAcreateserial -days 1 -extfile ", Path(name + ".ext"),
                              " -out ", Path(name + ".pem"), " >/dev/null 2>&1")),
              0);
  }
  std::string dir_;
};

}  // namespace tessera::services::testing
