// bench_finetune: fine-tuning quality on the builtin:tiny backbone.
//
// Default (the task suite at the service's defaults): every task of core/data/tasks.h (or --tasks
// a,b,...), train/validation/test splits from Task::Splits, hyperparameters from ResolveHparams
// (auto_hparams.h) with nothing set, exactly as a job without hyperparameters runs (auto expert
// selection, early stopping, the best checkpoint kept). Per task: exact match on the test split
// before/after (greedy), best validation loss, steps run (and whether a plateau stopped it), wall
// time, trainable parameters, stored version bytes, slots. Held-out tasks (Task::HeldOutNames) are
// marked "*". Last line: suite tasks=<n> ge_0.8=<k> mean_em=<x> heldout_mean_em=<x>.
//   bench_finetune [--tasks a,b] [--train N] [--val N] [--test N] [--secret N]
//                  [--steps N] [--batch N] [--lr X] [--threshold P] [--max-experts N]  (override auto)
//                  [--score mixed|gate|token]  (the relevance score of expert selection, default mixed)
//
// --methods: the tenant task "cipher" fine-tuned three ways with the same data, steps and schedule:
//   esft   expert-only, slots chosen by ESFT auto selection (capped at 25% of the slots)
//   random expert-only, the same number of slots drawn at random
//   full   every parameter (on a copy of the backbone)
// For each: exact match on held-out examples (greedy), validation loss, trainable parameters, bytes
// of the stored result (the overlay artifact, or the whole model.safetensors for full), bytes of
// gradient + AdamW state (frozen weights have none, so this grows with the trainable set), wall time.
// Then checks that the backbone and another tenant's overlay give bitwise-identical logits to before.
//
//   bench_finetune --methods [--backbone ...] [--steps N] [--batch N] [--lr X] [--full-lr X]
//                  [--threshold P] [--max-experts N] [--train N] [--eval N] [--secret N]
//                  [--task NAME]  (another task of tasks.h instead of cipher)
// Last line: esft_acc=<x> random_acc=<x> full_acc=<x> esft_bytes=<n> full_bytes=<n> base_unchanged=<b>
//
// --methods-table: ESFT-Gate / ESFT-Token / full fine-tuning per task with the general-ability change
// (ops/bench/methods_table.h).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <unistd.h>

#include "core/backend/cpu/cpu_kernel_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/data/jsonl_dataset.h"
#include "core/data/tasks.h"
#include "core/model/model.h"
#include "core/tokenizer/byte_tokenizer.h"
#include "absl/strings/str_split.h"
#include "core/train/artifact.h"
#include "core/train/auto_hparams.h"
#include "core/train/backbone.h"
#include "core/train/exact_match.h"
#include "core/train/finetune.h"
#include "core/train/model_trainable.h"
#include "core/util/parallel.h"
#include "ops/bench/bench_check.h"
#include "ops/bench/decode_budget.h"
#include "ops/bench/methods_table.h"

