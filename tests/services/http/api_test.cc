// The OpenAI-compatible HTTP API against a real server (random:tiny) on a loopback port, through
// libcurl: models, completions and chat (plain and streamed), the version header, auth and
// OpenAI's error objects. Completion text is checked against gRPC Generate for the same request.
#include <string>

#include "gtest/gtest.h"
#include "tests/services/http/http_client.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

using nlohmann::json;

TestServerOptions HttpWithModel() {
  TestServerOptions o = WithModel();
  o.http = true;
  return o;
}

class HttpApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new TestServer(HttpWithModel());
    acme_key_ = new std::string(server_->CreateTenant("acme"));
    beta_key_ = new std::string(server_->CreateTenant("beta"));
  }
  static void TearDownTestSuite() {
    delete server_;
    delete acme_key_;
    delete beta_key_;
  }
  int port() { return server_->server().http_port(); }
  ApiClient Acme() { return ApiClient(port(), *acme_key_); }

  static TestServer* server_;
  static std::string* acme_key_;
  static std::string* beta_key_;
};
TestServer* HttpApiTest::server_ = nullptr;
std::string* HttpApiTest::acme_key_ = nullptr;
std::string* HttpApiTest::beta_key_ = nullptr;

std::vector<std::string> ModelIds(const HttpReply& r) {
  std::vector<std::string> ids;
  for (const json& m : r.json["data"]) ids.push_back(m["id"].get<std::string>());
  return ids;
}

TEST_F(HttpApiTest, ModelsAreTheCallersTenantVersions) {
  HttpReply r = Acme().Get("/v1/models");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["object"], "list");
  std::vector<std::string> ids = ModelIds(r);
  EXPECT_NE(std::find(ids.begin(), ids.end(), "acme"), ids.end());
  EXPECT_NE(std::find(ids.begin(), ids.end(), "acme:0"), ids.end());
  EXPECT_EQ(std::find(ids.begin(), ids.end(), "beta"), ids.end()) << "a tenant sees only its own models";
  for (const json& m : r.json["data"]) {
    EXPECT_EQ(m["object"], "model");
    EXPECT_EQ(m["owned_by"], "acme");
    EXPECT_TRUE(m["created"].is_number_integer());
  }
  // The admin key sees every tenant's.
  HttpReply admin = ApiClient(port(), server_->admin_key()).Get("/v1/models");
  ASSERT_EQ(admin.status, 200);
  ids = ModelIds(admin);
  EXPECT_NE(std::find(ids.begin(), ids.end(), "beta:0"), ids.end());
  EXPECT_NE(std::find(ids.begin(), ids.end(), "acme"), ids.end());
  // One model; another tenant's is "not found", as an unknown one.
  EXPECT_EQ(Acme().Get("/v1/models/acme:0").json["id"], "acme:0");
  HttpReply other = Acme().Get("/v1/models/beta");
  EXPECT_EQ(other.status, 404);
  EXPECT_EQ(other.error_field("code"), "model_not_found");
}

// Regression (http_fuzz): a Range header made httplib slice the body, so a 404's error object arrived
// cut to its first bytes. Range is ignored: whole bodies, never 206.
TEST_F(HttpApiTest, RangeHeadersAreIgnored) {
  ApiClient client = Acme();
  client.set_header("Range", "bytes=0-1");
  HttpReply missing = client.Get("/v1/models/nobody");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.error_field("code"), "model_not_found") << missing.body;
  HttpReply unknown = client.Get("/v1/no-such-route");
  EXPECT_EQ(unknown.status, 404);
  EXPECT_TRUE(unknown.json.contains("error")) << unknown.body;
  HttpReply models = client.Get("/v1/models");
  EXPECT_EQ(models.status, 200);
  EXPECT_EQ(models.json["object"], "list") << models.body;
  EXPECT_EQ(models.headers.count("Content-Range"), 0u);
}

TEST_F(HttpApiTest, MissingOrBadKeyIs401) {
  HttpReply none = ApiClient(port(), "").Get("/v1/models");
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(none.error_field("type"), "invalid_request_error");
  HttpReply bad = ApiClient(port(), "tsk_nope_nope").Post("/v1/completions", {{"model", "acme"}, {"prompt", "x"}});
  EXPECT_EQ(bad.status, 401);
  EXPECT_EQ(bad.error_field("code"), "invalid_api_key");
  EXPECT_EQ(bad.header("WWW-Authenticate"), "Bearer");
}

