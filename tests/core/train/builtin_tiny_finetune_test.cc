// The product's claim at a small budget: on the shipped builtin:tiny backbone, a tenant task the base
// model cannot do (the "cipher" task: a secret letter substitution of five random letters; the base
// scores <= 10% exact match) is learned by an expert-only fine-tune of at most 25% of the expert
// slots, chosen by ESFT auto selection; and the backbone's and another tenant's outputs are bitwise
// unchanged afterwards.
//
// Budget and threshold: bench_finetune shows the full claim (>= 80% within 5 minutes). Here the
// fine-tune is cut to kSteps = 60 steps of 16 examples (~6 s on one core) and must still reach 80%
// exact match on 100 held-out strings; our runs reach 0.97 with 5 auto-selected slots (of 64). The
// base scores 0: the cipher is a derangement that also avoids the corpus' shift(), so neither copying,
// shifting nor upper-casing the input gets a letter right, and passing requires the secret mapping.
#include <cstdio>
#include <filesystem>

#include "core/data/jsonl_dataset.h"
#include "core/data/tasks.h"
#include "core/model/model.h"
#include "core/tokenizer/byte_tokenizer.h"
#include "core/train/backbone.h"
#include "core/train/exact_match.h"
#include "core/train/finetune.h"
#include "gtest/gtest.h"

namespace tessera::train {
namespace {

constexpr int64_t kSteps = 60;
constexpr double kMinAccuracy = 0.8;

std::vector<float> Logits(const Model& m, const ExpertOverlay* overlay) {
  std::vector<int32_t> toks = {256};
  for (char c : std::string("secret(hello)=qwert copy(abcde)=abcde")) toks.push_back(c);
  SequenceInput in{absl::MakeConstSpan(toks), overlay, nullptr};
  ForwardOptions o;
  o.logits = LogitsMode::kAll;
  auto r = m.Forward({&in, 1}, o);
  EXPECT_TRUE(r.ok()) << r.status();
  return *m.backend()->ToHostF32(r->logits);
}

TEST(BuiltinTinyFineTuneTest, ExpertOnlyFineTuneLearnsATaskTheBaseCannotDo) {
  auto be = MakeCpuBackend();
  const char* src = std::getenv("TESSERA_SOURCE_DIR");
  std::vector<std::string> path;
  if (src != nullptr) path.push_back(std::string(src) + "/ops/backbones");
  auto bb = LoadBackbone("builtin:tiny", be.get(), path);
  ASSERT_TRUE(bb.ok()) << bb.status();
  auto model = Model::Create(bb->config, bb->weights, be.get());
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelConfig& c = bb->config;
  ByteTokenizer tok;

  auto task = *data::Task::Create("cipher", 1234);
  auto train_ex = task.Generate(1, 1000), eval_ex = task.Generate(2, 100);
  std::vector<data::TokenizedExample> train, val;
  for (const auto& e : train_ex) train.push_back(data::TokenizePromptCompletion(e.prompt, e.completion, tok));
  for (const auto& e : eval_ex) val.push_back(data::TokenizePromptCompletion(e.prompt, e.completion, tok));

  auto base_em = EvaluateExactMatch(**model, nullptr, eval_ex, tok, 8);
  ASSERT_TRUE(base_em.ok()) << base_em.status();
  EXPECT_LE(base_em->accuracy, 0.10);

  auto other = *ExpertOverlay::CopyOfBase(c, (*model)->weights(), std::vector<SlotId>{{0, 1}, {3, 9}},
                                          be.get());
  ASSERT_TRUE(be->Scale(const_cast<Tensor&>(other->Find({3, 9})->down), 1.3f).ok());
  const auto base_before = Logits(**model, nullptr);
  const auto other_before = Logits(**model, other.get());

  FineTuneOptions o;
  o.trainer.max_steps = kSteps;
  o.trainer.batch_size = 16;
  o.trainer.seq_len = 64;
  o.trainer.learning_rate = 1e-2;
  o.trainer.warmup_steps = 10;
  o.trainer.seed = 1;
  o.trainer.eval_max_examples = 64;
  o.selection.threshold = 0.3;
  o.selection.max_experts = c.num_layers * c.num_experts / 4;
  auto ft = FineTuneExperts(**model, bb->sha256, train, val, o);
  ASSERT_TRUE(ft.ok()) << ft.status();
  EXPECT_LE(static_cast<int64_t>(ft->trained_slots.size()), c.num_layers * c.num_experts / 4);
  EXPECT_LT(ft->train.final_val_loss, ft->train.initial_val_loss);

  auto em = EvaluateExactMatch(**model, ft->overlay.get(), eval_ex, tok, 8);
  ASSERT_TRUE(em.ok()) << em.status();
  std::printf("base exact match %.2f; after %lld steps on %zu slots: %.2f (val loss %.4f -> %.4f)\n",
              base_em->accuracy, static_cast<long long>(kSteps), ft->trained_slots.size(),
              em->accuracy, ft->train.initial_val_loss, ft->train.final_val_loss);
  EXPECT_GE(em->accuracy, kMinAccuracy) << "e.g. " << eval_ex[0].prompt << " -> " << em->outputs[0]
                                        << " (want " << eval_ex[0].completion << ")";
  EXPECT_EQ(Logits(**model, nullptr), base_before);
  EXPECT_EQ(Logits(**model, other.get()), other_before);
}

}  // namespace
}  // namespace tessera::train
