// A real Hugging Face checkpoint directory served end to end: tests/fixtures/checkpoints/qwen3_moe_chat
// (a tiny Qwen3-MoE with a trained byte-level BPE tokenizer.json and a ChatML chat template, made by
// ops/fixtures/make_chat_checkpoint.py). Every number is checked against what transformers computed
// for the same directory (expected.json): Score of raw text (default special tokens, log-likelihood of
// every token after the first), Score of a conversation (rendered by the chat template), greedy chat
// generation stopping at the end-of-turn token, and a fine-tuning job on a {"messages": ...} dataset
// whose version then serves.
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "core/tokenizer/hf_tokenizer.h"
#include "core/util/utf8_sanitize.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

std::string CheckpointDir() {
  const char* src = std::getenv("TESSERA_SOURCE_DIR");
  return std::string(src ? src : ".") + "/tests/fixtures/checkpoints/qwen3_moe_chat";
}

nlohmann::json Expected() {
  std::ifstream in(CheckpointDir() + "/expected.json");
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

void AddMessages(const nlohmann::json& messages, google::protobuf::RepeatedPtrField<v1::ChatMessage>* out) {
  for (const auto& m : messages) {
    v1::ChatMessage* msg = out->Add();
    msg->set_role(m["role"].get<std::string>());
    msg->set_content(m["content"].get<std::string>());
  }
}

TestServerOptions CheckpointServer() {
  TestServerOptions o;
  o.model = true;
  o.training = true;
  o.backbone = CheckpointDir();
  return o;
}

class RealCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override { key_ = server_.CreateTenant("acme"); }
  TestServer server_{CheckpointServer()};
  nlohmann::json expected_ = Expected();
  std::string key_;
};

// Sums of ~10-60 log-probabilities computed in f32 against transformers' float64 reference.
constexpr double kLoglikTolerance = 2e-3;

TEST_F(RealCheckpointTest, ScoreOfTextAndConversationsMatchesTransformers) {
  auto inf = server_.Inference();
  for (const auto& t : expected_["texts"]) {
    v1::ScoreRequest r;
    r.set_tenant_id("acme");
    r.set_text(t["text"].get<std::string>());
    v1::ScoreResponse out;
    ASSERT_TRUE(inf->Score(Ctx(key_).get(), r, &out).ok()) << t["text"];
    EXPECT_EQ(out.num_tokens(), static_cast<int64_t>(t["ids"].size()) - 1) << t["text"];
    EXPECT_NEAR(out.total_logprob(), t["loglik"].get<double>(), kLoglikTolerance) << t["text"];
  }
  for (const auto& c : expected_["conversations"]) {
    v1::ScoreRequest r;
    r.set_tenant_id("acme");
    AddMessages(c["messages"], r.mutable_messages());
    v1::ScoreResponse out;
    ASSERT_TRUE(inf->Score(Ctx(key_).get(), r, &out).ok()) << c["rendered"];
    EXPECT_EQ(out.num_tokens(), static_cast<int64_t>(c["rendered_ids"].size()) - 1);
    EXPECT_NEAR(out.total_logprob(), c["loglik"].get<double>(), kLoglikTolerance);
    // The same conversation sent as its rendered text scores the same (no special tokens to add:
    // this tokenizer's post-processor adds none, as Qwen's does not).
    v1::ScoreRequest raw;
    raw.set_tenant_id("acme");
    raw.set_text(c["rendered"].get<std::string>());
    v1::ScoreResponse raw_out;
    ASSERT_TRUE(inf->Score(Ctx(key_).get(), raw, &raw_out).ok());
    EXPECT_DOUBLE_EQ(raw_out.total_logprob(), out.total_logprob());
  }
}

TEST_F(RealCheckpointTest, ChatGenerationIsTransformersGreedyAndStopsAtEndOfTurn) {
  absl::StatusOr<std::unique_ptr<HfTokenizer>> tok = HfTokenizer::Create(CheckpointDir());
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto inf = server_.Inference();
  int ended_at_eos = 0;
  for (const auto& c : expected_["conversations"]) {
    std::vector<int32_t> ids = c["greedy_ids"].get<std::vector<int32_t>>();
    v1::GenerateRequest r;
    r.set_tenant_id("acme");
    AddMessages(c["messages"], r.mutable_messages());
    r.set_max_tokens(12);  // the reference decoded at most 12 tokens
    v1::GenerateResponse out;
    ASSERT_TRUE(inf->Generate(Ctx(key_).get(), r, &out).ok());
    EXPECT_EQ(out.usage().prompt_tokens(), static_cast<int32_t>(c["generation_prompt_ids"].size()));
    EXPECT_EQ(out.usage().completion_tokens(), static_cast<int32_t>(ids.size()));
    EXPECT_EQ(out.text(), Utf8Sanitize((*tok)->Decode(ids, /*skip_special_tokens=*/true)));
    // A reply that reached <|im_end|> or <|endoftext|> (generation_config.json's eos list) ends there.
    const bool eos = c["greedy_ends_at_eos"].get<bool>();
    EXPECT_EQ(out.finish_reason(), eos ? v1::EOS : v1::LENGTH) << c["messages"].dump();
    ended_at_eos += eos;
  }
  EXPECT_GE(ended_at_eos, 1) << "the fixture must hold a reply that ends at the end of turn";

  // Raw prompt and messages reach the same tokens: the same greedy text.
  v1::GenerateRequest r;
  r.set_tenant_id("acme");
  AddMessages(expected_["conversations"][0]["messages"], r.mutable_messages());
  v1::GenerateRequest raw;
  raw.set_tenant_id("acme");
  raw.set_prompt(expected_["conversations"][0]["generation_prompt"].get<std::string>());
  raw.set_max_tokens(5);
  r.set_max_tokens(5);
  v1::GenerateResponse a, b;
  ASSERT_TRUE(inf->Generate(Ctx(key_).get(), r, &a).ok());
  ASSERT_TRUE(inf->Generate(Ctx(key_).get(), raw, &b).ok());
  EXPECT_EQ(a.text(), b.text());
  EXPECT_EQ(a.usage().prompt_tokens(), b.usage().prompt_tokens());
}

