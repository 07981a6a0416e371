// Fine-tuning through the HTTP API end to end on a real server (random:tiny, real trainer): upload a
// chat-format JSONL file, create a job, poll it to "succeeded", read its events, and generate with the
// fine_tuned_model; plus the files/jobs errors, cancel, n_epochs and tenant isolation.
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/services/http/http_client.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

using nlohmann::json;

// n chat examples {"messages": [user "add(a,b)=", assistant "<a+b>"]}.
std::string ChatAdditionJsonl(int n) {
  std::string out;
  for (int i = 0; i < n; ++i) {
    int a = (i * 7) % 31, b = (i * 13) % 29;
    json line = {{"messages", {{{"role", "user"}, {"content", absl::StrCat("add(", a, ",", b, ")=")}},
                               {{"role", "assistant"}, {"content", std::to_string(a + b)}}}}};
    out += line.dump() + "\n";
  }
  return out;
}

json WaitForJob(ApiClient& api, const std::string& id, int timeout_s) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  json job;
  while (std::chrono::steady_clock::now() < deadline) {
    HttpReply r = api.Get("/v1/fine_tuning/jobs/" + id);
    EXPECT_EQ(r.status, 200) << r.body;
    job = r.json;
    std::string status = job.value("status", "");
    if (status == "succeeded" || status == "failed" || status == "cancelled") return job;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ADD_FAILURE() << "job " << id << " did not finish in " << timeout_s << " s: " << job.dump();
  return job;
}

