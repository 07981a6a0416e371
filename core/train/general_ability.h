// General ability: how much of the backbone's own competence a fine-tuned result keeps (ESFT's
// "general ability" column, and the promotion gate's second condition).
//
// Two measurements of a model (optionally with a tenant overlay applied to every sequence):
//  (a) language modelling of general text: for each text example (tokens + loss mask, as
//      data::TokenizeText makes them: every token after BOS is a target), one forward over the
//      sequence (truncated to seq_len) and, over every target token t of every example,
//        loss           = mean_t -log softmax(logits_{t-1})[tokens_t]          (nats / token)
//        token_accuracy = mean_t [argmax logits_{t-1} == tokens_t]   (ties: the lowest id)
//      For builtin:tiny the text is held-out documents of the mixture it was pretrained on
//      (PretrainingMixtureHeldOut); for another backbone, a file of {"text": ...} lines.
//  (b) other tasks: greedy exact match (exact_match.h) on each given task's examples.
// Compare(before, after) gives the change: relative_loss_increase = (after - before) / before, the
// gate's quantity; > 0 is a regression.
//
// Cost: (a) is one forward per example with logits for every token (the accuracy needs the argmax),
// batched so that a batch's logits stay under ~64 MB on the host.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/data/tasks.h"
#include "core/data/tokenized_example.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"

namespace tessera::train {

// The corpus seeds tessera-pretrain uses: `corpus_seed` for training, corpus_seed + 1 for its
// validation. The general-ability text is drawn from corpus_seed + kGeneralEvalSeedOffset, a seed the
// pretraining never read (same mixture, same domain weights, other documents).
inline constexpr uint64_t kGeneralEvalSeedOffset = 2;
inline constexpr uint64_t kBuiltinCorpusSeed = 2024;  // DefaultPretrainOptions().corpus_seed

// `n` held-out documents of the general pretraining mixture (core/data/corpus.h), tokenized as text.
std::vector<data::TokenizedExample> PretrainingMixtureHeldOut(const Tokenizer& tokenizer, int64_t n,
                                                              uint64_t corpus_seed = kBuiltinCorpusSeed);

struct TaskExamples {
  std::string name;
  std::vector<data::Example> examples;
};

// The pretraining mixture's skills as exact-match tasks: `n` held-out documents (corpus seed +
// kGeneralEvalSeedOffset) of the "question=answer" domains builtin:tiny actually learned, records and
// words (~45-50% exact match; its arithmetic and date conversions are ~0-5%, so they would show no
// regression), split at the last '='. A fine-tune that damages them shows as a drop (unlike the other
// tenant tasks, where the base is at ~0).
std::vector<TaskExamples> PretrainingSkillTasks(int64_t n, uint64_t corpus_seed = kBuiltinCorpusSeed);

struct GeneralAbilityData {
  std::vector<data::TokenizedExample> text;  // (a); may be empty
  std::vector<TaskExamples> tasks;           // (b); may be empty
  int64_t seq_len = 256;                     // text examples are truncated to this many tokens
  int max_new_tokens = 24;                   // (b)'s greedy decoding budget
};

struct GeneralAbility {
  double loss = std::numeric_limits<double>::quiet_NaN();            // (a); NaN without text
  double token_accuracy = std::numeric_limits<double>::quiet_NaN();  // (a)
  int64_t tokens = 0;                                                 // (a)'s target tokens
  std::vector<double> task_exact_match;  // (b), in data.tasks' order
  double mean_task_exact_match = std::numeric_limits<double>::quiet_NaN();
};

// `tokenizer` is needed only for (b) (may be null without tasks). INVALID_ARGUMENT when the text has
// no target token within seq_len, or tasks are given without a tokenizer.
absl::StatusOr<GeneralAbility> EvaluateGeneralAbility(const Model& model, const ExpertOverlay* overlay,
                                                      const GeneralAbilityData& data,
                                                      const Tokenizer* tokenizer = nullptr);

struct GeneralAbilityChange {
  double loss_before = 0, loss_after = 0;
  double relative_loss_increase = 0;  // (after - before) / before; > 0: worse
  double token_accuracy_change = 0;   // after - before
  double task_exact_match_change = 0; // mean over tasks, after - before (0 without tasks)
};

GeneralAbilityChange CompareGeneralAbility(const GeneralAbility& before, const GeneralAbility& after);

}  // namespace tessera::train
