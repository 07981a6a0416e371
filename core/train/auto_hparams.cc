#include "core/train/auto_hparams.h"

#include <algorithm>
#include <cmath>

namespace tessera::train {
namespace {

int64_t Pow2Floor(int64_t x) {
  int64_t p = 1;
  while (p * 2 <= x) p *= 2;
  return p;
}

}  // namespace

ResolvedHparams ResolveHparams(const AutoDataStats& data, const AutoModelShape& model,
                               const HparamRequest& r) {
  ResolvedHparams h;
  const int64_t n = std::max<int64_t>(data.examples, 1);
  const int64_t slots = std::max<int64_t>(model.num_layers * model.num_experts, 1);

  if (r.batch_size) {
    h.batch_size = *r.batch_size;
  } else {
    h.batch_size = std::clamp<int64_t>(Pow2Floor(std::max<int64_t>(n / 32, 1)), 4, 16);
    h.auto_fields.push_back("batch_size");
  }
  const double completion =
      data.loss_tokens > 0 ? static_cast<double>(data.loss_tokens) / static_cast<double>(n) : 8.0;
  h.epochs = 12.0 * std::clamp(completion / 8.0, 1.0, 3.0);
  if (r.max_steps) {
    h.max_steps = *r.max_steps;
  } else {
    const double steps = std::ceil(h.epochs * static_cast<double>(n) / static_cast<double>(h.batch_size));
    h.max_steps = static_cast<int64_t>(std::clamp(steps, 500.0, 3000.0));
    h.auto_fields.push_back("max_steps");
  }
  if (r.learning_rate) {
    h.learning_rate = *r.learning_rate;
  } else {
    const double width = model.hidden_size > 0 ? std::min(1.0, std::sqrt(192.0 / model.hidden_size)) : 1.0;
    h.learning_rate = kAutoBaseLearningRate * std::sqrt(static_cast<double>(h.batch_size) / 16.0) * width;
    h.auto_fields.push_back("learning_rate");
  }
  if (r.warmup_steps) {
    h.warmup_steps = *r.warmup_steps;
  } else {
    h.warmup_steps = (h.max_steps + 19) / 20;
    h.auto_fields.push_back("warmup_steps");
  }
  h.warmup_steps = std::min(h.warmup_steps, h.max_steps);
  if (r.relevance_threshold) {
    h.relevance_threshold = *r.relevance_threshold;
  } else {
    const double tokens = static_cast<double>(std::max<int64_t>(data.tokens, 1));
    h.relevance_threshold = std::clamp(0.4 + 0.1 * std::log2(tokens / 16384.0), 0.4, 0.9);
    h.auto_fields.push_back("relevance_threshold");
  }
  if (r.max_experts) {
    h.max_experts = *r.max_experts;
  } else {
    const int64_t budget = static_cast<int64_t>(std::ceil(h.relevance_threshold * slots / 2.0));
    h.max_experts = std::clamp<int64_t>(budget, std::min<int64_t>(model.num_layers, slots), slots);
    h.auto_fields.push_back("max_experts");
  }
  h.eval_every = std::clamp<int64_t>((h.max_steps + 24) / 25, 10, 100);
  h.early_stopping_patience = 5;
  h.early_stopping_min_delta_ratio = 1e-3;
  return h;
}

}  // namespace tessera::train
