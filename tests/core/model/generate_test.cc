// Generation: determinism, greedy == argmax of a full recompute, max_tokens, EOS, stop strings,
// streaming and cancellation.
#include "core/model/generate.h"

#include <limits>

#include "core/tokenizer/byte_tokenizer.h"
#include "gtest/gtest.h"
#include "tests/core/model/reference_model.h"

namespace tessera {
namespace {

// The byte tokenizer with a chosen EOS id (to make a random model "emit EOS" at a known step).
class EosTokenizer : public Tokenizer {
 public:
  explicit EosTokenizer(int32_t eos) : eos_(eos) {}
  std::vector<int32_t> Encode(std::string_view t) const override { return bytes_.Encode(t); }
  std::string Decode(absl::Span<const int32_t> ids) const override { return bytes_.Decode(ids); }
  std::string DecodeToken(int32_t id) const override { return id == eos_ ? "" : bytes_.DecodeToken(id); }
  int32_t vocab_size() const override { return bytes_.vocab_size(); }
  int32_t bos_id() const override { return bytes_.bos_id(); }
  int32_t eos_id() const override { return eos_; }
  int32_t pad_id() const override { return bytes_.pad_id(); }
  std::string name() const override { return "eos-test"; }

 private:
  ByteTokenizer bytes_;
  int32_t eos_;
};

class GenerateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = testing::SmallConfig(ModelFamily::kQwen3Moe);
    config_.vocab_size = 264;  // byte vocabulary padded
    auto w = ModelWeights::Allocate(config_, be_.get()).value();
    testing::RandomizeWeights(config_, w, be_.get(), 3);
    model_ = Model::Create(config_, w, be_.get()).value();
  }
  GenerateRequest Request(int64_t max_tokens) {
    GenerateRequest r;
    r.prompt = {256, 'a', 'b', 'c'};
    r.max_tokens = max_tokens;
    r.stop_at_eos = false;
    return r;
  }
  std::unique_ptr<Backend> be_ = MakeCpuBackend();
  ModelConfig config_;
  std::unique_ptr<Model> model_;
  ByteTokenizer tok_;
};

TEST_F(GenerateTest, GreedyEqualsArgmaxOfFullRecompute) {
  auto r = Generate(*model_, tok_, Request(12));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->tokens.size(), 12u);
  EXPECT_EQ(r->finish_reason, FinishReason::kLength);
  EXPECT_EQ(r->prompt_tokens, 4);
  EXPECT_EQ(r->completion_tokens, 12);
  std::vector<int32_t> seq = Request(1).prompt;
  for (size_t i = 0; i < r->tokens.size(); ++i) {
    SequenceInput in[1] = {{seq, nullptr, nullptr}};
    std::vector<float> logits = be_->ToHostF32(model_->Forward(in).value().logits).value();
    int32_t best = -1;
    for (int32_t v = 0; v < 256; ++v) {  // bytes (the test model's EOS never wins: stop_at_eos off)
      if (best < 0 || logits[v] > logits[best]) best = v;
    }
    if (logits[257] > logits[best]) best = 257;
    EXPECT_EQ(r->tokens[i], best) << "step " << i;
    seq.push_back(r->tokens[i]);
  }
  EXPECT_EQ(r->text, tok_.Decode(r->tokens));
}

TEST_F(GenerateTest, SameSeedSameOutput) {
  GenerateRequest req = Request(16);
  req.sampling.temperature = 1.0f;
  req.sampling.top_p = 0.95f;
  req.sampling.seed = 1234;
  auto a = Generate(*model_, tok_, req);
  auto b = Generate(*model_, tok_, req);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->tokens, b->tokens);
  EXPECT_EQ(a->logprobs, b->logprobs);
  bool any_different = false;
  for (uint64_t seed : {1u, 2u, 3u, 4u}) {
    req.sampling.seed = seed;
    auto c = Generate(*model_, tok_, req);
    ASSERT_TRUE(c.ok());
    any_different |= c->tokens != a->tokens;
  }
  EXPECT_TRUE(any_different);
}

TEST_F(GenerateTest, EosStopsAndIsNotEmitted) {
  auto free_run = Generate(*model_, tok_, Request(10)).value();
  const int32_t fake_eos = free_run.tokens[3];
  // First occurrence of that id decides where generation stops.
  size_t first = 0;
  while (free_run.tokens[first] != fake_eos) ++first;
  EosTokenizer eos_tok(fake_eos);
  GenerateRequest req = Request(10);
  req.stop_at_eos = true;
  auto r = Generate(*model_, eos_tok, req);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->finish_reason, FinishReason::kEos);
  EXPECT_EQ(r->tokens, std::vector<int32_t>(free_run.tokens.begin(), free_run.tokens.begin() + first));
}

TEST_F(GenerateTest, StopStringsCutTheOutputAndStreamingMatches) {
  auto free_run = Generate(*model_, tok_, Request(24)).value();
  ASSERT_GE(free_run.text.size(), 8u);
  const std::string stop = free_run.text.substr(5, 2);
  GenerateRequest req = Request(24);
  req.stop = {stop, "never-happens-xyz"};
  std::string streamed;
  int chunks = 0;
  auto r = Generate(*model_, tok_, req, [&](const StreamChunk& c) {
    streamed += c.text;
    ++chunks;
    return true;
  });
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->finish_reason, FinishReason::kStop);
  EXPECT_EQ(r->text, free_run.text.substr(0, free_run.text.find(stop)));
  EXPECT_EQ(streamed, r->text);
  EXPECT_GE(chunks, static_cast<int>(r->tokens.size()));
  // Streaming a run without stops reproduces the whole text.
  streamed.clear();
  auto plain = Generate(*model_, tok_, Request(24), [&](const StreamChunk& c) {
    streamed += c.text;
    return true;
  });
  EXPECT_EQ(streamed, plain->text);
}

TEST_F(GenerateTest, CancelFromCallbackAndErrors) {
  int seen = 0;
  auto r = Generate(*model_, tok_, Request(20), [&](const StreamChunk&) { return ++seen < 3; });
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(r->tokens.size(), 3u);
  GenerateRequest bad = Request(0);
  EXPECT_FALSE(Generate(*model_, tok_, bad).ok());
  bad = Request(4);
  bad.prompt.clear();
  EXPECT_FALSE(Generate(*model_, tok_, bad).ok());
  bad = Request(4);
  bad.sampling.top_p = 0.0f;
  EXPECT_FALSE(Generate(*model_, tok_, bad).ok());
}

TEST_F(GenerateTest, OverlayAndRoutingAndText) {
  auto ov = ExpertOverlay::CopyOfBase(config_, model_->weights(), std::vector<SlotId>{{0, 1}}, be_.get()).value();
  GenerateRequest req = Request(6);
  req.overlay = ov.get();
  req.return_routing = true;
  auto with = Generate(*model_, tok_, req).value();
  auto without = Generate(*model_, tok_, Request(6)).value();
  EXPECT_EQ(with.tokens, without.tokens);  // a copy of the base behaves like the base
  // Routing covers the prompt and every decoded token except the last sampled one.
  EXPECT_EQ(with.routing.tokens, 4 + 6 - 1);
  auto text = GenerateText(*model_, tok_, "abc", Request(6));
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(text->tokens, without.tokens);  // BOS + "abc" is the same prompt
}

}  // namespace
}  // namespace tessera