TEST_F(HttpApiTest, CompletionEqualsGrpcGenerate) {
  json req = {{"model", "acme"}, {"prompt", "add(2,3)="}, {"max_tokens", 12}, {"temperature", 0},
              {"some_future_field", {{"x", 1}}}};  // unknown fields are ignored
  HttpReply r = Acme().Post("/v1/completions", req);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["object"], "text_completion");
  EXPECT_EQ(r.json["model"], "acme");
  EXPECT_EQ(r.header("X-Tessera-Expert-Version"), "0");
  ASSERT_EQ(r.json["choices"].size(), 1u);
  const json& choice = r.json["choices"][0];
  v1::GenerateRequest g;
  g.set_tenant_id("acme");
  g.set_prompt("add(2,3)=");
  g.set_max_tokens(12);
  v1::GenerateResponse want;
  ASSERT_TRUE(server_->Inference()->Generate(Ctx(*acme_key_).get(), g, &want).ok());
  EXPECT_EQ(choice["text"], want.text());
  EXPECT_EQ(choice["finish_reason"], want.finish_reason() == v1::LENGTH ? "length" : "stop");
  EXPECT_EQ(r.json["usage"]["prompt_tokens"], want.usage().prompt_tokens());
  EXPECT_EQ(r.json["usage"]["completion_tokens"], want.usage().completion_tokens());
  EXPECT_EQ(r.json["usage"]["total_tokens"], want.usage().prompt_tokens() + want.usage().completion_tokens());
  // The same seed samples the same text; the prompt may come as a one-element array.
  json sampled = {{"model", "acme"}, {"prompt", json::array({"hello"})}, {"max_tokens", 8}, {"temperature", 1.0},
                  {"seed", 42}};
  HttpReply a = Acme().Post("/v1/completions", sampled), b = Acme().Post("/v1/completions", sampled);
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(a.json["choices"][0]["text"], b.json["choices"][0]["text"]);
}