TEST(HttpFineTuningTest, UploadTrainPollAndServeTheFineTunedModel) {
  TestServerOptions o = WithModel();
  o.training = true;
  o.http = true;
  TestServer server(o);
  std::string key = server.CreateTenant("acme");
  std::string beta_key = server.CreateTenant("beta");
  ApiClient api(server.server().http_port(), key);

  // Files: validated like Datasets.UploadDataset, errors name the form field (and the line).
  HttpReply bad = api.UploadFile("bad.jsonl", ChatAdditionJsonl(2) + "{not json\n", "fine-tune");
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_EQ(bad.error_field("param"), "file");
  EXPECT_NE(bad.error_field("message").find("line 3"), std::string::npos) << bad.body;
  HttpReply purpose = api.UploadFile("a.jsonl", ChatAdditionJsonl(2), "assistants");
  EXPECT_EQ(purpose.status, 400);
  EXPECT_EQ(purpose.error_field("param"), "purpose");

  std::string data = ChatAdditionJsonl(40);
  HttpReply file = api.UploadFile("train.jsonl", data, "fine-tune");
  ASSERT_EQ(file.status, 200) << file.body;
  EXPECT_EQ(file.json["object"], "file");
  EXPECT_EQ(file.json["purpose"], "fine-tune");
  EXPECT_EQ(file.json["filename"], "train.jsonl");
  EXPECT_EQ(file.json["bytes"], data.size());
  EXPECT_EQ(file.json["tessera"]["examples"], 40);
  std::string file_id = file.json["id"];
  HttpReply files = api.Get("/v1/files");
  ASSERT_EQ(files.status, 200);
  ASSERT_EQ(files.json["data"].size(), 1u);
  EXPECT_EQ(files.json["data"][0]["id"], file_id);
  EXPECT_EQ(api.Get("/v1/files/" + file_id + "/content").body, data);
  EXPECT_EQ(ApiClient(server.server().http_port(), beta_key).Get("/v1/files/" + file_id).status, 404);

  // Job errors name OpenAI's fields.
  HttpReply missing = api.Post("/v1/fine_tuning/jobs", {{"model", "acme"}, {"training_file", "ds_nope"}});
  EXPECT_EQ(missing.status, 404) << missing.body;
  EXPECT_EQ(missing.error_field("param"), "training_file");
  HttpReply wrong = api.Post("/v1/fine_tuning/jobs", {{"model", "acme"}, {"training_file", file_id},
                                                      {"hyperparameters", {{"max_steps", "many"}}}});
  EXPECT_EQ(wrong.status, 400);
  EXPECT_EQ(wrong.error_field("param"), "hyperparameters.max_steps");
  HttpReply epochs0 = api.Post("/v1/fine_tuning/jobs", {{"model", "acme"}, {"training_file", file_id},
                                                        {"hyperparameters", {{"n_epochs", 0}}}});
  EXPECT_EQ(epochs0.status, 400);
  EXPECT_EQ(epochs0.error_field("param"), "hyperparameters.n_epochs");
  EXPECT_EQ(api.Post("/v1/fine_tuning/jobs", {{"model", "beta"}, {"training_file", file_id}}).status, 404);
  for (const json& bad : {json("two words"), json(std::string(65, 'a')), json("a/b"), json(7)}) {
    HttpReply r = api.Post("/v1/fine_tuning/jobs", {{"model", "acme"}, {"training_file", file_id}, {"suffix", bad}});
    EXPECT_EQ(r.status, 400) << bad.dump() << " -> " << r.body;
    EXPECT_EQ(r.error_field("param"), "suffix") << bad.dump() << " -> " << r.body;
  }

  HttpReply created = api.Post(
      "/v1/fine_tuning/jobs",
      {{"model", "acme"}, {"training_file", file_id}, {"seed", 3}, {"suffix", "adder"},
       {"hyperparameters", {{"max_steps", 4}, {"batch_size", 4}, {"seq_len", 96}}}});
  ASSERT_EQ(created.status, 200) << created.body;
  EXPECT_EQ(created.json["object"], "fine_tuning.job");
  EXPECT_EQ(created.json["model"], "acme:0");
  EXPECT_EQ(created.json["training_file"], file_id);
  EXPECT_TRUE(created.json["fine_tuned_model"].is_null());
  EXPECT_EQ(created.json["hyperparameters"]["batch_size"], 4);
  EXPECT_EQ(created.json["seed"], 3);
  EXPECT_EQ(created.json["user_provided_suffix"], "adder");
  std::string status = created.json["status"];
  EXPECT_TRUE(status == "queued" || status == "running") << status;
  std::string job_id = created.json["id"];
  EXPECT_EQ(ApiClient(server.server().http_port(), beta_key).Get("/v1/fine_tuning/jobs/" + job_id).status, 404);

  json job = WaitForJob(api, job_id, 240);
  ASSERT_EQ(job["status"], "succeeded") << job.dump();
  EXPECT_EQ(job["fine_tuned_model"], "acme:1");
  EXPECT_TRUE(job["finished_at"].is_number_integer());
  EXPECT_TRUE(job["error"].is_null());
  EXPECT_EQ(job["user_provided_suffix"], "adder");  // stored with the job; the model name stays acme:1

  HttpReply listed = api.Get("/v1/fine_tuning/jobs");
  ASSERT_EQ(listed.status, 200);
  EXPECT_EQ(listed.json["data"][0]["id"], job_id);
  EXPECT_EQ(listed.json["has_more"], false);

  HttpReply events = api.Get("/v1/fine_tuning/jobs/" + job_id + "/events?limit=1000");
  ASSERT_EQ(events.status, 200) << events.body;
  bool metrics = false;
  int64_t prev = INT64_MAX;
  for (const json& e : events.json["data"]) {
    EXPECT_EQ(e["object"], "fine_tuning.job.event");
    int64_t seq = e["tessera"]["seq"];
    EXPECT_LT(seq, prev) << "newest first";
    prev = seq;
    if (e["type"] == "metrics" && e["data"].contains("train_loss")) metrics = true;
  }
  EXPECT_TRUE(metrics) << events.body;
  EXPECT_EQ(events.json["data"][0]["message"], "Job succeeded");
  HttpReply page = api.Get("/v1/fine_tuning/jobs/" + job_id + "/events?limit=2");
  ASSERT_EQ(page.json["data"].size(), 2u);
  EXPECT_EQ(page.json["has_more"], true);
  HttpReply next = api.Get("/v1/fine_tuning/jobs/" + job_id + "/events?limit=1&after=" +
                           page.json["data"][1]["id"].get<std::string>());
  EXPECT_EQ(next.json["data"][0]["id"], events.json["data"][2]["id"]);

  // The fine-tuned model serves, named in the header; the base stays available as acme:0.
  json chat = {{"model", job["fine_tuned_model"]},
               {"messages", {{{"role", "user"}, {"content", "add(3,4)="}}}},
               {"max_tokens", 4},
               {"temperature", 0}};
  HttpReply tuned = api.Post("/v1/chat/completions", chat);
  ASSERT_EQ(tuned.status, 200) << tuned.body;
  EXPECT_EQ(tuned.header("X-Tessera-Expert-Version"), "1");
  chat["model"] = "acme:0";
  EXPECT_EQ(api.Post("/v1/chat/completions", chat).header("X-Tessera-Expert-Version"), "0");

  // n_epochs N: N passes over the file (40 examples) at the job's batch size; then cancel it (2000 epochs:
  // it cannot finish before the cancel arrives, however slowly this thread runs).
  HttpReply by_epochs =
      api.Post("/v1/fine_tuning/jobs", {{"model", "acme:1"}, {"training_file", file_id},
                                        {"hyperparameters", {{"n_epochs", 2000}, {"batch_size", 4}}}});
  ASSERT_EQ(by_epochs.status, 200) << by_epochs.body;
  EXPECT_EQ(by_epochs.json["hyperparameters"]["max_steps"], 20000);
  EXPECT_EQ(by_epochs.json["model"], "acme:1");
  std::string second = by_epochs.json["id"];
  HttpReply cancelled = api.Post("/v1/fine_tuning/jobs/" + second + "/cancel", json::object());
  ASSERT_EQ(cancelled.status, 200) << cancelled.body;
  EXPECT_EQ(cancelled.json["status"], "cancelled");
  HttpReply again = api.Post("/v1/fine_tuning/jobs/" + second + "/cancel", json::object());
  EXPECT_EQ(again.status, 400) << again.body;
  // An admin key finds any tenant's job without naming the tenant.
  HttpReply admin = ApiClient(server.server().http_port(), server.admin_key()).Get("/v1/fine_tuning/jobs/" + second);
  EXPECT_EQ(admin.status, 200);
  EXPECT_EQ(admin.json["status"], "cancelled");
}

}  // namespace
}  // namespace tessera::services::testing
