// TLS on the gRPC listener, with certificates made at test time by openssl (a CA, a server certificate
// for 127.0.0.1/localhost and a client certificate, all signed by the CA): a TLS round trip, a plaintext
// client refused by a TLS server, mutual TLS refusing a client without a certificate (and one whose
// certificate another CA signed), the refusal to serve plaintext on a non-loopback address without
// --allow-insecure (TesseraServer::Start and the tessera-server binary), and the CLIs' --tls-ca /
// --tls-cert / --tls-key.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "services/core_components.h"
#include "tests/services/test_pki.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

int Sh(const std::string& cmd) {
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string BinaryDir() {
  const char* env = std::getenv("TESSERA_BINARY_DIR");
  return absl::StrCat(env != nullptr ? env : TESSERA_DEFAULT_BINARY_DIR, "/services");
}

std::shared_ptr<grpc::Channel> TlsChannel(const std::string& address, const Pki& pki, const std::string& client) {
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = pki.Pem("ca.pem");
  if (!client.empty()) {
    o.pem_cert_chain = pki.Pem(client + ".pem");
    o.pem_private_key = pki.Pem(client + ".key");
  }
  return grpc::CreateChannel(address, grpc::SslCredentials(o));
}

grpc::Status ListTenants(const std::shared_ptr<grpc::Channel>& ch, const std::string& key) {
  v1::ListTenantsResponse resp;
  auto ctx = Ctx(key);
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  return v1::Admin::NewStub(ch)->ListTenants(ctx.get(), {}, &resp);
}

TEST(TlsTest, RoundTripAndPlaintextClientRefused) {
  Pki pki;
  TestServerOptions o;
  o.tls_cert = pki.Path("server.pem");
  o.tls_key = pki.Path("server.key");
  o.tls_ca_for_clients = pki.Path("ca.pem");
  TestServer server(o);
  grpc::Status st = ListTenants(server.channel(), server.admin_key());  // the test server's TLS channel
  EXPECT_TRUE(st.ok()) << st.error_message();
  st = ListTenants(TlsChannel(server.address(), pki, ""), server.admin_key());
  EXPECT_TRUE(st.ok()) << st.error_message();
  st = ListTenants(grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()), server.admin_key());
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
  // A client that trusts another CA refuses the server.
  grpc::SslCredentialsOptions wrong;
  wrong.pem_root_certs = pki.Pem("other-ca.pem");
  st = ListTenants(grpc::CreateChannel(server.address(), grpc::SslCredentials(wrong)), server.admin_key());
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
}

TEST(TlsTest, MutualTlsRefusesClientsWithoutATrustedCertificate) {
  Pki pki;
  TestServerOptions o;
  o.tls_cert = pki.Path("server.pem");
  o.tls_key = pki.Path("server.key");
  o.tls_client_ca = pki.Path("ca.pem");
  o.tls_ca_for_clients = pki.Path("ca.pem");
  o.tls_client_cert = pki.Path("client.pem");
  o.tls_client_key = pki.Path("client.key");
  TestServer server(o);
  grpc::Status st = ListTenants(TlsChannel(server.address(), pki, "client"), server.admin_key());
  EXPECT_TRUE(st.ok()) << st.error_message();
  st = ListTenants(TlsChannel(server.address(), pki, ""), server.admin_key());
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
  st = ListTenants(TlsChannel(server.address(), pki, "stranger"), server.admin_key());
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
}

TEST(TlsTest, BadCertificateFilesAreRefusedByName) {
  Pki pki;
  char tmpl[] = "/tmp/tessera_tls_data_XXXXXX";
  std::string dir = mkdtemp(tmpl);
  ServerOptions so;
  so.data_dir = dir;
  so.listen = "127.0.0.1:0";
  so.tls_cert_file = pki.Path("missing.pem");
  so.tls_key_file = pki.Path("server.key");
  absl::StatusOr<std::unique_ptr<TesseraServer>> s = TesseraServer::Start(so, ServerComponents());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("--tls-cert"), std::string::npos) << s.status();
  so.tls_cert_file = pki.Path("server.pem");
  so.tls_key_file = "";
  s = TesseraServer::Start(so, ServerComponents());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("--tls-key"), std::string::npos) << s.status();
  std::filesystem::remove_all(dir);
}