namespace {

using namespace tessera;         // NOLINT
using namespace tessera::train;  // NOLINT

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

using bench::Die;
using bench::Must;

std::vector<float> Logits(const Model& m, const ExpertOverlay* overlay) {
  std::vector<int32_t> toks = {256};
  for (char c : std::string("secret(hello)=qwert upper(abcde)=ABCDE 17+25=42")) toks.push_back(
      static_cast<unsigned char>(c));
  SequenceInput in{absl::MakeConstSpan(toks), overlay, nullptr};
  ForwardOptions o;
  o.logits = LogitsMode::kAll;
  auto r = Must(m.Forward({&in, 1}, o), "probe forward");
  return Must(m.backend()->ToHostF32(r.logits), "probe logits");
}

struct RunReport {
  const char* name;
  double acc = 0, val_loss = 0, seconds = 0;
  int64_t params = 0, bytes = 0, slots = 0, opt_bytes = 0;
};

void Print(const RunReport& r) {
  std::printf("%-7s exact_match=%.3f val_loss=%.4f trainable_params=%lld slots=%lld stored_bytes=%lld "
              "grad+adam_bytes=%lld wall_s=%.1f\n",
              r.name, r.acc, r.val_loss, static_cast<long long>(r.params),
              static_cast<long long>(r.slots), static_cast<long long>(r.bytes),
              static_cast<long long>(r.opt_bytes), r.seconds);
  std::fflush(stdout);
}

int RunSuite(int argc, char** argv) {
  std::vector<std::string> tasks = data::Task::Names();
  int64_t n_train = 1000, n_val = 200, n_test = 200;
  uint64_t secret = 1234;
  HparamRequest req;
  RelevanceScore score = RelevanceScore::kMixed;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string v = i + 1 < argc ? argv[++i] : "";
    bool ok = true;
    int64_t iv = 0;
    double dv = 0;
    if (a == "--tasks") tasks = absl::StrSplit(v, ',');
    else if (a == "--train") ok = absl::SimpleAtoi(v, &n_train);
    else if (a == "--val") ok = absl::SimpleAtoi(v, &n_val);
    else if (a == "--test") ok = absl::SimpleAtoi(v, &n_test);
    else if (a == "--secret") ok = absl::SimpleAtoi(v, &secret);
    else if (a == "--steps" && (ok = absl::SimpleAtoi(v, &iv))) req.max_steps = iv;
    else if (a == "--batch" && (ok = absl::SimpleAtoi(v, &iv))) req.batch_size = iv;
    else if (a == "--lr" && (ok = absl::SimpleAtod(v, &dv))) req.learning_rate = dv;
    else if (a == "--threshold" && (ok = absl::SimpleAtod(v, &dv))) req.relevance_threshold = dv;
    else if (a == "--max-experts" && (ok = absl::SimpleAtoi(v, &iv))) req.max_experts = iv;
    else if (a == "--score") {
      auto s = ParseRelevanceScore(v);
      if ((ok = s.ok())) score = *s;
    } else ok = false;
    if (!ok) {
      std::fprintf(stderr, "bench_finetune: bad argument %s\n", a.c_str());
      return 2;
    }
  }
  auto be = MakeCpuBackend();
  std::printf("cpu: %s\nkernels: %s\n", cpu::CpuFeaturesString().c_str(), cpu::CpuKernelSetString().c_str());
  ByteTokenizer tok;
  Backbone bb = Must(LoadBackbone("builtin:tiny", be.get()), "loading the backbone");
  const ModelConfig& c = bb.config;
  auto model = Must(Model::Create(c, bb.weights, be.get()), "model");
  std::printf("suite on builtin:tiny (%lld expert slots), %lld/%lld/%lld train/val/test, %d threads\n",
              static_cast<long long>(c.num_layers * c.num_experts), static_cast<long long>(n_train),
              static_cast<long long>(n_val), static_cast<long long>(n_test), NumThreads());
  const std::vector<std::string> held_out = data::Task::HeldOutNames();
  int ge = 0, n_heldout = 0;
  double sum_em = 0, sum_heldout = 0;
  for (const std::string& name : tasks) {
    data::Task task = Must(data::Task::Create(name, secret), "task");
    data::TaskSplits sp = task.Splits(n_train, n_val, n_test);
    std::vector<data::TokenizedExample> train, val;
    AutoDataStats stats;
    for (const auto& e : sp.train) {
      train.push_back(data::TokenizePromptCompletion(e.prompt, e.completion, tok));
      stats.tokens += static_cast<int64_t>(train.back().tokens.size());
      for (uint8_t m : train.back().loss_mask) stats.loss_tokens += m != 0;
    }
    stats.examples = static_cast<int64_t>(train.size());
    for (const auto& e : sp.validation) val.push_back(data::TokenizePromptCompletion(e.prompt, e.completion, tok));
    const ResolvedHparams h =
        ResolveHparams(stats, {c.hidden_size, c.num_layers, c.num_experts, c.top_k}, req);
    FineTuneOptions o;
    o.trainer.max_steps = h.max_steps;
    o.trainer.batch_size = h.batch_size;
    o.trainer.seq_len = 128;
    o.trainer.learning_rate = h.learning_rate;
    o.trainer.warmup_steps = h.warmup_steps;
    o.trainer.seed = 0;
    o.trainer.eval_every = h.eval_every;
    o.trainer.eval_max_examples = 256;
    o.trainer.early_stopping_patience = h.early_stopping_patience;
    o.trainer.early_stopping_min_delta = h.early_stopping_min_delta_ratio;
    o.trainer.restore_best = true;
    o.selection.score = score;
    o.selection.threshold = h.relevance_threshold;
    o.selection.max_experts = h.max_experts;
    const int max_new = bench::DecodeBudget(sp.test, tok);
    auto before = Must(EvaluateExactMatch(*model, nullptr, sp.test, tok, max_new), "base exact match");
    const double t0 = Now();
    auto ft = Must(FineTuneExperts(*model, bb.sha256, train, val, o), name.c_str());
    const double seconds = Now() - t0;
    auto after = Must(EvaluateExactMatch(*model, ft.overlay.get(), sp.test, tok, max_new), "exact match");
    // Exact match on (up to 200) training examples: far above the test's = memorized, not learned.
    const std::vector<data::Example> seen(sp.train.begin(),
                                          sp.train.begin() + std::min<size_t>(sp.train.size(), 200));
    auto on_train = Must(EvaluateExactMatch(*model, ft.overlay.get(), seen, tok, max_new), "train exact match");
    const bool is_held = std::find(held_out.begin(), held_out.end(), name) != held_out.end();
    std::printf("%-13s%s em_before=%.3f em_after=%.3f em_train=%.3f val_loss=%.4f (base %.4f) steps=%lld/%lld%s best_step=%lld "
                "wall_s=%.1f trainable_params=%lld version_bytes=%lld slots=%zu | auto: batch=%lld lr=%.4g "
                "warmup=%lld p=%.2f max_experts=%lld epochs=%.1f\n",
                name.c_str(), is_held ? "*" : " ", before.accuracy, after.accuracy, on_train.accuracy, ft.train.final_val_loss,
                ft.train.initial_val_loss, static_cast<long long>(ft.train.steps),
                static_cast<long long>(h.max_steps), ft.train.stopped_early ? " (plateau)" : "",
                static_cast<long long>(ft.train.best_step), seconds,
                static_cast<long long>(ft.trainable_parameters), static_cast<long long>(ft.artifact.size()),
                ft.trained_slots.size(), static_cast<long long>(h.batch_size), h.learning_rate,
                static_cast<long long>(h.warmup_steps), h.relevance_threshold,
                static_cast<long long>(h.max_experts), h.epochs);
    std::printf("              e.g. %s -> \"%s\" (want \"%s\")\n", sp.test[0].prompt.c_str(),
                after.outputs[0].c_str(), sp.test[0].completion.c_str());
    std::fflush(stdout);
    ge += after.accuracy >= 0.8;
    sum_em += after.accuracy;
    if (is_held) {
      ++n_heldout;
      sum_heldout += after.accuracy;
    }
  }
  std::printf("suite tasks=%zu ge_0.8=%d mean_em=%.3f heldout_mean_em=%.3f\n", tasks.size(), ge,
              tasks.empty() ? 0.0 : sum_em / tasks.size(), n_heldout ? sum_heldout / n_heldout : 0.0);
  return 0;
}

}  // namespace