TEST_F(HttpApiTest, StopStringEndsWithFinishReasonStop) {
  json req = {{"model", "acme"}, {"prompt", "abc"}, {"max_tokens", 24}, {"temperature", 0}};
  HttpReply full = Acme().Post("/v1/completions", req);
  ASSERT_EQ(full.status, 200) << full.body;
  std::string text = full.json["choices"][0]["text"];
  ASSERT_GE(text.size(), 4u);
  req["stop"] = text.substr(2, 2);
  HttpReply cut = Acme().Post("/v1/completions", req);
  ASSERT_EQ(cut.status, 200) << cut.body;
  EXPECT_EQ(cut.json["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(cut.json["choices"][0]["text"], text.substr(0, text.find(text.substr(2, 2))));
}

struct BadRequest {
  json patch;
  std::string param;
};

TEST_F(HttpApiTest, WrongTypesAndUnsupportedValuesAre400NamingTheParam) {
  std::vector<BadRequest> cases = {
      {{{"max_tokens", "ten"}}, "max_tokens"},
      {{{"max_tokens", 0}}, "max_tokens"},
      {{{"temperature", "hot"}}, "temperature"},
      {{{"temperature", 3}}, "temperature"},
      {{{"top_p", 1.5}}, "top_p"},
      {{{"seed", "x"}}, "seed"},
      {{{"stop", 5}}, "stop"},
      {{{"stop", json::array({"a", 1})}}, "stop[1]"},
      {{{"n", 2}}, "n"},
      {{{"stream", "yes"}}, "stream"},
      {{{"stream", true}, {"stream_options", {{"include_usage", "y"}}}}, "stream_options.include_usage"},
      {{{"logprobs", 6}}, "logprobs"},
      {{{"logprobs", -1}}, "logprobs"},
      {{{"logprobs", "3"}}, "logprobs"},
      {{{"prompt", 7}}, "prompt"},
      {{{"prompt", json::array({1, 2})}}, "prompt"},
      {{{"model", 1}}, "model"},
  };
  for (const BadRequest& c : cases) {
    json req = {{"model", "acme"}, {"prompt", "hi"}, {"max_tokens", 2}};
    req.update(c.patch);
    HttpReply r = Acme().Post("/v1/completions", req);
    EXPECT_EQ(r.status, 400) << c.patch.dump() << " -> " << r.body;
    EXPECT_EQ(r.error_field("param"), c.param) << c.patch.dump() << " -> " << r.body;
    EXPECT_EQ(r.error_field("type"), "invalid_request_error") << r.body;
    EXPECT_FALSE(r.error_field("message").empty());
  }
  HttpReply chat = Acme().Post("/v1/chat/completions", {{"model", "acme"}, {"messages", "hi"}});
  EXPECT_EQ(chat.status, 400);
  EXPECT_EQ(chat.error_field("param"), "messages");
  HttpReply role = Acme().Post("/v1/chat/completions", {{"model", "acme"}, {"messages", {{{"content", "hi"}}}}});
  EXPECT_EQ(role.status, 400);
  EXPECT_EQ(role.error_field("param"), "messages[0].role");
  for (const BadRequest& c : std::vector<BadRequest>{{{{"logprobs", 1}}, "logprobs"},
                                                     {{{"logprobs", true}, {"top_logprobs", 21}}, "top_logprobs"},
                                                     {{{"top_logprobs", 2}}, "top_logprobs"}}) {
    json req = {{"model", "acme"}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 2}};
    req.update(c.patch);
    HttpReply r = Acme().Post("/v1/chat/completions", req);
    EXPECT_EQ(r.status, 400) << c.patch.dump() << " -> " << r.body;
    EXPECT_EQ(r.error_field("param"), c.param) << c.patch.dump() << " -> " << r.body;
  }
  HttpReply not_json = Acme().PostRaw("/v1/completions", "{not json", "application/json");
  EXPECT_EQ(not_json.status, 400);
  EXPECT_EQ(not_json.error_field("type"), "invalid_request_error");
}

TEST_F(HttpApiTest, UnknownOrForeignModelIs404) {
  for (const char* model : {"nobody", "beta", "beta:0", "acme:77", "ACME", "acme:x"}) {
    HttpReply r = Acme().Post("/v1/completions", {{"model", model}, {"prompt", "hi"}, {"max_tokens", 2}});
    EXPECT_EQ(r.status, 404) << model << " -> " << r.body;
    EXPECT_EQ(r.error_field("code"), "model_not_found") << model;
    EXPECT_EQ(r.error_field("param"), "model") << model;
    EXPECT_EQ(r.body.find("beta\" ") , std::string::npos);
  }
  // An admin key names any tenant in the model.
  HttpReply admin = ApiClient(port(), server_->admin_key())
                        .Post("/v1/completions", {{"model", "beta:0"}, {"prompt", "hi"}, {"max_tokens", 2}});
  EXPECT_EQ(admin.status, 200) << admin.body;
  HttpReply route = Acme().Get("/v1/nothing-here");
  EXPECT_EQ(route.status, 404);
  EXPECT_EQ(route.error_field("type"), "invalid_request_error");
}

json ParseEvents(const HttpReply& r, std::vector<json>* chunks) {
  std::string error;
  std::vector<std::string> data = SseData(r.body, &error);
  EXPECT_EQ(error, "");
  EXPECT_FALSE(data.empty());
  EXPECT_EQ(data.empty() ? "" : data.back(), "[DONE]") << "the stream ends with data: [DONE]";
  for (size_t i = 0; i + 1 < data.size(); ++i) chunks->push_back(json::parse(data[i]));
  return nullptr;
}

TEST_F(HttpApiTest, StreamedCompletionIsSseChunksThenDone) {
  json req = {{"model", "acme"}, {"prompt", "add(2,3)="}, {"max_tokens", 10}, {"temperature", 0}};
  HttpReply plain = Acme().Post("/v1/completions", req);
  ASSERT_EQ(plain.status, 200);
  req["stream"] = true;
  HttpReply r = Acme().Post("/v1/completions", req);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("Content-Type").rfind("text/event-stream", 0), 0u);
  EXPECT_EQ(r.header("X-Tessera-Expert-Version"), "0");
  std::vector<json> chunks;
  ParseEvents(r, &chunks);
  ASSERT_GE(chunks.size(), 2u);
  std::string text;
  for (size_t i = 0; i < chunks.size(); ++i) {
    EXPECT_EQ(chunks[i]["object"], "text_completion");
    EXPECT_EQ(chunks[i]["id"], chunks[0]["id"]);
    EXPECT_FALSE(chunks[i].contains("usage")) << "no usage field without include_usage";
    text += chunks[i]["choices"][0]["text"].get<std::string>();
    bool last = i + 1 == chunks.size();
    EXPECT_EQ(chunks[i]["choices"][0]["finish_reason"].is_null(), !last);
  }
  EXPECT_EQ(text, plain.json["choices"][0]["text"]);
  EXPECT_EQ(chunks.back()["choices"][0]["finish_reason"], plain.json["choices"][0]["finish_reason"]);
}

