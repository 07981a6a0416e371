#include "core/train/general_ability.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/data/corpus.h"
#include "core/data/jsonl_dataset.h"
#include "core/train/exact_match.h"
#include "core/util/status_macros.h"

namespace tessera::train {

std::vector<data::TokenizedExample> PretrainingMixtureHeldOut(const Tokenizer& tokenizer, int64_t n,
                                                              uint64_t corpus_seed) {
  std::vector<data::TokenizedExample> out;
  for (const std::string& doc : data::GenerateGeneralCorpus(corpus_seed + kGeneralEvalSeedOffset, n)) {
    out.push_back(data::TokenizeText(doc, tokenizer));
  }
  return out;
}

std::vector<TaskExamples> PretrainingSkillTasks(int64_t n, uint64_t corpus_seed) {
  std::vector<TaskExamples> out;
  for (data::Domain d : {data::Domain::kRecords, data::Domain::kWords}) {
    // One stream per domain, from the held-out seed (the domain index keeps the streams apart).
    data::Rng rng(corpus_seed + kGeneralEvalSeedOffset + 1000 * (static_cast<uint64_t>(d) + 1));
    TaskExamples t{data::DomainName(d), {}};
    while (static_cast<int64_t>(t.examples.size()) < n) {
      const std::string doc = data::GenerateDocument(d, rng);
      const size_t eq = doc.rfind('=');
      if (eq == std::string::npos || eq + 1 == doc.size()) continue;
      t.examples.push_back({doc.substr(0, eq + 1), doc.substr(eq + 1), {}});
    }
    out.push_back(std::move(t));
  }
  return out;
}

absl::StatusOr<GeneralAbility> EvaluateGeneralAbility(const Model& model, const ExpertOverlay* overlay,
                                                      const GeneralAbilityData& data,
                                                      const Tokenizer* tokenizer) {
  if (!data.tasks.empty() && tokenizer == nullptr) {
    return absl::InvalidArgumentError("general ability: task exact match needs a tokenizer");
  }
  GeneralAbility result;
  if (!data.text.empty()) {
    Backend& be = *model.backend();
    const int64_t V = model.config().vocab_size;
    // Host logits per batch bounded to ~16M floats (64 MB).
    const int64_t max_rows = std::max<int64_t>(1, (int64_t{16} << 20) / V);
    double loss_sum = 0;
    int64_t correct = 0, count = 0;
    size_t i = 0;
    while (i < data.text.size()) {
      std::vector<SequenceInput> batch;
      std::vector<size_t> members;
      int64_t rows = 0;
      while (i < data.text.size()) {
        const int64_t len = std::min<int64_t>(data.seq_len, data.text[i].tokens.size());
        if (len < 2) {
          ++i;
          continue;
        }
        if (!batch.empty() && rows + len > max_rows) break;
        batch.push_back({absl::MakeConstSpan(data.text[i].tokens.data(), len), overlay, nullptr});
        members.push_back(i);
        rows += len;
        ++i;
      }
      if (batch.empty()) break;
      ForwardOptions opt;
      opt.logits = LogitsMode::kAll;
      ASSIGN_OR_RETURN(ForwardResult r, model.Forward(batch, opt));
      ASSIGN_OR_RETURN(std::vector<float> logits, be.ToHostF32(r.logits));
      for (size_t b = 0; b < batch.size(); ++b) {
        const data::TokenizedExample& ex = data.text[members[b]];
        const int64_t len = static_cast<int64_t>(batch[b].tokens.size());
        for (int64_t t = 0; t + 1 < len; ++t) {
          if (!ex.loss_mask[t + 1]) continue;
          const float* row = logits.data() + (r.seq_row_begin[b] + t) * V;
          const float mx = *std::max_element(row, row + V);
          double z = 0;
          for (int64_t v = 0; v < V; ++v) z += std::exp(static_cast<double>(row[v]) - mx);
          const int32_t target = ex.tokens[t + 1];
          loss_sum += std::log(z) + mx - row[target];
          correct += (std::max_element(row, row + V) - row) == target;
          ++count;
        }
      }
    }
    if (count == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("general ability: the text has no target token within seq_len ", data.seq_len));
    }
    result.loss = loss_sum / count;
    result.token_accuracy = static_cast<double>(correct) / count;
    result.tokens = count;
  }
  if (!data.tasks.empty()) {
    double sum = 0;
    for (const TaskExamples& task : data.tasks) {
      ASSIGN_OR_RETURN(ExactMatchResult em,
                       EvaluateExactMatch(model, overlay, task.examples, *tokenizer, data.max_new_tokens));
      result.task_exact_match.push_back(em.accuracy);
      sum += em.accuracy;
    }
    result.mean_task_exact_match = sum / data.tasks.size();
  }
  return result;
}

GeneralAbilityChange CompareGeneralAbility(const GeneralAbility& before, const GeneralAbility& after) {
  GeneralAbilityChange c;
  c.loss_before = before.loss;
  c.loss_after = after.loss;
  c.relative_loss_increase = before.loss > 0 ? (after.loss - before.loss) / before.loss : 0.0;
  c.token_accuracy_change = after.token_accuracy - before.token_accuracy;
  if (!before.task_exact_match.empty() && !after.task_exact_match.empty()) {
    c.task_exact_match_change = after.mean_task_exact_match - before.mean_task_exact_match;
  }
  return c;
}

}  // namespace tessera::train
