// The web console on a real server: the page is served without a key and holds no data; its JSON API
// shows a TENANT key only its own tenant (another tenant's URLs -> 403), lets only ADMIN keys promote and
// roll back (through LiveControl: the next completion is served by the new live version), draws the
// expert heat map from the tenant's routed tokens with the live version's overlay slots, and streams a
// job's loss curve by long polling.
#include <chrono>
#include <thread>

#include "gtest/gtest.h"
#include "tests/services/http/http_client.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

using nlohmann::json;

TestServerOptions Options() {
  TestServerOptions o = WithModel();
  o.training = true;
  o.http = true;
  return o;
}

TEST(HttpConsoleTest, PageIsPublicAndDataIsScopedToTheKey) {
  TestServer server(Options());
  std::string acme = server.CreateTenant("acme");
  server.CreateTenant("beta");
  int port = server.server().http_port();

  HttpReply page = ApiClient(port, "").Get("/console");
  ASSERT_EQ(page.status, 200);
  EXPECT_EQ(page.header("Content-Type").rfind("text/html", 0), 0u);
  EXPECT_NE(page.body.find("id: \"api-key\", type: \"password\""), std::string::npos)
      << "the login form takes an API key";
  EXPECT_EQ(page.body.find("acme"), std::string::npos) << "the page itself carries no data";
  for (const char* external : {"src=\"http", "href=\"http", "url(http", "@import", "<link"}) {
    EXPECT_EQ(page.body.find(external), std::string::npos) << "no external resources: " << external;
  }
  EXPECT_EQ(ApiClient(port, "").Get("/console/api/tenants").status, 401);

  ApiClient tenant(port, acme);
  HttpReply me = tenant.Get("/console/api/me");
  ASSERT_EQ(me.status, 200);
  EXPECT_EQ(me.json["role"], "tenant");
  EXPECT_EQ(me.json["tenant"], "acme");
  HttpReply tenants = tenant.Get("/console/api/tenants");
  ASSERT_EQ(tenants.json["tenants"].size(), 1u);
  EXPECT_EQ(tenants.json["tenants"][0]["tenant_id"], "acme");
  for (const char* path : {"/console/api/tenants/beta", "/console/api/tenants/beta/jobs",
                           "/console/api/tenants/beta/experts", "/console/api/tenants/nosuch"}) {
    HttpReply r = tenant.Get(path);
    EXPECT_EQ(r.status, 403) << path << " " << r.body;
    EXPECT_EQ(r.body.find("beta"), std::string::npos) << "errors never name another tenant";
  }
  EXPECT_EQ(tenant.Get("/console/api/tenants/acme").status, 200);

  ApiClient admin(port, server.admin_key());
  HttpReply all = admin.Get("/console/api/tenants");
  ASSERT_EQ(all.json["tenants"].size(), 2u);
  EXPECT_EQ(all.json["tenants"][1]["tenant_id"], "beta");
  EXPECT_FALSE(all.json["tenants"][0]["keys"].empty());
  EXPECT_EQ(all.body.find("tsk_"), std::string::npos) << "never a secret";
  EXPECT_EQ(admin.Get("/console/api/tenants/nosuch").status, 404);
  EXPECT_EQ(admin.Get("/console/api/tenants/beta").status, 200);
}