TEST_F(HttpApiTest, StreamedChatWithIncludeUsage) {
  json req = {{"model", "acme"},
              {"messages", {{{"role", "system"}, {"content", "Be brief."}},
                            {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "hi there"}}}}}}},
              {"max_tokens", 8},
              {"temperature", 0}};
  HttpReply plain = Acme().Post("/v1/chat/completions", req);
  ASSERT_EQ(plain.status, 200) << plain.body;
  EXPECT_EQ(plain.json["object"], "chat.completion");
  EXPECT_EQ(plain.json["choices"][0]["message"]["role"], "assistant");
  req["stream"] = true;
  req["stream_options"] = {{"include_usage", true}};
  HttpReply r = Acme().Post("/v1/chat/completions", req);
  ASSERT_EQ(r.status, 200) << r.body;
  std::vector<json> chunks;
  ParseEvents(r, &chunks);
  ASSERT_GE(chunks.size(), 3u);
  EXPECT_EQ(chunks[0]["choices"][0]["delta"]["role"], "assistant");
  std::string text;
  for (size_t i = 0; i + 1 < chunks.size(); ++i) {
    EXPECT_EQ(chunks[i]["object"], "chat.completion.chunk");
    EXPECT_TRUE(chunks[i]["usage"].is_null()) << "usage: null on every chunk but the last";
    if (chunks[i]["choices"][0]["delta"].contains("content")) {
      text += chunks[i]["choices"][0]["delta"]["content"].get<std::string>();
    }
  }
  EXPECT_EQ(text, plain.json["choices"][0]["message"]["content"]);
  EXPECT_EQ(chunks[chunks.size() - 2]["choices"][0]["finish_reason"], plain.json["choices"][0]["finish_reason"]);
  const json& last = chunks.back();
  EXPECT_TRUE(last["choices"].is_array() && last["choices"].empty());
  EXPECT_EQ(last["usage"], plain.json["usage"]);
}

