// Malformed input on every gRPC RPC (Inference, FineTuning, Datasets, Experts, Admin) against a real
// server (random:tiny) on a loopback port: wrong-shaped values, huge sizes, invalid UTF-8, negative and
// overflowing numbers, unknown enum-like strings ("format", "method", "scopes", roles), missing required
// fields. Each case must end in the canonical code it names with a message that names the field; no case
// may end in OK, UNKNOWN, INTERNAL, UNIMPLEMENTED or DATA_LOSS, and the server must keep serving.
//
// Requests are written in protobuf text format and sent through a generic stub (so the table reads like
// the API); $DATASET and $JOB name a dataset and a queued job of tenant acme.
#include <chrono>
#include <future>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/text_format.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

namespace pb = google::protobuf;
using grpc::StatusCode;

// One call through the generic stub: every message of `messages` is written (a unary RPC gets one),
// then the first answer (if any) is read and the call cancelled (WatchJob of a queued job never ends).
class GenericCall : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  GenericCall(grpc::GenericStub* stub, const std::string& method, const std::string& key,
              std::vector<std::string> messages, std::promise<grpc::Status>* done)
      : done_(done) {
    for (const std::string& m : messages) {
      grpc::Slice slice(m);
      messages_.emplace_back(&slice, 1);
    }
    if (!key.empty()) ctx_.AddMetadata("authorization", "Bearer " + key);
    ctx_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    stub->PrepareBidiStreamingCall(&ctx_, method, grpc::StubOptions(), this);
    StartRead(&in_);
    NextWrite();
    StartCall();
  }
  void OnWriteDone(bool ok) override {
    if (ok) NextWrite();
  }
  void OnReadDone(bool ok) override {
    if (ok) {
      answered_ = true;
      ctx_.TryCancel();
    }
  }
  void OnDone(const grpc::Status& s) override {
    // An answer means the request was accepted: report OK (the cancel was ours).
    done_->set_value(answered_ ? grpc::Status::OK : s);
    delete this;
  }

 private:
  void NextWrite() {
    if (next_ < messages_.size()) {
      StartWrite(&messages_[next_++]);
    } else {
      StartWritesDone();
    }
  }
  grpc::ClientContext ctx_;
  std::vector<grpc::ByteBuffer> messages_;
  size_t next_ = 0;
  grpc::ByteBuffer in_;
  bool answered_ = false;
  std::promise<grpc::Status>* done_;
};

struct Case {
  std::string rpc;   // "Service/Method"
  std::string key;   // "acme", "admin" or "" (none)
  std::string request;  // text format; for UploadDataset, messages separated by "\n---\n"
  std::set<StatusCode> codes;
  std::string names;  // the message must contain it (the field, or the object not found)
};

std::string Repeat(const std::string& s, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) out += s;
  return out;
}

const std::set<StatusCode> kInvalid = {StatusCode::INVALID_ARGUMENT};
const std::set<StatusCode> kRange = {StatusCode::INVALID_ARGUMENT, StatusCode::OUT_OF_RANGE};
const std::set<StatusCode> kNotFound = {StatusCode::NOT_FOUND};