TEST_F(RealCheckpointTest, BadChatRequestsAreInvalidArgument) {
  auto inf = server_.Inference();
  v1::GenerateRequest both;
  both.set_tenant_id("acme");
  both.set_prompt("hi");
  AddMessages(nlohmann::json::parse(R"([{"role":"user","content":"hi"}])"), both.mutable_messages());
  v1::GenerateResponse out;
  grpc::Status st = inf->Generate(Ctx(key_).get(), both, &out);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("not both"), std::string::npos) << st.error_message();

  v1::GenerateRequest no_role;
  no_role.set_tenant_id("acme");
  no_role.add_messages()->set_content("who am I?");
  st = inf->Generate(Ctx(key_).get(), no_role, &out);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("messages[0].role"), std::string::npos) << st.error_message();
}

TEST_F(RealCheckpointTest, FineTunesOnChatDatasetAndServesTheVersion) {
  // A tenant task in the OpenAI chat format: the assistant answers with the reversed word list.
  std::string jsonl;
  const char* words[] = {"model", "expert", "tenant", "router", "layer", "token", "weight", "serve"};
  for (int i = 0; i < 24; ++i) {
    std::string a = words[i % 8], b = words[(i * 3 + 1) % 8];
    nlohmann::json line = {{"messages",
                            {{{"role", "user"}, {"content", "Reverse: " + a + " " + b}},
                             {{"role", "assistant"}, {"content", b + " " + a}}}}};
    jsonl += line.dump() + "\n";
  }
  // One conversation whose assistant turn is excluded by weight 0 still has a weighted one.
  jsonl += R"({"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"skip","weight":0},)"
           R"({"role":"user","content":"Reverse: a b"},{"role":"assistant","content":"b a"}]})"
           "\n";
  v1::Dataset ds;
  grpc::Status st = server_.Upload(key_, "acme", "chat", jsonl, &ds);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(ds.num_examples(), 25);

  // A conversation with nothing to learn is refused, naming the line.
  v1::Dataset bad;
  st = server_.Upload(key_, "acme", "bad",
                      R"({"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"x","weight":0}]})",
                      &bad);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("line 1"), std::string::npos) << st.error_message();

  v1::CreateJobRequest req;
  req.set_tenant_id("acme");
  req.set_training_dataset_id(ds.dataset_id());
  req.mutable_hyperparameters()->set_max_steps(6);
  req.mutable_hyperparameters()->set_batch_size(4);
  req.mutable_hyperparameters()->set_seq_len(64);
  req.mutable_hyperparameters()->set_learning_rate(3e-3);
  req.set_auto_promote(false);
  v1::Job job;
  st = server_.FineTuning()->CreateJob(Ctx(key_).get(), req, &job);
  ASSERT_TRUE(st.ok()) << st.error_message();
  for (int i = 0; i < 3000; ++i) {  // up to 300 s: generous for a loaded machine
    v1::GetJobRequest g;
    g.set_tenant_id("acme");
    g.set_job_id(job.job_id());
    ASSERT_TRUE(server_.FineTuning()->GetJob(Ctx(key_).get(), g, &job).ok());
    if (job.state() == v1::SUCCEEDED || job.state() == v1::FAILED || job.state() == v1::CANCELLED) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(job.state(), v1::SUCCEEDED) << job.error();
  ASSERT_GT(job.result_version(), 0);
  EXPECT_TRUE(std::isfinite(job.progress().train_loss()));

  // The new version serves a chat request (pinned), and differs from the base somewhere.
  v1::ScoreRequest s;
  s.set_tenant_id("acme");
  AddMessages(nlohmann::json::parse(R"([{"role":"user","content":"Reverse: model expert"},)"
                                    R"({"role":"assistant","content":"expert model"}])"),
              s.mutable_messages());
  s.set_version(0);
  v1::ScoreResponse base, tuned;
  ASSERT_TRUE(server_.Inference()->Score(Ctx(key_).get(), s, &base).ok());
  s.set_version(job.result_version());
  ASSERT_TRUE(server_.Inference()->Score(Ctx(key_).get(), s, &tuned).ok());
  EXPECT_EQ(tuned.expert_version(), job.result_version());
  EXPECT_GT(tuned.total_logprob(), base.total_logprob());  // it learned the task's answers
}

}  // namespace
}  // namespace tessera::services::testing