TEST(TlsTest, PlaintextOnlyOnLoopbackUnlessAllowInsecure) {
  for (const char* ok : {"127.0.0.1:7070", "localhost:1", "[::1]:7070", "127.0.0.2:0", "unix:/tmp/x.sock"}) {
    EXPECT_TRUE(CheckPlaintextListen("--listen", ok, false).ok()) << ok;
  }
  for (const char* bad : {"0.0.0.0:7070", "[::]:7070", "10.1.2.3:7070", "example.com:7070", ":7070"}) {
    absl::Status s = CheckPlaintextListen("--listen", bad, false);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << bad;
    EXPECT_NE(s.message().find("--allow-insecure"), std::string::npos) << s;
    EXPECT_NE(s.message().find("--tls-cert"), std::string::npos) << s;
    EXPECT_TRUE(CheckPlaintextListen("--listen", bad, true).ok()) << bad;
  }
  char tmpl[] = "/tmp/tessera_tls_data_XXXXXX";
  std::string dir = mkdtemp(tmpl);
  ServerOptions so;
  so.data_dir = dir;
  so.listen = "0.0.0.0:0";
  absl::StatusOr<std::unique_ptr<TesseraServer>> s = TesseraServer::Start(so, ServerComponents());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  so.allow_insecure = true;
  s = TesseraServer::Start(so, ServerComponents());
  ASSERT_TRUE(s.ok()) << s.status();
  (*s)->Shutdown();
  s->reset();

  // The binary exits non-zero with the message, before loading any model.
  int rc = Sh(absl::StrCat(BinaryDir(), "/tessera-server --data-dir ", dir, " --listen 0.0.0.0:0 --no-inference --no-jobs >",
                          dir, "/out 2>", dir, "/err"));
  EXPECT_NE(rc, 0);
  EXPECT_NE(ReadAll(dir + "/err").find("--allow-insecure"), std::string::npos) << ReadAll(dir + "/err");
  std::filesystem::remove_all(dir);
}

TEST(TlsTest, ClisTakeTlsCaAndClientCertificate) {
  Pki pki;
  TestServerOptions o;
  o.tls_cert = pki.Path("server.pem");
  o.tls_key = pki.Path("server.key");
  o.tls_client_ca = pki.Path("ca.pem");
  o.tls_ca_for_clients = pki.Path("ca.pem");
  o.tls_client_cert = pki.Path("client.pem");
  o.tls_client_key = pki.Path("client.key");
  TestServer server(o);
  const std::string admin = absl::StrCat(BinaryDir(), "/tessera-admin --server ", server.address(), " --key-file ",
                                         server.data_dir(), "/admin.key");
  const std::string out = server.data_dir() + "/cli.out", err = server.data_dir() + "/cli.err";
  const std::string redirect = absl::StrCat(" >", out, " 2>", err);
  EXPECT_EQ(Sh(absl::StrCat(admin, " --tls-ca ", pki.Path("ca.pem"), " --tls-cert ", pki.Path("client.pem"),
                            " --tls-key ", pki.Path("client.key"), " tenants create acme", redirect)),
            0)
      << ReadAll(err);
  // Without a client certificate the mTLS server refuses; without --tls-ca the client speaks plaintext.
  EXPECT_EQ(Sh(absl::StrCat(admin, " --tls-ca ", pki.Path("ca.pem"), " tenants list", redirect)), 1);
  EXPECT_NE(ReadAll(err).find("UNAVAILABLE"), std::string::npos) << ReadAll(err);
  EXPECT_EQ(Sh(absl::StrCat(admin, " tenants list", redirect)), 1);
  EXPECT_EQ(Sh(absl::StrCat(admin, " --tls-ca ", pki.Path("nope.pem"), " tenants list", redirect)), 2);
  EXPECT_NE(ReadAll(err).find("--tls-ca"), std::string::npos) << ReadAll(err);
  EXPECT_EQ(Sh(absl::StrCat(admin, " --tls-ca ", pki.Path("ca.pem"), " --tls-cert ", pki.Path("client.pem"),
                            " tenants list", redirect)),
            2);  // a certificate without its key
  // The tenant CLI too.
  v1::ListTenantsResponse tenants;
  std::string key;
  {
    auto ctx = Ctx(server.admin_key());
    v1::IssueApiKeyRequest req;
    req.set_tenant_id("acme");
    v1::IssueApiKeyResponse resp;
    ASSERT_TRUE(server.Admin()->IssueApiKey(ctx.get(), req, &resp).ok());
    key = resp.api_key().secret();
  }
  EXPECT_EQ(Sh(absl::StrCat("TESSERA_API_KEY=", key, " ", BinaryDir(), "/tessera --server ", server.address(),
                            " --tenant acme --tls-ca ", pki.Path("ca.pem"), " --tls-cert ", pki.Path("client.pem"),
                            " --tls-key ", pki.Path("client.key"), " datasets list", redirect)),
            0)
      << ReadAll(err);
}

}  // namespace
}  // namespace tessera::services::testing