std::vector<Case> Cases() {
  std::string big_prompt = "prompt: \"" + std::string((64 << 10) + 1, 'a') + "\"";
  std::string many_stops = Repeat("stop: \"s\" ", 17);
  std::string many_messages = Repeat("messages { role: \"user\" content: \"x\" } ", 257);
  std::string dup_slots = "slots { layer: 0 expert: 1 } slots { layer: 0 expert: 1 }";
  std::string big_chunk = "chunk: \"" + Repeat("{\\\"text\\\": \\\"aaaaaaaaaaaaaaaa\\\"}\\n", 40000) + "\"";
  std::string job = "tenant_id: \"acme\" training_dataset_id: \"$DATASET\" ";
  std::vector<Case> c = {
      // ---- Inference ----
      {"Inference/Generate", "acme", R"(tenant_id: "acme" prompt: "caf\xc3 \xff")", kInvalid, "prompt"},
      {"Inference/Generate", "acme", R"(tenant_id: "acme" messages { role: "user" content: "\xed\xa0\x80" })",
       kInvalid, "messages[0].content"},
      {"Inference/Generate", "acme", R"(tenant_id: "acme" messages { role: "\xc0\xaf" content: "x" })", kInvalid,
       "messages[0].role"},
      {"Inference/Generate", "acme", R"(tenant_id: "acme" prompt: "x" stop: "ok" stop: "\xf5")", kInvalid,
       "stop[1]"},
      {"Inference/Generate", "acme", R"(tenant_id: "ac\xffme" prompt: "x")", kInvalid, "tenant_id"},
      {"Inference/Generate", "acme", R"(tenant_id: "acme")", kInvalid, "prompt"},
      {"Inference/Generate", "acme", R"(prompt: "x")", {StatusCode::INVALID_ARGUMENT, StatusCode::PERMISSION_DENIED},
       "tenant_id"},
      {"Inference/Generate", "acme", R"(tenant_id: "acme" prompt: "x" max_tokens: -1)", kRange, "max_tokens"},
      {"Inference/Generate", "acme", R"(tenant_id: "acme" prompt: "x" max_tokens: 2147483647)", kRange,
       "max_tokens"},
      {"Inference/Generate", "acme", R"(tenant_id: "acme" prompt: "x" temperature: -1)", kRange, "temperature"},
      {"Inference/Generate", "acme", R"(tenant_id: "acme" prompt: "x" temperature: nan)", kRange, "temperature"},
      {"Inference/Generate", "acme", R"(tenant_id: "acme" prompt: "x" temperature: inf)", kRange, "temperature"},
      {"Inference/Generate", "acme", R"(tenant_id: "acme" prompt: "x" top_p: 1.5)", kRange, "top_p"},
      {"Inference/Generate", "acme", R"(tenant_id: "acme" prompt: "x" top_p: -nan)", kRange, "top_p"},
      {"Inference/Generate", "acme", R"(tenant_id: "acme" prompt: "x" top_k: -2147483648)", kRange, "top_k"},
      {"Inference/Generate", "acme", R"(tenant_id: "acme" prompt: "x" stop: "")", kInvalid, "stop[0]"},
      {"Inference/Generate", "acme", "tenant_id: \"acme\" prompt: \"x\" " + many_stops, kRange, "stop"},
      {"Inference/Generate", "acme", R"(tenant_id: "acme" prompt: "x" version: -1)", kRange, "version"},
      {"Inference/Generate", "acme", R"(tenant_id: "acme" prompt: "x" version: 9223372036854775807)", kNotFound,
       "version"},
      {"Inference/Generate", "acme", "tenant_id: \"acme\" " + big_prompt, kRange, "prompt"},
      {"Inference/Generate", "acme", "tenant_id: \"acme\" " + many_messages, kRange, "messages"},
      {"Inference/Generate", "acme", R"(tenant_id: "acme" messages { content: "x" })", kInvalid,
       "messages[0].role"},
      {"Inference/Generate", "acme", R"(tenant_id: "acme" messages { role: "wizard" content: "x" })", kInvalid,
       "role"},
      {"Inference/Generate", "acme", R"(tenant_id: "acme" prompt: "x" messages { role: "user" content: "x" })",
       kInvalid, "prompt"},
      {"Inference/GenerateStream", "acme", R"(tenant_id: "acme" prompt: "\xff")", kInvalid, "prompt"},
      {"Inference/GenerateStream", "acme", R"(tenant_id: "acme" prompt: "x" top_p: 7)", kRange, "top_p"},
      {"Inference/GenerateStream", "acme", "tenant_id: \"acme\" " + big_prompt, kRange, "prompt"},
      {"Inference/Score", "acme", R"(tenant_id: "acme" text: "\xfe\xff")", kInvalid, "text"},
      {"Inference/Score", "acme", R"(tenant_id: "acme")", kInvalid, "text"},
      {"Inference/Score", "acme", R"(tenant_id: "acme" text: "x" version: -5)", kRange, "version"},
      {"Inference/Score", "acme", "tenant_id: \"acme\" " + absl::StrReplaceAll(big_prompt, {{"prompt", "text"}}),
       kRange, "text"},
      {"Inference/Score", "acme", R"(tenant_id: "acme" messages { role: "robot" content: "x" })", kInvalid,
       "role"},
      // ---- Datasets ----
      {"Datasets/UploadDataset", "acme", "tenant_id: \"acme\" name: \"d\"\n---\nchunk: \"{\\\"text\\\": \\\"\\xff\\\"}\\n\"",
       kInvalid, "line 1"},
      {"Datasets/UploadDataset", "acme", R"(tenant_id: "\xff" name: "d" chunk: "{}")", kInvalid, "tenant_id"},
      {"Datasets/UploadDataset", "acme", R"(tenant_id: "acme" name: "d\xff" chunk: "{}")", kInvalid, "name"},
      {"Datasets/UploadDataset", "acme", R"(tenant_id: "acme" name: "d" format: "csv" chunk: "a,b")", kInvalid,
       "format"},
      {"Datasets/UploadDataset", "acme", R"(tenant_id: "acme" name: "d" format: "\xff")", kInvalid, "format"},
      {"Datasets/UploadDataset", "acme", R"(tenant_id: "acme" name: "d" chunk: "{\"text\": 5}\n")", kInvalid,
       "line 1"},
      {"Datasets/UploadDataset", "acme", R"(tenant_id: "acme" name: "d" chunk: "{\"prompt\": \"a\", \"completion\": \"b\"}\n[1]\n")",
       kInvalid, "line 2"},
      {"Datasets/UploadDataset", "acme", R"(tenant_id: "acme" name: "d" chunk: "{\"text\": \"a\"")", kInvalid,
       "line 1"},
      {"Datasets/UploadDataset", "acme", R"(tenant_id: "acme" name: "d" chunk: "{\"text\": \"a\", \"weight\": -1e999}")",
       kInvalid, "line 1"},
      {"Datasets/UploadDataset", "acme", "tenant_id: \"acme\" name: \"d\"\n---\n" + big_chunk + "\n---\n" + big_chunk,
       {StatusCode::RESOURCE_EXHAUSTED, StatusCode::INVALID_ARGUMENT}, "size limit"},
      {"Datasets/UploadDataset", "acme", R"(name: "d" chunk: "{\"text\": \"a\"}")",
       {StatusCode::INVALID_ARGUMENT, StatusCode::PERMISSION_DENIED}, "tenant_id"},
      {"Datasets/UploadDataset", "acme", R"(tenant_id: "acme" chunk: "{\"text\": \"a\"}")", kInvalid, "name"},
      {"Datasets/UploadDataset", "acme", R"(tenant_id: "acme" name: "d")", kInvalid, "chunk: the upload is empty"},
      {"Datasets/GetDataset", "acme", R"(tenant_id: "acme")", kInvalid, "dataset_id"},
      {"Datasets/GetDataset", "acme", R"(tenant_id: "acme" dataset_id: "ds_\xff")", kInvalid, "dataset_id"},
      {"Datasets/GetDataset", "acme", R"(tenant_id: "acme" dataset_id: "ds_nosuch")", kNotFound, "ds_nosuch"},
      {"Datasets/DeleteDataset", "acme", R"(tenant_id: "acme" dataset_id: "ds_nosuch")", kNotFound, "ds_nosuch"},
      {"Datasets/DeleteDataset", "acme", R"(tenant_id: "acme")", kInvalid, "dataset_id"},
      {"Datasets/ListDatasets", "acme", R"(tenant_id: "\xc3\x28")", kInvalid, "tenant_id"},
      // ---- FineTuning ----
      {"FineTuning/CreateJob", "acme", R"(tenant_id: "acme")", kInvalid, "training_dataset_id"},
      {"FineTuning/CreateJob", "acme", R"(tenant_id: "acme" training_dataset_id: "ds_nosuch")", kNotFound,
       "ds_nosuch"},
      {"FineTuning/CreateJob", "acme", job + R"(validation_dataset_id: "ds_nosuch")", kNotFound, "ds_nosuch"},
      {"FineTuning/CreateJob", "acme", R"(tenant_id: "acme" training_dataset_id: "\xff")", kInvalid,
       "training_dataset_id"},
      {"FineTuning/CreateJob", "acme", job + "hyperparameters { max_steps: -1 }", kRange, "max_steps"},
      {"FineTuning/CreateJob", "acme", job + "hyperparameters { max_steps: 9223372036854775807 }", kRange,
       "max_steps"},
      {"FineTuning/CreateJob", "acme", job + "hyperparameters { batch_size: 0 }", kRange, "batch_size"},
      {"FineTuning/CreateJob", "acme", job + "hyperparameters { batch_size: -2147483648 }", kRange, "batch_size"},
      {"FineTuning/CreateJob", "acme", job + "hyperparameters { seq_len: 2147483647 }", kRange, "seq_len"},
      {"FineTuning/CreateJob", "acme", job + "hyperparameters { learning_rate: nan }", kRange, "learning_rate"},
      {"FineTuning/CreateJob", "acme", job + "hyperparameters { learning_rate: -inf }", kRange, "learning_rate"},
      {"FineTuning/CreateJob", "acme", job + "hyperparameters { learning_rate: 1e308 }", kRange, "learning_rate"},
      {"FineTuning/CreateJob", "acme", job + "hyperparameters { max_steps: 10 warmup_steps: -1 }", kRange,
       "warmup_steps"},
      {"FineTuning/CreateJob", "acme", job + "hyperparameters { max_steps: 10 warmup_steps: 9223372036854775807 }",
       kRange, "warmup_steps"},
      {"FineTuning/CreateJob", "acme", job + "hyperparameters { weight_decay: nan }", kRange, "weight_decay"},
      {"FineTuning/CreateJob", "acme", job + "expert_selection { auto { relevance_threshold: -0.5 } }", kRange,
       "relevance_threshold"},
      {"FineTuning/CreateJob", "acme", job + "expert_selection { auto { relevance_threshold: nan } }", kRange,
       "relevance_threshold"},
      {"FineTuning/CreateJob", "acme", job + "expert_selection { auto { max_experts: -3 } }", kRange,
       "max_experts"},
      {"FineTuning/CreateJob", "acme", job + "expert_selection { explicit { slots { layer: -1 expert: 0 } } }",
       kRange, "slots"},
      {"FineTuning/CreateJob", "acme", job + "expert_selection { explicit { slots { layer: 0 expert: 2147483647 } } }",
       kRange, "slots"},
      {"FineTuning/CreateJob", "acme", job + "expert_selection { explicit { " + dup_slots + " } }", kInvalid,
       "slots"},
      {"FineTuning/CreateJob", "acme", job + "expert_selection { explicit { } }", kInvalid, "slots"},
      {"FineTuning/CreateJob", "acme", job + R"(method: "sgd")", kInvalid, "method"},
      {"FineTuning/CreateJob", "acme", job + R"(method: "lora" lora_rank: -1)", kRange, "lora_rank"},
      {"FineTuning/CreateJob", "acme", job + R"(method: "lora" lora_rank: 2147483647)", kRange, "lora_rank"},
      {"FineTuning/CreateJob", "acme", job + R"(method: "esft" lora_rank: 4)", kInvalid, "lora_rank"},
      {"FineTuning/CreateJob", "acme", job + "max_general_regression: nan", kRange, "max_general_regression"},
      {"FineTuning/CreateJob", "acme", job + "max_general_regression: -1", kRange, "max_general_regression"},
      {"FineTuning/CreateJob", "acme", job + "base_version: -1", kRange, "base_version"},
      {"FineTuning/CreateJob", "acme", job + "base_version: 9223372036854775807", kNotFound, "base_version"},
      {"FineTuning/CreateJob", "acme", job + "idempotency_key: \"" + std::string(1000, 'k') + "\"", kRange,
       "idempotency_key"},
      {"FineTuning/CreateJob", "acme", job + R"(idempotency_key: "\xff")", kInvalid, "idempotency_key"},
      {"FineTuning/GetJob", "acme", R"(tenant_id: "acme")", kInvalid, "job_id"},
      {"FineTuning/GetJob", "acme", R"(tenant_id: "acme" job_id: "job_nosuch")", kNotFound, "job_nosuch"},
      {"FineTuning/GetJob", "acme", R"(tenant_id: "acme" job_id: "job_\xff")", kInvalid, "job_id"},
      {"FineTuning/CancelJob", "acme", R"(tenant_id: "acme" job_id: "job_nosuch")", kNotFound, "job_nosuch"},
      {"FineTuning/CancelJob", "acme", R"(tenant_id: "acme")", kInvalid, "job_id"},
      {"FineTuning/WatchJob", "acme", R"(tenant_id: "acme" job_id: "job_nosuch")", kNotFound, "job_nosuch"},
      {"FineTuning/WatchJob", "acme", R"(tenant_id: "acme" job_id: "$JOB" after_seq: -1)", kRange, "after_seq"},
      {"FineTuning/ListJobs", "acme", R"(tenant_id: "acme" page_size: -1)", kRange, "page_size"},
      {"FineTuning/ListJobs", "acme", R"(tenant_id: "acme" page_token: "garbage\xff")", kInvalid, "page_token"},
      {"FineTuning/ListJobs", "acme", R"(tenant_id: "acme" page_token: "garbage")", kInvalid, "page_token"},
      // ---- Experts ----
      {"Experts/GetVersion", "acme", R"(tenant_id: "acme" version: -1)", kRange, "version"},
      {"Experts/GetVersion", "acme", R"(tenant_id: "acme" version: 9223372036854775807)", kNotFound, "version"},
      {"Experts/GetVersion", "acme", R"(tenant_id: "\xff" version: 1)", kInvalid, "tenant_id"},
      {"Experts/ListVersions", "acme", R"(tenant_id: "acme\xff")", kInvalid, "tenant_id"},
      {"Experts/ExportVersion", "acme", R"(tenant_id: "acme" version: -1)", kRange, "version"},
      {"Experts/ExportVersion", "acme", R"(tenant_id: "acme" version: 77)", kNotFound, "version"},
      {"Experts/ExportVersion", "acme", R"(tenant_id: "acme" version: 0 max_shard_bytes: -1)", kRange,
       "max_shard_bytes"},
      {"Experts/ExportVersion", "acme", R"(tenant_id: "acme" version: 0 overlay_only: true)", kInvalid,
       "overlay_only"},
      // ---- Admin ----
      {"Admin/CreateTenant", "admin", R"(tenant_id: "")", kInvalid, "tenant_id"},
      {"Admin/CreateTenant", "admin", R"(tenant_id: "UPPER")", kInvalid, "tenant_id"},
      {"Admin/CreateTenant", "admin", R"(tenant_id: "t\xff")", kInvalid, "tenant_id"},
      {"Admin/CreateTenant", "admin", "tenant_id: \"" + std::string(100, 'a') + "\"", kInvalid, "tenant_id"},
      {"Admin/CreateTenant", "admin", "tenant_id: \"fine\" display_name: \"" + std::string(300, 'd') + "\"",
       kRange, "display_name"},
      {"Admin/CreateTenant", "admin", R"(tenant_id: "fine" display_name: "\xe2\x82")", kInvalid, "display_name"},
      {"Admin/DeleteTenant", "admin", R"(tenant_id: "nosuch")", kNotFound, "nosuch"},
      {"Admin/DeleteTenant", "admin", R"(tenant_id: "")", kInvalid, "tenant_id"},
      {"Admin/IssueApiKey", "admin", R"(tenant_id: "acme" scopes: "superuser")", kInvalid, "scopes"},
      {"Admin/IssueApiKey", "admin", R"(tenant_id: "acme" scopes: "\xff")", kInvalid, "scopes[0]"},
      {"Admin/IssueApiKey", "admin", R"(tenant_id: "acme" ttl_seconds: -1)", kRange, "ttl_seconds"},
      {"Admin/IssueApiKey", "admin", R"(tenant_id: "acme" ttl_seconds: 9223372036854775807)", kRange,
       "ttl_seconds"},
      {"Admin/IssueApiKey", "admin", R"(tenant_id: "nosuch")", kNotFound, "nosuch"},
      {"Admin/IssueApiKey", "admin", R"(tenant_id: "acme" replaces_key_id: "key_nosuch")", kNotFound,
       "key_nosuch"},
      {"Admin/IssueApiKey", "admin", R"(tenant_id: "acme" replaced_key_ttl_seconds: -9223372036854775808)",
       kRange, "replaced_key_ttl_seconds"},
      {"Admin/RevokeApiKey", "admin", R"(key_id: "")", kInvalid, "key_id"},
      {"Admin/RevokeApiKey", "admin", R"(key_id: "key_nosuch")", kNotFound, "key_nosuch"},
      {"Admin/ListApiKeys", "admin", R"(tenant_id: "\x80")", kInvalid, "tenant_id"},
      {"Admin/SetQuotas", "admin", R"(tenant_id: "acme" quotas { max_versions: -2 })", kInvalid, "max_versions"},
      {"Admin/SetQuotas", "admin", R"(tenant_id: "")", kInvalid, "tenant_id"},
      {"Admin/GetQuotas", "admin", R"(tenant_id: "nosuch")", kNotFound, "nosuch"},
      {"Admin/ListVersions", "admin", R"(tenant_id: "nosuch")", kNotFound, "nosuch"},
      {"Admin/Promote", "admin", R"(tenant_id: "acme" version: -1)", kRange, "version"},
      {"Admin/Promote", "admin", R"(tenant_id: "acme" version: 9223372036854775807)", kNotFound, "version"},
      {"Admin/Promote", "admin", R"(version: 1)", kInvalid, "tenant_id"},
      {"Admin/Rollback", "admin", R"(tenant_id: "acme" to_version: -1)", kRange, "to_version"},
      {"Admin/Rollback", "admin", R"(tenant_id: "nosuch")", kNotFound, "nosuch"},
      {"Admin/ListJobs", "admin", R"(page_size: -5)", kRange, "page_size"},
      {"Admin/ListJobs", "admin", R"(page_token: "x")", kInvalid, "page_token"},
      {"Admin/CancelJob", "admin", R"(job_id: "")", kInvalid, "job_id"},
      {"Admin/CancelJob", "admin", R"(job_id: "job_nosuch")", kNotFound, "job_nosuch"},
      {"Admin/ListAuditEvents", "admin", R"(page_size: -1)", kRange, "page_size"},
      {"Admin/ListAuditEvents", "admin", R"(since { seconds: -9223372036854775808 })", kRange, "since"},
      {"Admin/ListAuditEvents", "admin", R"(page_token: "not a token")", kInvalid, "page_token"},
      {"Admin/ListAuditEvents", "admin", R"(action: "\xff")", kInvalid, "action"},
  };
  return c;
}

class MalformedInputTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new TestServer(WithModel());
    acme_key_ = new std::string(server_->CreateTenant("acme"));
    v1::Dataset ds;
    grpc::Status st = server_->Upload(*acme_key_, "acme", "d", AdditionJsonl(20), &ds);
    ASSERT_TRUE(st.ok()) << st.error_message();
    dataset_ = new std::string(ds.dataset_id());
    v1::CreateJobRequest req;
    req.set_tenant_id("acme");
    req.set_training_dataset_id(ds.dataset_id());
    v1::Job job;
    st = server_->FineTuning()->CreateJob(Ctx(*acme_key_).get(), req, &job);
    ASSERT_TRUE(st.ok()) << st.error_message();
    job_ = new std::string(job.job_id());
    stub_ = new grpc::GenericStub(server_->channel());
  }
  static void TearDownTestSuite() {
    delete stub_;
    delete server_;
    delete acme_key_;
    delete dataset_;
    delete job_;
  }

  // Sends `c.request` (text format, placeholders replaced) to c.rpc.
  static grpc::Status Call(const Case& c) {
    std::string text = absl::StrReplaceAll(c.request, {{"$DATASET", *dataset_}, {"$JOB", *job_}});
    size_t slash = c.rpc.find('/');
    const pb::ServiceDescriptor* sd =
        pb::DescriptorPool::generated_pool()->FindServiceByName("tessera.v1." + c.rpc.substr(0, slash));
    if (sd == nullptr) return grpc::Status(StatusCode::ABORTED, "test: no service " + c.rpc);
    const pb::MethodDescriptor* md = sd->FindMethodByName(c.rpc.substr(slash + 1));
    if (md == nullptr) return grpc::Status(StatusCode::ABORTED, "test: no method " + c.rpc);
    const pb::Message* proto = pb::MessageFactory::generated_factory()->GetPrototype(md->input_type());
    std::vector<std::string> messages;
    for (const std::string& part : std::vector<std::string>(absl::StrSplit(text, "\n---\n"))) {
      std::unique_ptr<pb::Message> m(proto->New());
      if (!pb::TextFormat::ParseFromString(part, m.get())) {
        return grpc::Status(StatusCode::ABORTED, "test: bad text proto for " + c.rpc + ": " + part.substr(0, 200));
      }
      messages.push_back(m->SerializeAsString());
    }
    std::string key = c.key == "acme" ? *acme_key_ : c.key == "admin" ? server_->admin_key() : c.key;
    std::promise<grpc::Status> done;
    new GenericCall(stub_, "/tessera.v1." + c.rpc, key, std::move(messages), &done);
    return done.get_future().get();
  }

  static TestServer* server_;
  static std::string* acme_key_;
  static std::string* dataset_;
  static std::string* job_;
  static grpc::GenericStub* stub_;
};
TestServer* MalformedInputTest::server_ = nullptr;
std::string* MalformedInputTest::acme_key_ = nullptr;
std::string* MalformedInputTest::dataset_ = nullptr;
std::string* MalformedInputTest::job_ = nullptr;
grpc::GenericStub* MalformedInputTest::stub_ = nullptr;

