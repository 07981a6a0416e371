#include "core/train/exact_match.h"

#include <algorithm>

#include "core/util/status_macros.h"

namespace tessera::train {

absl::StatusOr<ExactMatchResult> EvaluateExactMatch(const Model& model, const ExpertOverlay* overlay,
                                                    const std::vector<data::Example>& examples,
                                                    const Tokenizer& tokenizer, int max_new_tokens,
                                                    int batch_size) {
  Backend& be = *model.backend();
  const int64_t V = model.config().vocab_size;
  ExactMatchResult result;
  result.total = static_cast<int64_t>(examples.size());
  result.outputs.resize(examples.size());
  for (size_t begin = 0; begin < examples.size(); begin += batch_size) {
    const size_t end = std::min(examples.size(), begin + static_cast<size_t>(batch_size));
    std::vector<std::vector<int32_t>> seqs;
    std::vector<std::vector<int32_t>> generated(end - begin);
    std::vector<bool> done(end - begin, false);
    for (size_t i = begin; i < end; ++i) {
      std::vector<int32_t> s = {tokenizer.bos_id()};
      for (int32_t t : tokenizer.Encode(examples[i].prompt)) s.push_back(t);
      seqs.push_back(std::move(s));
    }
    for (int step = 0; step < max_new_tokens; ++step) {
      std::vector<size_t> active;
      std::vector<SequenceInput> batch;
      for (size_t j = 0; j < seqs.size(); ++j) {
        if (done[j]) continue;
        active.push_back(j);
        batch.push_back({absl::MakeConstSpan(seqs[j]), overlay, nullptr});
      }
      if (active.empty()) break;
      ForwardOptions opt;
      opt.logits = LogitsMode::kLast;
      ASSIGN_OR_RETURN(ForwardResult r, model.Forward(batch, opt));
      ASSIGN_OR_RETURN(std::vector<float> logits, be.ToHostF32(r.logits));
      for (size_t a = 0; a < active.size(); ++a) {
        const float* row = logits.data() + a * V;
        const int32_t next = static_cast<int32_t>(std::max_element(row, row + V) - row);
        const size_t j = active[a];
        if (next == tokenizer.eos_id()) {
          done[j] = true;
        } else {
          generated[j].push_back(next);
          seqs[j].push_back(next);
        }
      }
    }
    for (size_t j = 0; j < generated.size(); ++j) {
      std::string out = tokenizer.Decode(generated[j]);
      // Running out of tokens before EOS is a miss even if the text matches so far.
      const bool ok = done[j] && data::Task::IsCorrect(examples[begin + j], out);
      result.correct += ok;
      result.outputs[begin + j] = std::move(out);
    }
  }
  result.accuracy = result.total ? static_cast<double>(result.correct) / result.total : 0.0;
  return result;
}

}  // namespace tessera::train
