// Malformed input on every HTTP endpoint (services/http/) against a real server (random:tiny) on a
// loopback port: wrong JSON types, huge sizes, invalid UTF-8 (raw bytes and lone surrogate escapes),
// negative and overflowing numbers, unknown enum-like strings, missing required fields, bad query and
// path parameters. Each case must answer the HTTP status it names with OpenAI's error object whose
// `param` (or message) names the field; never 500 or 501, and the server keeps serving.
#include <string>
#include <vector>

#include "absl/strings/str_replace.h"
#include "gtest/gtest.h"
#include "tests/services/http/http_client.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

struct Case {
  std::string method;  // GET, POST, DELETE, UPLOAD (multipart: body = file content, content_type = purpose)
  std::string path;
  std::string body;    // raw bytes; $FILE and $JOB are replaced
  int status;
  std::string param;   // error.param must equal it; "~x": the message must contain x instead
  std::string content_type = "application/json";
  std::string key = "acme";  // "acme", "admin", "none", or a literal key
};

std::string Repeat(const std::string& s, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) out += s;
  return out;
}

std::vector<Case> Cases() {
  const std::string big = std::string((64 << 10) + 1, 'a');
  const std::string c = "/v1/completions", chat = "/v1/chat/completions", ft = "/v1/fine_tuning/jobs";
  const std::string msgs = R"("messages": [{"role": "user", "content": "hi"}])";
  std::vector<Case> cases = {
      // ---- /v1/completions ----
      {"POST", c, "{\"model\": \"acme\", \"prompt\": \"caf\xc3 \xff\"}", 400, "prompt"},
      {"POST", c, R"({"model": "acme", "prompt": "\udc80"})", 400, "~could not parse"},
      {"POST", c, "{\"model\": \"acme\", \"prompt\": \"x\", \"stop\": [\"ok\", \"\xfe\"]}", 400, "stop[1]"},
      {"POST", c, "{\"mod\xffl\": \"acme\", \"prompt\": \"x\"}", 400, "~UTF-8"},
      {"POST", c, R"({"model": "acme"})", 400, "prompt"},
      {"POST", c, R"({"prompt": "x"})", 400, "model"},
      {"POST", c, R"({"model": 7, "prompt": "x"})", 400, "model"},
      {"POST", c, R"({"model": "acme", "prompt": 7})", 400, "prompt"},
      {"POST", c, R"({"model": "acme", "prompt": [1, 2]})", 400, "prompt"},
      {"POST", c, R"({"model": "acme", "prompt": ""})", 400, "prompt"},
      {"POST", c, "{\"model\": \"acme\", \"prompt\": \"" + big + "\"}", 400, "prompt"},
      {"POST", c, R"({"model": "acme", "prompt": "x", "max_tokens": -1})", 400, "max_tokens"},
      {"POST", c, R"({"model": "acme", "prompt": "x", "max_tokens": 18446744073709551615})", 400, "max_tokens"},
      {"POST", c, R"({"model": "acme", "prompt": "x", "max_tokens": 1e300})", 400, "max_tokens"},
      {"POST", c, R"({"model": "acme", "prompt": "x", "max_tokens": "10"})", 400, "max_tokens"},
      {"POST", c, R"({"model": "acme", "prompt": "x", "max_tokens": 2.5})", 400, "max_tokens"},
      {"POST", c, R"({"model": "acme", "prompt": "x", "temperature": -0.1})", 400, "temperature"},
      {"POST", c, R"({"model": "acme", "prompt": "x", "temperature": 1e309})", 400, "~could not parse"},
      {"POST", c, R"({"model": "acme", "prompt": "x", "temperature": "hot"})", 400, "temperature"},
      {"POST", c, R"({"model": "acme", "prompt": "x", "top_p": 2})", 400, "top_p"},
      {"POST", c, R"({"model": "acme", "prompt": "x", "top_k": -1})", 400, "top_k"},
      {"POST", c, R"({"model": "acme", "prompt": "x", "top_k": 9223372036854775807})", 400, "top_k"},
      {"POST", c, R"({"model": "acme", "prompt": "x", "seed": -1})", 200, ""},
      {"POST", c, R"({"model": "acme", "prompt": "x", "seed": 18446744073709551615})", 400, "seed"},
      {"POST", c, R"({"model": "acme", "prompt": "x", "stop": ""})", 400, "stop"},
      {"POST", c, R"({"model": "acme", "prompt": "x", "stop": [1]})", 400, "stop[0]"},
      {"POST", c, R"({"model": "acme", "prompt": "x", "stop": {}})", 400, "stop"},
      {"POST", c, "{\"model\": \"acme\", \"prompt\": \"x\", \"stop\": [" + Repeat("\"s\",", 16) + "\"s\"]}", 400,
       "stop"},
      {"POST", c, R"({"model": "acme", "prompt": "x", "n": 2})", 400, "n"},
      {"POST", c, R"({"model": "acme", "prompt": "x", "best_of": -3})", 400, "best_of"},
      {"POST", c, R"({"model": "acme", "prompt": "x", "logit_bias": {"1": 5}})", 400, "logit_bias"},
      {"POST", c, R"({"model": "acme", "prompt": "x", "frequency_penalty": 0.5})", 400, "frequency_penalty"},
      {"POST", c, R"({"model": "acme", "prompt": "x", "stream": "yes"})", 400, "stream"},
      {"POST", c, R"({"model": "acme", "prompt": "x", "stream_options": 5})", 400, "stream_options"},
      {"POST", c, R"({"model": "acme:-1", "prompt": "x"})", 404, "model"},
      {"POST", c, R"({"model": "acme:99999999999999999999", "prompt": "x"})", 404, "model"},
      {"POST", c, R"({"model": "acme:77", "prompt": "x"})", 404, "model"},
      {"POST", c, R"({"model": "nosuch", "prompt": "x"})", 404, "model"},
      {"POST", c, R"([1, 2])", 400, "~JSON object"},
      {"POST", c, R"({"model": "acme", "prompt": "x")", 400, "~could not parse"},
      {"POST", c, "", 400, "~could not parse"},
      {"POST", c, Repeat("[", 100000) + Repeat("]", 100000), 400, "~JSON object"},
      // ---- /v1/chat/completions ----
      {"POST", chat, "{\"model\": \"acme\", \"messages\": [{\"role\": \"user\", \"content\": \"\xe2\x28\xa1\"}]}",
       400, "messages[0].content"},
      {"POST", chat, R"({"model": "acme"})", 400, "messages"},
      {"POST", chat, R"({"model": "acme", "messages": []})", 400, "messages"},
      {"POST", chat, R"({"model": "acme", "messages": "hi"})", 400, "messages"},
      {"POST", chat, R"({"model": "acme", "messages": [5]})", 400, "messages[0]"},
      {"POST", chat, R"({"model": "acme", "messages": [{"content": "x"}]})", 400, "messages[0].role"},
      {"POST", chat, R"({"model": "acme", "messages": [{"role": 1, "content": "x"}]})", 400, "messages[0].role"},
      {"POST", chat, R"({"model": "acme", "messages": [{"role": "wizard", "content": "x"}]})", 400, "~wizard"},
      {"POST", chat, R"({"model": "acme", "messages": [{"role": "user", "content": 5}]})", 400,
       "messages[0].content"},
      {"POST", chat, R"({"model": "acme", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
       400, "messages[0].content[0].type"},
      {"POST", chat, "{\"model\": \"acme\", \"messages\": [" +
                         Repeat(R"({"role": "user", "content": "x"},)", 256) + R"({"role": "user", "content": "x"}]})",
       400, "messages"},
      {"POST", chat, "{\"model\": \"acme\", \"messages\": [{\"role\": \"user\", \"content\": \"" + big + "\"}]}",
       400, "messages"},
      {"POST", chat, "{\"model\": \"acme\", " + msgs + ", \"max_completion_tokens\": 0}", 400,
       "max_completion_tokens"},
      {"POST", chat, "{\"model\": \"acme\", " + msgs + ", \"max_completion_tokens\": -9223372036854775808}", 400,
       "max_completion_tokens"},
      {"POST", chat, "{\"model\": \"acme\", " + msgs + ", \"logprobs\": \"yes\"}", 400, "logprobs"},
      {"POST", chat, "{\"model\": \"acme\", " + msgs + ", \"logprobs\": true, \"top_logprobs\": 999}", 400,
       "top_logprobs"},
      {"POST", chat, "{\"model\": \"acme\", " + msgs + ", \"n\": 0}", 400, "n"},
      // ---- /v1/models ----
      {"GET", "/v1/models/nosuch", "", 404, "model"},
      {"GET", "/v1/models/acme:-1", "", 404, "model"},
      {"GET", "/v1/models/%FF%FE", "", 404, "model"},
      // ---- /v1/files ----
      {"UPLOAD", "/v1/files", "{\"text\": \"\xff\"}\n", 400, "file", "fine-tune"},
      {"UPLOAD", "/v1/files", "{\"text\": 5}\n", 400, "file", "fine-tune"},
      {"UPLOAD", "/v1/files", "not json\n", 400, "file", "fine-tune"},
      {"UPLOAD", "/v1/files", "", 400, "file", "fine-tune"},
      {"UPLOAD", "/v1/files", "{\"text\": \"a\"}\n", 400, "purpose", "assistants"},
      {"UPLOAD", "/v1/files", "{\"text\": \"a\"}\n", 400, "purpose", "fine-tune\xff"},
      {"UPLOAD", "/v1/files", std::string((1 << 20) + 10, '\n'), 400, "file", "fine-tune"},
      {"POST", "/v1/files", R"({"purpose": "fine-tune"})", 400, "file"},
      {"GET", "/v1/files?limit=-1", "", 200, ""},
      {"GET", "/v1/files/file-nosuch", "", 404, "~file-nosuch"},
      {"GET", "/v1/files/%FF", "", 404, "~not found"},
      {"GET", "/v1/files/file-nosuch/content", "", 404, "~file-nosuch"},
      {"DELETE", "/v1/files/file-nosuch", "", 404, "~file-nosuch"},
      // ---- /v1/fine_tuning/jobs ----
      {"POST", ft, R"({"training_file": "$FILE"})", 400, "model"},
      {"POST", ft, R"({"model": "acme"})", 400, "training_file"},
      {"POST", ft, R"({"model": "acme", "training_file": 5})", 400, "training_file"},
      {"POST", ft, R"({"model": "acme", "training_file": ""})", 400, "training_file"},
      {"POST", ft, R"({"model": "acme", "training_file": "file-nosuch"})", 404, "training_file"},
      {"POST", ft, R"({"model": "acme", "training_file": "$FILE", "validation_file": "file-nosuch"})", 404,
       "validation_file"},
      {"POST", ft, "{\"model\": \"acme\", \"training_file\": \"$FILE\", \"suffix\": \"" + std::string(65, 's') + "\"}",
       400, "suffix"},
      {"POST", ft, "{\"model\": \"acme\", \"training_file\": \"$FILE\", \"suffix\": \"\xff\"}", 400, "suffix"},
      {"POST", ft, R"({"model": "acme", "training_file": "$FILE", "hyperparameters": 3})", 400, "hyperparameters"},
      {"POST", ft, R"({"model": "acme", "training_file": "$FILE", "hyperparameters": {"n_epochs": 0}})", 400,
       "hyperparameters.n_epochs"},
      {"POST", ft, R"({"model": "acme", "training_file": "$FILE", "hyperparameters": {"n_epochs": "many"}})", 400,
       "hyperparameters.n_epochs"},
      {"POST", ft, R"({"model": "acme", "training_file": "$FILE", "hyperparameters": {"n_epochs": 9000000000000000}})",
       200, ""},
      {"POST", ft, R"({"model": "acme", "training_file": "$FILE", "hyperparameters": {"batch_size": -1}})", 400,
       "hyperparameters.batch_size"},
      {"POST", ft, R"({"model": "acme", "training_file": "$FILE", "hyperparameters": {"batch_size": 1e10}})", 400,
       "hyperparameters.batch_size"},
      {"POST", ft,
       R"({"model": "acme", "training_file": "$FILE", "hyperparameters": {"learning_rate_multiplier": -2}})", 400,
       "hyperparameters.learning_rate_multiplier"},
      {"POST", ft,
       R"({"model": "acme", "training_file": "$FILE", "hyperparameters": {"learning_rate_multiplier": 1e308}})",
       200, ""},
      {"POST", ft, R"({"model": "acme", "training_file": "$FILE", "method": {"type": "dpo"}})", 400, "method.type"},
      {"POST", ft, R"({"model": "acme", "training_file": "$FILE", "method": []})", 400, "method"},
      {"POST", ft, R"({"model": "acme", "training_file": "$FILE", "seed": 1.5})", 400, "seed"},
      {"POST", ft, R"({"model": "acme", "training_file": "$FILE", "auto_promote": "yes"})", 400, "auto_promote"},
      {"POST", ft, R"({"model": "acme:9", "training_file": "$FILE"})", 404, "model"},
      {"GET", ft + "?limit=0", "", 400, "limit"},
      {"GET", ft + "?limit=99999999999999999999", "", 400, "limit"},
      {"GET", ft + "?limit=abc", "", 400, "limit"},
      {"GET", ft + "?after=job_nosuch", "", 400, "after"},
      {"GET", ft + "/job_nosuch", "", 404, "~job_nosuch"},
      {"GET", ft + "/$JOB/events?after=zzz", "", 400, "after"},
      {"GET", ft + "/$JOB/events?limit=-5", "", 400, "limit"},
      {"GET", ft + "/job_nosuch/events", "", 404, "~job_nosuch"},
      {"POST", ft + "/job_nosuch/cancel", "", 404, "~job_nosuch"},
      // ---- the console's API ----
      {"GET", "/console/api/tenants/nosuch", "", 404, "~nosuch", "application/json", "admin"},
      {"GET", "/console/api/tenants/ACME", "", 404, "~", "application/json", "acme"},
      {"POST", "/console/api/tenants/acme/promote", R"({"version": -1})", 400, "version", "application/json",
       "admin"},
      {"POST", "/console/api/tenants/acme/promote", R"({})", 400, "version", "application/json", "admin"},
      {"POST", "/console/api/tenants/acme/promote", R"({"version": "1"})", 400, "version", "application/json",
       "admin"},
      {"POST", "/console/api/tenants/acme/promote", R"({"version": 9223372036854775807})", 404, "~version",
       "application/json", "admin"},
      {"POST", "/console/api/tenants/acme/rollback", R"({"to_version": -1})", 400, "to_version",
       "application/json", "admin"},
      {"POST", "/console/api/tenants/acme/rollback", "{\"to_version\": \"\xff\"}", 400, "to_version",
       "application/json", "admin"},
      {"GET", "/console/api/tenants/acme/jobs/$JOB/curve?after=-1", "", 400, "after"},
      {"GET", "/console/api/tenants/acme/jobs/$JOB/curve?wait=x", "", 400, "wait"},
      {"GET", "/console/api/tenants/acme/jobs/job_nosuch/curve", "", 404, "~job_nosuch"},
      // ---- authentication and routing ----
      {"POST", c, R"({"model": "acme", "prompt": "x"})", 401, "~", "application/json", "none"},
      {"POST", c, R"({"model": "acme", "prompt": "x"})", 401, "~", "application/json", "tsk_\xff\xfe"},
      {"GET", "/v1/nosuch", "", 404, "~/v1/nosuch"},
  };
  return cases;
}

class HttpMalformedInputTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    TestServerOptions o = WithModel();
    o.http = true;
    server_ = new TestServer(o);
    acme_key_ = new std::string(server_->CreateTenant("acme"));
    ApiClient acme(server_->server().http_port(), *acme_key_);
    HttpReply f = acme.UploadFile("d.jsonl", AdditionJsonl(20), "fine-tune");
    ASSERT_EQ(f.status, 200) << f.body;
    file_ = new std::string(f.json["id"].get<std::string>());
    HttpReply j = acme.Post("/v1/fine_tuning/jobs", {{"model", "acme"}, {"training_file", *file_}});
    ASSERT_EQ(j.status, 200) << j.body;
    job_ = new std::string(j.json["id"].get<std::string>());
  }
  static void TearDownTestSuite() {
    delete server_;
    delete acme_key_;
    delete file_;
    delete job_;
  }

  static HttpReply Send(const Case& c) {
    std::string key = c.key == "acme" ? *acme_key_ : c.key == "admin" ? server_->admin_key()
                                                  : c.key == "none" ? ""
                                                                    : c.key;
    ApiClient client(server_->server().http_port(), key);
    if (c.key == "admin") client.set_header("X-Tessera-Tenant", "acme");
    auto fill = [](const std::string& s) { return absl::StrReplaceAll(s, {{"$FILE", *file_}, {"$JOB", *job_}}); };
    std::string path = fill(c.path), body = fill(c.body);
    if (c.method == "GET") return client.Get(path);
    if (c.method == "DELETE") return client.Delete(path);
    if (c.method == "UPLOAD") return client.UploadFile("d.jsonl", body, c.content_type);
    return client.PostRaw(path, body, c.content_type);
  }

  static TestServer* server_;
  static std::string* acme_key_;
  static std::string* file_;
  static std::string* job_;
};
TestServer* HttpMalformedInputTest::server_ = nullptr;
std::string* HttpMalformedInputTest::acme_key_ = nullptr;
std::string* HttpMalformedInputTest::file_ = nullptr;
std::string* HttpMalformedInputTest::job_ = nullptr;