bool Forbidden(StatusCode code) {
  return code == StatusCode::OK || code == StatusCode::UNKNOWN || code == StatusCode::INTERNAL ||
         code == StatusCode::UNIMPLEMENTED || code == StatusCode::DATA_LOSS;
}

TEST_F(MalformedInputTest, EveryCaseIsACanonicalErrorNamingTheField) {
  std::set<std::string> rpcs;
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.rpc + " " + c.request.substr(0, 160));
    rpcs.insert(c.rpc);
    grpc::Status st = Call(c);
    ASSERT_NE(st.error_code(), StatusCode::ABORTED) << st.error_message();
    EXPECT_FALSE(Forbidden(st.error_code())) << "code " << st.error_code() << ": " << st.error_message();
    EXPECT_TRUE(c.codes.count(st.error_code())) << "code " << st.error_code() << ": " << st.error_message();
    EXPECT_NE(st.error_message().find(c.names), std::string::npos)
        << "the message should name \"" << c.names << "\": " << st.error_message();
  }
  // Every RPC with request fields is in the table.
  for (const char* service : {"Inference", "FineTuning", "Datasets", "Experts", "Admin"}) {
    const pb::ServiceDescriptor* sd = pb::DescriptorPool::generated_pool()->FindServiceByName(
        std::string("tessera.v1.") + service);
    ASSERT_NE(sd, nullptr);
    for (int i = 0; i < sd->method_count(); ++i) {
      if (sd->method(i)->input_type()->field_count() == 0) continue;
      std::string rpc = std::string(service) + "/" + sd->method(i)->name();
      EXPECT_TRUE(rpcs.count(rpc)) << rpc << " has no malformed-input case";
    }
  }
}