TEST(HttpConsoleTest, PromoteRollbackHeatMapAndLiveCurve) {
  TestServer server(Options());
  std::string acme = server.CreateTenant("acme");
  int port = server.server().http_port();
  ApiClient tenant(port, acme), admin(port, server.admin_key());
  int64_t v = PublishScaledVersion(server.registry(), "acme", {{0, 1}, {2, 5}}, 3.0f);
  ASSERT_EQ(v, 1);

  HttpReply denied = tenant.Post("/console/api/tenants/acme/promote", {{"version", 1}});
  EXPECT_EQ(denied.status, 403) << denied.body;
  HttpReply promoted = admin.Post("/console/api/tenants/acme/promote", {{"version", 1}});
  ASSERT_EQ(promoted.status, 200) << promoted.body;
  EXPECT_EQ(promoted.json["live_version"], 1);
  HttpReply detail = tenant.Get("/console/api/tenants/acme");
  EXPECT_EQ(detail.json["live_version"], 1);
  EXPECT_EQ(detail.json["versions"][0]["live"], true);
  EXPECT_EQ(detail.json["versions"][0]["slots"], json::parse("[[0,1],[2,5]]"));
  EXPECT_EQ(detail.json["history"][0]["kind"], "promote");
  json req = {{"model", "acme"}, {"prompt", "hello"}, {"max_tokens", 4}, {"temperature", 0}};
  HttpReply served = tenant.Post("/v1/completions", req);
  EXPECT_EQ(served.header("X-Tessera-Expert-Version"), "1");

  // The heat map: this tenant's routed tokens per (layer, expert), the live version's slots.
  HttpReply heat = tenant.Get("/console/api/tenants/acme/experts");
  ASSERT_EQ(heat.status, 200) << heat.body;
  EXPECT_EQ(heat.json["overlay"], json::parse("[[0,1],[2,5]]"));
  ASSERT_EQ(heat.json["tokens"].size(), static_cast<size_t>(heat.json["layers"].get<int>()));
  double total = 0;
  for (const json& layer : heat.json["tokens"]) {
    ASSERT_EQ(layer.size(), static_cast<size_t>(heat.json["experts"].get<int>()));
    for (const json& n : layer) total += n.get<double>();
  }
  int layers = heat.json["layers"];
  int k = server.server().backbone().experts_per_token;
  int tokens = served.json["usage"]["total_tokens"];
  EXPECT_GT(total, 0);
  EXPECT_LE(total, static_cast<double>(layers) * k * tokens) << "at most top-k per token and layer";

  HttpReply back = admin.Post("/console/api/tenants/acme/rollback", json::object());
  ASSERT_EQ(back.status, 200) << back.body;
  EXPECT_EQ(back.json["live_version"], 0);
  EXPECT_EQ(tenant.Post("/v1/completions", req).header("X-Tessera-Expert-Version"), "0");

  // A job's curve: long polls return as events arrive and end with the job.
  v1::Dataset ds;
  ASSERT_TRUE(server.Upload(acme, "acme", "train", AdditionJsonl(40), &ds).ok());
  HttpReply job = tenant.Post("/v1/fine_tuning/jobs", {{"model", "acme"}, {"training_file", ds.dataset_id()},
                                                       {"hyperparameters", {{"max_steps", 6}, {"batch_size", 4}}}});
  ASSERT_EQ(job.status, 200) << job.body;
  std::string id = job.json["id"];
  int64_t after = 0;
  size_t train_points = 0, val_points = 0;
  bool done = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(240);
  while (!done && std::chrono::steady_clock::now() < deadline) {
    HttpReply c = tenant.Get("/console/api/tenants/acme/jobs/" + id + "/curve?after=" + std::to_string(after) + "&wait=5");
    ASSERT_EQ(c.status, 200) << c.body;
    EXPECT_GE(c.json["last_seq"].get<int64_t>(), after);
    after = c.json["last_seq"];
    train_points += c.json["train"].size();
    val_points += c.json["val"].size();
    done = c.json["done"];
  }
  ASSERT_TRUE(done);
  EXPECT_GT(train_points, 0u);
  EXPECT_GT(val_points, 0u);
  HttpReply jobs = tenant.Get("/console/api/tenants/acme/jobs");
  EXPECT_EQ(jobs.json["jobs"][0]["status"], "succeeded");
  EXPECT_EQ(admin.Get("/console/api/tenants/acme/jobs/" + id + "/curve?wait=x").status, 400);
}

}  // namespace
}  // namespace tessera::services::testing