// Legacy logprobs: the gRPC Generate values (checked against an independent forward pass in
// tests/core/runtime/logprobs_test.cc) in OpenAI's shape, the same when streamed.
TEST_F(HttpApiTest, CompletionLogprobsAreGrpcsInTheLegacyShape) {
  json req = {{"model", "acme"}, {"prompt", "hello"}, {"max_tokens", 8}, {"temperature", 0.7}, {"seed", 5},
              {"logprobs", 3}};
  HttpReply r = Acme().Post("/v1/completions", req);
  ASSERT_EQ(r.status, 200) << r.body;
  const json& lp = r.json["choices"][0]["logprobs"];
  ASSERT_TRUE(lp.is_object()) << r.body;
  const size_t n = r.json["usage"]["completion_tokens"].get<size_t>();
  ASSERT_GT(n, 0u);
  ASSERT_EQ(lp["tokens"].size(), n);
  ASSERT_EQ(lp["token_logprobs"].size(), n);
  ASSERT_EQ(lp["top_logprobs"].size(), n);
  ASSERT_EQ(lp["text_offset"].size(), n);
  EXPECT_EQ(lp["text_offset"][0], 0);

  v1::GenerateRequest g;
  g.set_tenant_id("acme");
  g.set_prompt("hello");
  g.set_max_tokens(8);
  g.set_temperature(0.7f);
  g.set_seed(5);
  g.set_logprobs(true);
  g.set_top_logprobs(3);
  v1::GenerateResponse want;
  ASSERT_TRUE(server_->Inference()->Generate(Ctx(*acme_key_).get(), g, &want).ok());
  ASSERT_EQ(static_cast<size_t>(want.logprobs_size()), n);
  for (size_t i = 0; i < n; ++i) {
    const v1::TokenLogprob& t = want.logprobs(static_cast<int>(i));
    EXPECT_EQ(lp["tokens"][i], t.token());
    EXPECT_NEAR(lp["token_logprobs"][i].get<double>(), t.logprob(), 1e-6);
    EXPECT_LE(t.logprob(), 0.0);
    ASSERT_EQ(t.top_logprobs_size(), 3);
    const json& top = lp["top_logprobs"][i];
    // The 3 most likely and the sampled token (when it is not among them).
    EXPECT_GE(top.size(), 3u);
    EXPECT_LE(top.size(), 4u);
    ASSERT_TRUE(top.contains(t.token())) << top.dump();
    EXPECT_NEAR(top.at(t.token()).get<double>(), t.logprob(), 1e-6);
    for (int k = 0; k < 3; ++k) {
      ASSERT_TRUE(top.contains(t.top_logprobs(k).token())) << top.dump();
      EXPECT_NEAR(top.at(t.top_logprobs(k).token()).get<double>(), t.top_logprobs(k).logprob(), 1e-6);
      if (k > 0) {
        EXPECT_GE(t.top_logprobs(k - 1).logprob(), t.top_logprobs(k).logprob());
      }
    }
    if (i > 0) {
      EXPECT_GE(lp["text_offset"][i].get<int>(), lp["text_offset"][i - 1].get<int>());
    }
  }

  // Streamed: the chunks' logprobs concatenate to the same lists (text_offset continues across chunks).
  req["stream"] = true;
  HttpReply s = Acme().Post("/v1/completions", req);
  ASSERT_EQ(s.status, 200) << s.body;
  std::vector<json> chunks;
  ParseEvents(s, &chunks);
  json joined = {{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()},
                 {"text_offset", json::array()}};
  for (const json& c : chunks) {
    const json& clp = c["choices"][0]["logprobs"];
    if (clp.is_null()) continue;
    for (const char* key : {"tokens", "token_logprobs", "top_logprobs", "text_offset"}) {
      for (const json& v : clp[key]) joined[key].push_back(v);
    }
  }
  EXPECT_EQ(joined, lp);

  // gRPC streaming: the same entries, spread over the chunks.
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Bearer " + *acme_key_);
  auto reader = server_->Inference()->GenerateStream(&ctx, g);
  v1::GenerateChunk chunk;
  std::vector<v1::TokenLogprob> streamed;
  while (reader->Read(&chunk)) streamed.insert(streamed.end(), chunk.logprobs().begin(), chunk.logprobs().end());
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_EQ(streamed.size(), n);
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(streamed[i].token_id(), want.logprobs(static_cast<int>(i)).token_id());
    EXPECT_EQ(streamed[i].logprob(), want.logprobs(static_cast<int>(i)).logprob());
  }

  // logprobs: 0 -> only the sampled token in each top_logprobs entry.
  req["stream"] = false;
  req["logprobs"] = 0;
  HttpReply zero = Acme().Post("/v1/completions", req);
  ASSERT_EQ(zero.status, 200) << zero.body;
  for (const json& top : zero.json["choices"][0]["logprobs"]["top_logprobs"]) EXPECT_EQ(top.size(), 1u);
  req.erase("logprobs");
  EXPECT_TRUE(Acme().Post("/v1/completions", req).json["choices"][0]["logprobs"].is_null());
}

TEST_F(HttpApiTest, ChatLogprobsInTheChatShape) {
  json req = {{"model", "acme"}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 6},
              {"temperature", 0}, {"logprobs", true}, {"top_logprobs", 2}};
  HttpReply r = Acme().Post("/v1/chat/completions", req);
  ASSERT_EQ(r.status, 200) << r.body;
  const json& content = r.json["choices"][0]["logprobs"]["content"];
  ASSERT_TRUE(content.is_array()) << r.body;
  ASSERT_EQ(content.size(), r.json["usage"]["completion_tokens"].get<size_t>());
  ASSERT_FALSE(content.empty());
  for (const json& t : content) {
    ASSERT_TRUE(t["token"].is_string());
    ASSERT_TRUE(t["bytes"].is_array());
    EXPECT_LE(t["logprob"].get<double>(), 0.0);
    ASSERT_EQ(t["top_logprobs"].size(), 2u);
    // Greedy: the sampled token is the most likely one.
    EXPECT_EQ(t["top_logprobs"][0]["token"], t["token"]);
    EXPECT_EQ(t["top_logprobs"][0]["bytes"], t["bytes"]);
    EXPECT_DOUBLE_EQ(t["top_logprobs"][0]["logprob"].get<double>(), t["logprob"].get<double>());
    EXPECT_GE(t["top_logprobs"][0]["logprob"].get<double>(), t["top_logprobs"][1]["logprob"].get<double>());
    // A token's bytes are its text when that is valid UTF-8.
    std::string bytes;
    for (const json& b : t["bytes"]) bytes.push_back(static_cast<char>(b.get<int>()));
    if (t["token"].get<std::string>().rfind("bytes:", 0) != 0) {
      EXPECT_EQ(bytes, t["token"]);
    }
  }
  req["stream"] = true;
  HttpReply s = Acme().Post("/v1/chat/completions", req);
  ASSERT_EQ(s.status, 200) << s.body;
  std::vector<json> chunks;
  ParseEvents(s, &chunks);
  json joined = json::array();
  for (const json& c : chunks) {
    const json& clp = c["choices"][0]["logprobs"];
    if (!clp.is_null()) {
      for (const json& t : clp["content"]) joined.push_back(t);
    }
  }
  EXPECT_EQ(joined, content);
  req.erase("top_logprobs");
  req.erase("stream");
  HttpReply bare = Acme().Post("/v1/chat/completions", req);
  ASSERT_EQ(bare.status, 200);
  for (const json& t : bare.json["choices"][0]["logprobs"]["content"]) EXPECT_TRUE(t["top_logprobs"].empty());
}