TEST_F(HttpMalformedInputTest, EveryCaseIsAnOpenAiErrorNamingTheField) {
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.method + " " + c.path + " " + c.body.substr(0, 160));
    HttpReply r = Send(c);
    ASSERT_NE(r.status, 0) << "no response: the server crashed or hung";
    EXPECT_NE(r.status, 500) << r.body;
    EXPECT_NE(r.status, 501) << r.body;
    EXPECT_EQ(r.status, c.status) << r.body;
    if (c.status < 400) continue;
    ASSERT_TRUE(r.json.is_object() && r.json.contains("error")) << r.body;
    const nlohmann::json& e = r.json["error"];
    ASSERT_TRUE(e["message"].is_string()) << r.body;
    EXPECT_FALSE(e["message"].get<std::string>().empty());
    EXPECT_TRUE(e["type"].is_string()) << r.body;
    if (!c.param.empty() && c.param[0] == '~') {
      EXPECT_NE(e["message"].get<std::string>().find(c.param.substr(1)), std::string::npos) << r.body;
    } else {
      EXPECT_EQ(r.error_field("param"), c.param) << r.body;
    }
  }
}

TEST_F(HttpMalformedInputTest, TheServerStillServesAfterwards) {
  for (const Case& c : Cases()) (void)Send(c);
  ApiClient acme(server_->server().http_port(), *acme_key_);
  // Greedy: at the API's default temperature 1 the (random-weight) model samples, and a sampled EOS ended
  // one CI run's completion after 1 token.
  HttpReply r = acme.Post("/v1/completions",
                          {{"model", "acme"}, {"prompt", "add(1,2)="}, {"max_tokens", 2}, {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["usage"]["completion_tokens"], 2);
}

}  // namespace
}  // namespace tessera::services::testing
