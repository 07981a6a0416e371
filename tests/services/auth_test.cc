// Authentication and tenant scoping through a real server: missing / malformed / unknown / revoked
// keys, TENANT keys on the Admin service and on other tenants, and the bootstrap admin key file.
#include <sys/stat.h>

#include "gtest/gtest.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

TEST(AuthTest, BootstrapWritesAdminKeyWithMode0600AndOnlyOnce) {
  TestServer server;
  struct stat st;
  ASSERT_EQ(stat((server.data_dir() + "/admin.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  EXPECT_TRUE(server.server().bootstrap().created_admin_key);
  EXPECT_EQ(server.server().bootstrap().admin_key, server.admin_key());
  std::string first = server.admin_key();
  server.Restart();
  EXPECT_FALSE(server.server().bootstrap().created_admin_key);
  EXPECT_EQ(server.admin_key(), first);  // the file is not rewritten
  v1::ListTenantsResponse resp;
  EXPECT_TRUE(server.Admin()->ListTenants(Ctx(first).get(), {}, &resp).ok());
}

TEST(AuthTest, MissingMalformedUnknownKeysAreUnauthenticated) {
  TestServer server;
  v1::ListTenantsResponse resp;
  grpc::Status st = server.Admin()->ListTenants(Ctx("").get(), {}, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_NE(st.error_message().find("authorization"), std::string::npos) << st.error_message();

  grpc::ClientContext raw;
  raw.AddMetadata("authorization", "Basic abc");
  st = server.Admin()->ListTenants(&raw, {}, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_NE(st.error_message().find("Bearer"), std::string::npos) << st.error_message();

  st = server.Admin()->ListTenants(Ctx("tsk_nope_nope").get(), {}, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);

  // Tenant-facing services authenticate too, before looking at the request.
  v1::ListDatasetsRequest req;
  req.set_tenant_id("acme");
  v1::ListDatasetsResponse dresp;
  st = server.Datasets()->ListDatasets(Ctx("garbage").get(), req, &dresp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST(AuthTest, RevokedKeyStopsWorkingImmediately) {
  TestServer server;
  std::string key = server.CreateTenant("acme");
  v1::IssueApiKeyRequest ireq;
  ireq.set_tenant_id("acme");
  v1::IssueApiKeyResponse second;
  ASSERT_TRUE(server.Admin()->IssueApiKey(Ctx(server.admin_key()).get(), ireq, &second).ok());

  v1::ListDatasetsRequest req;
  req.set_tenant_id("acme");
  v1::ListDatasetsResponse resp;
  ASSERT_TRUE(server.Datasets()->ListDatasets(Ctx(second.api_key().secret()).get(), req, &resp).ok());

  v1::RevokeApiKeyRequest rreq;
  rreq.set_key_id(second.api_key().key_id());
  v1::RevokeApiKeyResponse rresp;
  ASSERT_TRUE(server.Admin()->RevokeApiKey(Ctx(server.admin_key()).get(), rreq, &rresp).ok());
  EXPECT_TRUE(rresp.api_key().has_revoked_at());
  grpc::Status st = server.Datasets()->ListDatasets(Ctx(second.api_key().secret()).get(), req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // The other key of the tenant is unaffected.
  EXPECT_TRUE(server.Datasets()->ListDatasets(Ctx(key).get(), req, &resp).ok());
  // Revoking twice is a state conflict.
  st = server.Admin()->RevokeApiKey(Ctx(server.admin_key()).get(), rreq, &rresp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

TEST(AuthTest, TenantKeyCannotUseAdminServiceOrOtherTenants) {
  TestServer server;
  std::string acme = server.CreateTenant("acme");
  server.CreateTenant("globex-secret-name");
  v1::ListTenantsResponse tresp;
  grpc::Status st = server.Admin()->ListTenants(Ctx(acme).get(), {}, &tresp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);

  v1::ListDatasetsRequest req;
  req.set_tenant_id("globex-secret-name");
  v1::ListDatasetsResponse resp;
  st = server.Datasets()->ListDatasets(Ctx(acme).get(), req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(st.error_message().find("globex"), std::string::npos) << st.error_message();

  // Missing or malformed tenant_id: INVALID_ARGUMENT naming the field.
  req.set_tenant_id("");
  st = server.Datasets()->ListDatasets(Ctx(acme).get(), req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("tenant_id"), std::string::npos);
  req.set_tenant_id("Not A Slug");
  st = server.Datasets()->ListDatasets(Ctx(acme).get(), req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // An ADMIN key may act for any tenant; an unknown tenant is NOT_FOUND.
  req.set_tenant_id("acme");
  EXPECT_TRUE(server.Datasets()->ListDatasets(Ctx(server.admin_key()).get(), req, &resp).ok());
  req.set_tenant_id("nobody");
  st = server.Datasets()->ListDatasets(Ctx(server.admin_key()).get(), req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace tessera::services::testing
