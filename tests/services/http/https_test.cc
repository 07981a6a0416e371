// TLS on the HTTP listener (issue 19 §1): the server's --tls-cert/--tls-key/--tls-client-ca serve the
// HTTP API over HTTPS, checked with libcurl and certificates made at test time (test_pki.h): a round
// trip, a plain-HTTP client and a client trusting another CA refused, mutual TLS refusing clients
// without a certificate of the trusted CA, and the refusal of a plaintext non-loopback --http-listen
// (while TLS lifts it for --http-listen but not for the always-plaintext --metrics-listen).
#include <filesystem>

#include "gtest/gtest.h"
#include "services/core_components.h"
#include "tests/services/http/http_client.h"
#include "tests/services/test_pki.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

TestServerOptions TlsHttp(const Pki& pki, bool mutual) {
  TestServerOptions o;
  o.http = true;
  o.tls_cert = pki.Path("server.pem");
  o.tls_key = pki.Path("server.key");
  o.tls_ca_for_clients = pki.Path("ca.pem");
  if (mutual) {
    o.tls_client_ca = pki.Path("ca.pem");
    o.tls_client_cert = pki.Path("client.pem");
    o.tls_client_key = pki.Path("client.key");
  }
  return o;
}

TEST(HttpsTest, RoundTripAndPlainOrUntrustingClientsRefused) {
  Pki pki;
  TestServer server(TlsHttp(pki, /*mutual=*/false));
  const int port = server.server().http_port();
  server.CreateTenant("acme");
  HttpReply ok = ApiClient(port, server.admin_key(), {.ca_file = pki.Path("ca.pem")}).Get("/v1/models");
  ASSERT_EQ(ok.status, 200) << ok.error << ok.body;
  EXPECT_EQ(ok.json["object"], "list");
  HttpReply bad_key = ApiClient(port, "nope", {.ca_file = pki.Path("ca.pem")}).Get("/v1/models");
  EXPECT_EQ(bad_key.status, 401);  // TLS does not replace the key
  // Plain HTTP to the TLS port gets no HTTP answer.
  HttpReply plain = ApiClient(port, server.admin_key()).Get("/v1/models");
  EXPECT_NE(plain.status, 200) << plain.body;
  // A client that trusts another CA refuses the server's certificate.
  HttpReply untrusting = ApiClient(port, server.admin_key(), {.ca_file = pki.Path("other-ca.pem")}).Get("/v1/models");
  EXPECT_EQ(untrusting.status, 0);
  EXPECT_FALSE(untrusting.error.empty());
}

TEST(HttpsTest, MutualTlsNeedsAClientCertificateOfTheTrustedCa) {
  Pki pki;
  TestServer server(TlsHttp(pki, /*mutual=*/true));
  const int port = server.server().http_port();
  HttpReply ok = ApiClient(port, server.admin_key(),
                           {.ca_file = pki.Path("ca.pem"), .cert_file = pki.Path("client.pem"),
                            .key_file = pki.Path("client.key")})
                     .Get("/v1/models");
  EXPECT_EQ(ok.status, 200) << ok.error << ok.body;
  HttpReply none = ApiClient(port, server.admin_key(), {.ca_file = pki.Path("ca.pem")}).Get("/v1/models");
  EXPECT_EQ(none.status, 0) << none.body;
  HttpReply stranger = ApiClient(port, server.admin_key(),
                                 {.ca_file = pki.Path("ca.pem"), .cert_file = pki.Path("stranger.pem"),
                                  .key_file = pki.Path("stranger.key")})
                           .Get("/v1/models");
  EXPECT_EQ(stranger.status, 0) << stranger.body;
}

TEST(HttpsTest, PlaintextHttpListenOnlyOnLoopbackUnlessTlsOrAllowInsecure) {
  Pki pki;
  char tmpl[] = "/tmp/tessera_https_data_XXXXXX";
  std::string dir = mkdtemp(tmpl);
  ServerOptions so;
  so.data_dir = dir;
  so.listen = "127.0.0.1:0";
  so.http_listen = "0.0.0.0:0";
  absl::StatusOr<std::unique_ptr<TesseraServer>> s = TesseraServer::Start(so, ServerComponents());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.status().message().find("--http-listen"), std::string::npos) << s.status();
  // With TLS the HTTP listener may face the network...
  so.tls_cert_file = pki.Path("server.pem");
  so.tls_key_file = pki.Path("server.key");
  s = TesseraServer::Start(so, ServerComponents());
  ASSERT_TRUE(s.ok()) << s.status();
  const int port = (*s)->http_port();
  HttpReply r = ApiClient(port, "nope", {.ca_file = pki.Path("ca.pem")}).Get("/v1/models");
  EXPECT_EQ(r.status, 401) << r.error;
  (*s)->Shutdown();
  s->reset();
  // ...but the metrics listener stays plain HTTP: loopback only, TLS or not.
  so.metrics_listen = "0.0.0.0:0";
  s = TesseraServer::Start(so, ServerComponents());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("--metrics-listen"), std::string::npos) << s.status();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tessera::services::testing