TEST_F(HttpApiTest, HeaderNamesTheServingVersion) {
  int64_t v = PublishScaledVersion(server_->registry(), "acme", {{0, 1}, {1, 2}}, 3.0f);
  ASSERT_GT(v, 0);
  json req = {{"model", "acme:" + std::to_string(v)}, {"prompt", "hello"}, {"max_tokens", 6}, {"temperature", 0}};
  HttpReply pinned = Acme().Post("/v1/completions", req);
  ASSERT_EQ(pinned.status, 200) << pinned.body;
  EXPECT_EQ(pinned.header("X-Tessera-Expert-Version"), std::to_string(v));
  req["model"] = "acme";
  EXPECT_EQ(Acme().Post("/v1/completions", req).header("X-Tessera-Expert-Version"), "0");
  std::vector<std::string> ids = ModelIds(Acme().Get("/v1/models"));
  EXPECT_NE(std::find(ids.begin(), ids.end(), "acme:" + std::to_string(v)), ids.end());

  v1::PromoteRequest p;
  p.set_tenant_id("acme");
  p.set_version(v);
  v1::LiveVersionResponse pr;
  ASSERT_TRUE(server_->Admin()->Promote(Ctx(server_->admin_key()).get(), p, &pr).ok());
  HttpReply live = Acme().Post("/v1/completions", req);
  EXPECT_EQ(live.header("X-Tessera-Expert-Version"), std::to_string(v));
  EXPECT_EQ(live.json["choices"][0]["text"], pinned.json["choices"][0]["text"]);
  p.set_version(0);
  ASSERT_TRUE(server_->Admin()->Promote(Ctx(server_->admin_key()).get(), p, &pr).ok());
  EXPECT_EQ(Acme().Post("/v1/completions", req).header("X-Tessera-Expert-Version"), "0");
}

TEST_F(HttpApiTest, RoutesNeedTheKeysScopeAsTheirRpcs) {
  v1::IssueApiKeyRequest req;
  req.set_tenant_id("acme");
  req.add_scopes("inference");
  v1::IssueApiKeyResponse resp;
  ASSERT_TRUE(server_->Admin()->IssueApiKey(Ctx(server_->admin_key()).get(), req, &resp).ok());
  ApiClient app(port(), resp.api_key().secret());
  EXPECT_EQ(app.Get("/v1/models").status, 200) << "any key lists its models";
  EXPECT_EQ(app.Post("/v1/completions", {{"model", "acme"}, {"prompt", "hi"}, {"max_tokens", 2}}).status, 200);
  for (const HttpReply& r : {app.Get("/v1/files"), app.Get("/v1/fine_tuning/jobs"),
                             app.Post("/v1/fine_tuning/jobs", {{"model", "acme"}, {"training_file", "ds_x"}}),
                             app.Get("/console/api/tenants/acme")}) {
    EXPECT_EQ(r.status, 403) << r.body;
    EXPECT_EQ(r.error_field("type"), "permission_error");
    EXPECT_TRUE(r.error_field("message").find("read") != std::string::npos ||
                r.error_field("message").find("fine-tune") != std::string::npos) << r.body;
  }
}

TEST_F(HttpApiTest, CallsAreCountedInTheRpcMetrics) {
  Acme().Get("/v1/models");
  std::string text = server_->server().metrics().Render();
  EXPECT_NE(text.find("method=\"HTTP GET /v1/models\""), std::string::npos);
}

}  // namespace
}  // namespace tessera::services::testing
