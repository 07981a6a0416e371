// tessera-pretrain: makes the builtin:tiny backbone (config.json + model.safetensors) by pretraining
// on the synthetic general corpus. See pretrain.h for what it trains on; the shipped checkpoint in
// ops/backbones/builtin-tiny was made by this command (its README gives the exact invocation).
//
//   tessera-pretrain --out DIR [--steps N] [--max-seconds S] [--seed N] [--batch N] [--lr X] [--f32]
//                    [--threads N]
// Weights are stored as bf16 unless --f32. --threads: the compute thread budget (core/util/thread_budget.h).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/backend/backend.h"
#include "core/data/corpus.h"
#include "core/data/rng.h"
#include "core/io/file_util.h"
#include "core/model/model.h"
#include "core/tokenizer/byte_tokenizer.h"
#include "core/train/backbone.h"
#include "core/train/exact_match.h"
#include "core/train/pretrain.h"
#include "core/util/parallel.h"
#include "core/util/thread_budget.h"

namespace {

int Usage() {
  std::fprintf(stderr,
               "usage: tessera-pretrain --out DIR [--steps N] [--max-seconds S] [--seed N] "
               "[--batch N] [--lr X] [--docs N] [--f32] [--threads N]\n");
  return 2;
}

// Probes of the skills the tenant tasks build on: the corpus' own copy/upper/shift transformations
// of unseen five-letter strings.
std::vector<tessera::data::Example> WordProbes() {
  tessera::data::Rng rng(99);
  std::vector<tessera::data::Example> out;
  const char* ops[] = {"copy", "upper", "shift"};
  for (int i = 0; i < 60; ++i) {
    std::string w = tessera::data::RandomLetters(rng, 5), r = w;
    const char* op = ops[i % 3];
    for (char& c : r) {
      if (i % 3 == 1) c = static_cast<char>(c - 'a' + 'A');
      if (i % 3 == 2) c = static_cast<char>('a' + (c - 'a' + 1) % 26);
    }
    out.push_back({absl::StrCat(op, "(", w, ")="), r});
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  tessera::train::PretrainOptions opt = tessera::train::DefaultPretrainOptions();
  std::string out_dir;
  bool f32 = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    bool ok = true;
    if (a == "--out") out_dir = next();
    else if (a == "--steps") ok = absl::SimpleAtoi(next(), &opt.trainer.max_steps);
    else if (a == "--max-seconds") ok = absl::SimpleAtod(next(), &opt.max_seconds);
    else if (a == "--seed") ok = absl::SimpleAtoi(next(), &opt.init_seed);
    else if (a == "--batch") ok = absl::SimpleAtoi(next(), &opt.trainer.batch_size);
    else if (a == "--lr") ok = absl::SimpleAtod(next(), &opt.trainer.learning_rate);
    else if (a == "--docs") ok = absl::SimpleAtoi(next(), &opt.num_docs);
    else if (a == "--f32") f32 = true;
    else if (a == "--threads") {
      int n = 0;
      ok = absl::SimpleAtoi(next(), &n) && tessera::SetThreadBudget(n).ok();
    } else return Usage();
    if (!ok) return Usage();
  }
  if (out_dir.empty()) return Usage();
  auto backend = tessera::MakeCpuBackend();
  std::printf("tessera-pretrain: builtin:tiny, %lld parameters, %s threads, %lld steps x %lld docs\n",
              static_cast<long long>(opt.config.NumParameters()), tessera::ThreadBudgetString().c_str(),
              static_cast<long long>(opt.trainer.max_steps),
              static_cast<long long>(opt.trainer.batch_size));
  const auto start = std::chrono::steady_clock::now();
  auto result = tessera::train::Pretrain(opt, backend.get(), [](const tessera::train::TrainProgress& p) {
    if (p.step % 50 == 0 || !std::isnan(p.val_loss)) {
      std::printf("step %5lld/%lld  loss %.4f  val %.4f  lr %.2e  |g| %.2f  %.0f tok/s  eta %.0fs\n",
                  static_cast<long long>(p.step), static_cast<long long>(p.max_steps), p.loss,
                  p.val_loss, p.learning_rate, p.grad_norm, p.tokens_per_second, p.eta_seconds);
      std::fflush(stdout);
    }
  });
  if (!result.ok()) {
    std::fprintf(stderr, "tessera-pretrain: %s\n", result.status().ToString().c_str());
    return 1;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  auto st = tessera::train::SaveBackbone(
      opt.config, result->weights, backend.get(), out_dir,
      {{"format", "pt"},
       {"tessera_made_by", "tessera-pretrain"},
       {"tessera_steps", absl::StrCat(result->train.steps)},
       {"tessera_init_seed", absl::StrCat(opt.init_seed)},
       {"tessera_corpus_seed", absl::StrCat(opt.corpus_seed)},
       {"tessera_final_train_loss", absl::StrCat(result->train.final_train_loss)},
       {"tessera_final_val_loss", absl::StrCat(result->train.final_val_loss)}},
      /*bf16=*/!f32);
  if (!st.ok()) {
    std::fprintf(stderr, "tessera-pretrain: %s\n", st.ToString().c_str());
    return 1;
  }
  // Probe what was written (bf16-rounded weights), not the in-memory f32 ones.
  double probe_acc = -1.0;
  auto loaded = tessera::train::LoadBackbone(out_dir, backend.get());
  if (loaded.ok()) {
    auto model = tessera::Model::Create(loaded->config, loaded->weights, backend.get());
    tessera::ByteTokenizer tok;
    if (model.ok()) {
      auto em = tessera::train::EvaluateExactMatch(**model, nullptr, WordProbes(), tok, 8);
      if (em.ok()) probe_acc = em->accuracy;
    }
  }
  std::printf("done: %lld steps in %.1fs, final train loss %.4f, val loss %.4f, word-probe exact "
              "match %.2f -> %s\n",
              static_cast<long long>(result->train.steps), seconds, result->train.final_train_loss,
              result->train.final_val_loss, probe_acc, out_dir.c_str());
  return 0;
}