// Invalid UTF-8 in any string field of any request (top level, and inside messages one level down) is
// INVALID_ARGUMENT naming the field's path. protobuf itself refuses such a request, and gRPC used to
// answer that with UNIMPLEMENTED and an empty message (proto/request_parse.h).
TEST_F(MalformedInputTest, InvalidUtf8InAnyStringFieldNamesIt) {
  int checked = 0;
  for (const char* service : {"Inference", "FineTuning", "Datasets", "Experts", "Admin"}) {
    const pb::ServiceDescriptor* sd = pb::DescriptorPool::generated_pool()->FindServiceByName(
        std::string("tessera.v1.") + service);
    ASSERT_NE(sd, nullptr);
    for (int i = 0; i < sd->method_count(); ++i) {
      const pb::MethodDescriptor* md = sd->method(i);
      const pb::Descriptor* d = md->input_type();
      const pb::Message* proto = pb::MessageFactory::generated_factory()->GetPrototype(d);
      // (outer field, inner field or null)
      std::vector<std::pair<const pb::FieldDescriptor*, const pb::FieldDescriptor*>> targets;
      for (int f = 0; f < d->field_count(); ++f) {
        const pb::FieldDescriptor* fd = d->field(f);
        if (fd->type() == pb::FieldDescriptor::TYPE_STRING) targets.push_back({fd, nullptr});
        if (fd->type() == pb::FieldDescriptor::TYPE_MESSAGE) {
          for (int g = 0; g < fd->message_type()->field_count(); ++g) {
            if (fd->message_type()->field(g)->type() == pb::FieldDescriptor::TYPE_STRING) {
              targets.push_back({fd, fd->message_type()->field(g)});
            }
          }
        }
      }
      for (auto [outer, inner] : targets) {
        std::unique_ptr<pb::Message> m(proto->New());
        const pb::Reflection* r = m->GetReflection();
        std::string path = outer->name() + (outer->is_repeated() ? "[0]" : "");
        if (inner == nullptr) {
          if (outer->is_repeated()) {
            r->AddString(m.get(), outer, "ok\xff");
          } else {
            r->SetString(m.get(), outer, "ok\xff");
          }
        } else {
          pb::Message* sub = outer->is_repeated() ? r->AddMessage(m.get(), outer) : r->MutableMessage(m.get(), outer);
          const pb::Reflection* sr = sub->GetReflection();
          if (inner->is_repeated()) {
            sr->AddString(sub, inner, "\xc3");
          } else {
            sr->SetString(sub, inner, "\xc3");
          }
          path += "." + inner->name() + (inner->is_repeated() ? "[0]" : "");
        }
        std::string rpc = std::string(service) + "/" + md->name();
        SCOPED_TRACE(rpc + " " + path);
        std::promise<grpc::Status> done;
        // The quota RPCs check the ADMIN key before the request (the others validate first), so they get it.
        const bool quotas = md->name() == "SetQuotas" || md->name() == "GetQuotas";
        const std::string& key = quotas ? server_->admin_key() : *acme_key_;
        new GenericCall(stub_, "/tessera.v1." + rpc, key, {m->SerializeAsString()}, &done);
        grpc::Status st = done.get_future().get();
        EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << st.error_message();
        // The quota RPCs validate the id's form, which invalid UTF-8 also fails; the field is named first.
        if (quotas) {
          EXPECT_EQ(st.error_message().rfind(path + ":", 0), 0u) << st.error_message();
        } else {
          EXPECT_EQ(st.error_message(), path + ": must be valid UTF-8");
        }
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 40);
}

TEST_F(MalformedInputTest, TheServerStillServesAfterwards) {
  for (const Case& c : Cases()) (void)Call(c);
  v1::GenerateRequest req;
  req.set_tenant_id("acme");
  req.set_prompt("add(1,2)=");
  req.set_max_tokens(2);
  v1::GenerateResponse resp;
  grpc::Status st = server_->Inference()->Generate(Ctx(*acme_key_).get(), req, &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.usage().completion_tokens(), 2);
}

}  // namespace
}  // namespace tessera::services::testing