constexpr char kUsage[] =
    "bench_finetune: fine-tuning quality on builtin:tiny (see the top of ops/bench/bench_finetune.cc)\n"
    "  bench_finetune [--tasks a,b] [--train N] [--val N] [--test N] [--secret N] [--steps N] [--batch N]\n"
    "                 [--lr X] [--threshold P] [--max-experts N] [--score mixed|gate|token]\n"
    "      the task suite at the service's auto hyperparameters (the flags override auto)\n"
    "  bench_finetune --methods [--backbone SPEC] [--task NAME] [--steps N] [--batch N] [--lr X] [--full-lr X]\n"
    "                 [--threshold P] [--max-experts N] [--train N] [--eval N] [--secret N]\n"
    "      ESFT vs random slots vs full fine-tuning on one task\n"
    "  bench_finetune --methods-table [--tasks a,b] [--methods esft_gate,esft_token,auto,full,lora] [--train N]\n"
    "                 [--val N] [--test N] [--secret N] [--steps N] [--lr X] [--full-lr X] [--p-gate P]\n"
    "                 [--p-token P] [--max-slots N] [--lora-rank N] [--lora-alpha X] [--general-docs N]\n"
    "                 [--skill-n N] [--other-n N]\n"
    "      ESFT's method table with the general-ability change (ops/bench/methods_table.h)\n";

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  // --methods-table: ops/bench/methods_table.h.
  if (argc >= 2 && std::string(argv[1]) == "--methods-table") return tessera::bench::RunMethodsTable(argc - 1, argv + 1);
  if (argc < 2 || std::string(argv[1]) != "--methods") return RunSuite(argc, argv);
  --argc;
  ++argv;
  std::string backbone_spec = "builtin:tiny";
  TrainerOptions topt;
  topt.max_steps = 300;
  topt.batch_size = 16;
  topt.seq_len = 64;
  topt.learning_rate = 1e-2;
  topt.warmup_steps = 20;
  topt.max_grad_norm = 1.0;
  topt.seed = 1;
  topt.eval_every = 100;
  topt.eval_max_examples = 128;
  double full_lr = 1e-3;
  SelectionOptions sel;
  sel.threshold = 0.3;
  sel.max_experts = -1;  // default: 25% of the slots
  int64_t n_train = 2000, n_eval = 200;
  uint64_t secret = 1234;
  std::string task_name = "cipher";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string v = i + 1 < argc ? argv[++i] : "";
    bool ok = true;
    if (a == "--backbone") backbone_spec = v;
    else if (a == "--task") task_name = v;
    else if (a == "--steps") ok = absl::SimpleAtoi(v, &topt.max_steps);
    else if (a == "--batch") ok = absl::SimpleAtoi(v, &topt.batch_size);
    else if (a == "--lr") ok = absl::SimpleAtod(v, &topt.learning_rate);
    else if (a == "--full-lr") ok = absl::SimpleAtod(v, &full_lr);
    else if (a == "--threshold") ok = absl::SimpleAtod(v, &sel.threshold);
    else if (a == "--max-experts") ok = absl::SimpleAtoi(v, &sel.max_experts);
    else if (a == "--train") ok = absl::SimpleAtoi(v, &n_train);
    else if (a == "--eval") ok = absl::SimpleAtoi(v, &n_eval);
    else if (a == "--secret") ok = absl::SimpleAtoi(v, &secret);
    else ok = false;
    if (!ok) {
      std::fprintf(stderr, "bench_finetune: bad argument %s\n", a.c_str());
      return 2;
    }
  }
  auto be = MakeCpuBackend();
  std::printf("cpu: %s\nkernels: %s\n", cpu::CpuFeaturesString().c_str(), cpu::CpuKernelSetString().c_str());
  ByteTokenizer tok;
  Backbone bb = Must(LoadBackbone(backbone_spec, be.get()), "loading the backbone");
  const ModelConfig& c = bb.config;
  const int64_t total_slots = c.num_layers * c.num_experts;
  if (sel.max_experts < 0) sel.max_experts = total_slots / 4;
  auto model = Must(Model::Create(c, bb.weights, be.get()), "model");
  std::printf("backbone %s (%s), %lld parameters, %lld expert slots, %d threads\n",
              backbone_spec.c_str(), bb.sha256.substr(0, 12).c_str(),
              static_cast<long long>(c.NumParameters()), static_cast<long long>(total_slots),
              NumThreads());

  data::Task task = Must(data::Task::Create(task_name, secret), "task");
  auto train_ex = task.Generate(1, n_train);
  auto eval_ex = task.Generate(2, n_eval);
  std::vector<data::TokenizedExample> train, val;
  for (const auto& e : train_ex) train.push_back(data::TokenizePromptCompletion(e.prompt, e.completion, tok));
  for (const auto& e : eval_ex) val.push_back(data::TokenizePromptCompletion(e.prompt, e.completion, tok));

  // Another tenant's overlay and the backbone's outputs, before any training.
  auto other = Must(ExpertOverlay::CopyOfBase(c, model->weights(), RandomSlots(c, 6, 77), be.get()),
                    "other tenant");
  for (const auto& [s, w] : other->slots()) (void)be->Scale(const_cast<Tensor&>(w.up), 1.25f);
  const auto base_before = Logits(*model, nullptr);
  const auto other_before = Logits(*model, other.get());

  auto base_em = Must(EvaluateExactMatch(*model, nullptr, eval_ex, tok, 8), "base exact match");
  std::printf("task %s (secret %llu): %lld train / %lld eval examples, e.g. %s%s\n",
              task_name.c_str(), static_cast<unsigned long long>(secret), static_cast<long long>(n_train),
              static_cast<long long>(n_eval), eval_ex[0].prompt.c_str(), eval_ex[0].completion.c_str());
  std::printf("base    exact_match=%.3f (e.g. base output \"%s\")\n", base_em.accuracy,
              base_em.outputs[0].c_str());

  auto expert_run = [&](const char* name, bool auto_select, std::vector<SlotId> slots) {
    RunReport r{name};
    FineTuneOptions o;
    o.trainer = topt;
    o.auto_select = auto_select;
    o.selection = sel;
    o.explicit_slots = std::move(slots);
    const double t0 = Now();
    auto ft = Must(FineTuneExperts(*model, bb.sha256, train, val, o), name);
    r.seconds = Now() - t0;
    auto em = Must(EvaluateExactMatch(*model, ft.overlay.get(), eval_ex, tok, 8), "exact match");
    r.acc = em.accuracy;
    r.val_loss = ft.train.final_val_loss;
    r.params = ft.trainable_parameters;
    r.opt_bytes = 4 * ft.trainable_parameters + ft.optimizer_state_bytes;  // gradients + m + v
    r.bytes = static_cast<int64_t>(ft.artifact.size());
    r.slots = static_cast<int64_t>(ft.trained_slots.size());
    Print(r);
    std::printf("        slots: %s\n", SlotListString(ft.trained_slots).c_str());
    return std::make_pair(r, ft.trained_slots);
  };
  auto [esft, esft_slots] = expert_run("esft", true, {});
  auto [random, random_slots] =
      expert_run("random", false, RandomSlots(c, static_cast<int64_t>(esft_slots.size()), 4242));

  // Full fine-tune on a copy of the backbone.
  RunReport full{"full"};
  {
    const double t0 = Now();
    auto copy = Must(model->weights().Clone(c, be.get()), "clone");
    auto full_model = Must(Model::Create(c, copy, be.get()), "full model");
    auto trainable = Must(ModelTrainable::ForAllParameters(full_model.get()), "full trainable");
    TrainerOptions fo = topt;
    fo.learning_rate = full_lr;
    auto trainer = Must(Trainer::Create(trainable.get(), train, val, fo), "full trainer");
    auto r = Must(trainer->Run(), "full training");
    full.seconds = Now() - t0;
    auto em = Must(EvaluateExactMatch(*full_model, nullptr, eval_ex, tok, 8), "exact match");
    full.acc = em.accuracy;
    full.val_loss = r.final_val_loss;
    full.params = r.trainable_parameters;
    full.opt_bytes = 4 * r.trainable_parameters + trainer->optimizer_state_bytes();
    full.slots = total_slots;
    const std::string path = (std::filesystem::temp_directory_path() /
                              absl::StrCat("bench_finetune_full.", getpid(), ".safetensors"))
                                 .string();
    auto st = full_model->weights().Save(c, be.get(), path);
    if (!st.ok()) Die("saving the full model", st);
    full.bytes = static_cast<int64_t>(std::filesystem::file_size(path));
    std::filesystem::remove(path);
    Print(full);
  }

  const bool base_unchanged =
      Logits(*model, nullptr) == base_before && Logits(*model, other.get()) == other_before;
  std::printf("base and other tenant bitwise unchanged: %s\n", base_unchanged ? "yes" : "NO");
  std::printf("esft_acc=%.3f random_acc=%.3f full_acc=%.3f esft_bytes=%lld full_bytes=%lld "
              "base_unchanged=%s\n",
              esft.acc, random.acc, full.acc, static_cast<long long>(esft.bytes),
              static_cast<long long>(full.bytes), base_unchanged ? "true" : "false");
  return 0;
}
