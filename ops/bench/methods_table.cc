#include "ops/bench/methods_table.h"

#include <algorithm>
#include <initializer_list>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <unistd.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/data/jsonl_dataset.h"
#include "core/data/tasks.h"
#include "core/model/model.h"
#include "core/tokenizer/byte_tokenizer.h"
#include "core/train/auto_hparams.h"
#include "core/train/backbone.h"
#include "core/train/exact_match.h"
#include "core/train/expert_selection.h"
#include "core/train/finetune.h"
#include "core/train/general_ability.h"
#include "core/train/lora_finetune.h"
#include "core/train/model_trainable.h"
#include "core/util/parallel.h"
#include "ops/bench/bench_check.h"
#include "ops/bench/decode_budget.h"

namespace tessera::bench {
namespace {

using namespace tessera::train;  // NOLINT

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int64_t SavedBytes(Model& m, const ModelConfig& c) {
  // The process id keeps concurrent runs (one per core) from sharing the file.
  const std::string path = (std::filesystem::temp_directory_path() /
                            absl::StrCat("bench_methods_table_full.", getpid(), ".safetensors"))
                               .string();
  auto st = m.weights().Save(c, m.backend(), path);
  if (!st.ok()) Die("saving the model", st);
  const int64_t bytes = static_cast<int64_t>(std::filesystem::file_size(path));
  std::filesystem::remove(path);
  return bytes;
}

struct Row {
  std::string task, method;
  double em_before = 0, em_after = 0, val_loss = 0, base_val_loss = 0, seconds = 0;
  int64_t steps = 0, best_step = 0, params = 0, bytes = 0, slots = 0;
  bool plateau = false;
  GeneralAbilityChange general;
  double skills_before = 0, skills_after = 0, other_before = 0, other_after = 0;
};

}  // namespace

int RunMethodsTable(int argc, char** argv) {
  std::vector<std::string> tasks = data::Task::Names();
  std::vector<std::string> methods = {"esft_gate", "esft_token", "full", "lora"};
  int64_t n_train = 1000, n_val = 200, n_test = 200, general_docs = 256, skill_n = 40, other_n = 40;
  uint64_t secret = 1234;
  int64_t max_slots = 0;  // cap on an ESFT selection (SelectionOptions::max_experts); 0: none
  double full_lr = 1e-3, p_gate = DefaultThreshold(RelevanceScore::kGate),
         p_token = DefaultThreshold(RelevanceScore::kToken);
  LoraOptions lora;
  HparamRequest req;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string v = i + 1 < argc ? argv[++i] : "";
    bool ok = true;
    int64_t iv = 0;
    double dv = 0;
    if (a == "--tasks") tasks = absl::StrSplit(v, ',');
    else if (a == "--methods") methods = absl::StrSplit(v, ',');
    else if (a == "--train") ok = absl::SimpleAtoi(v, &n_train);
    else if (a == "--val") ok = absl::SimpleAtoi(v, &n_val);
    else if (a == "--test") ok = absl::SimpleAtoi(v, &n_test);
    else if (a == "--secret") ok = absl::SimpleAtoi(v, &secret);
    else if (a == "--steps" && (ok = absl::SimpleAtoi(v, &iv))) req.max_steps = iv;
    else if (a == "--lr" && (ok = absl::SimpleAtod(v, &dv))) req.learning_rate = dv;
    else if (a == "--full-lr") ok = absl::SimpleAtod(v, &full_lr);
    else if (a == "--p-gate") ok = absl::SimpleAtod(v, &p_gate);
    else if (a == "--p-token") ok = absl::SimpleAtod(v, &p_token);
    else if (a == "--max-slots") ok = absl::SimpleAtoi(v, &max_slots);
    else if (a == "--lora-rank") ok = absl::SimpleAtoi(v, &lora.rank);
    else if (a == "--lora-alpha") ok = absl::SimpleAtod(v, &lora.alpha);
    else if (a == "--general-docs") ok = absl::SimpleAtoi(v, &general_docs);
    else if (a == "--skill-n") ok = absl::SimpleAtoi(v, &skill_n);
    else if (a == "--other-n") ok = absl::SimpleAtoi(v, &other_n);
    else ok = false;
    if (!ok) {
      std::fprintf(stderr, "bench_finetune --methods-table: bad argument %s\n", a.c_str());
      return 2;
    }
  }
  for (const std::string& m : methods) {
    if (m != "esft_gate" && m != "esft_token" && m != "auto" && m != "full" && m != "lora") {
      std::fprintf(stderr, "bench_finetune --methods-table: unknown method %s (esft_gate, esft_token, auto, full, lora)\n",
                   m.c_str());
      return 2;
    }
  }
  auto be = MakeCpuBackend();
  ByteTokenizer tok;
  Backbone bb = Must(LoadBackbone("builtin:tiny", be.get()), "loading the backbone");
  const ModelConfig& c = bb.config;
  auto model = Must(Model::Create(c, bb.weights, be.get()), "model");
  const int64_t model_bytes = SavedBytes(*model, c);

  // General ability: the pretraining mixture (held out), its skills, and every task of the run.
  GeneralAbilityData general;
  general.text = PretrainingMixtureHeldOut(tok, general_docs);
  general.seq_len = 128;
  general.tasks = PretrainingSkillTasks(skill_n);
  const size_t n_skills = general.tasks.size();
  std::map<std::string, data::TaskSplits> splits;
  for (const std::string& name : tasks) {
    data::Task task = Must(data::Task::Create(name, secret), "task");
    splits[name] = task.Splits(n_train, n_val, n_test);
    std::vector<data::Example> other(splits[name].test.begin(),
                                     splits[name].test.begin() + std::min<int64_t>(other_n, n_test));
    general.tasks.push_back({name, std::move(other)});
  }
  // Mean exact match over the skills, and over the run's tasks other than `self`.
  auto skills_mean = [&](const GeneralAbility& g) {
    double s = 0;
    for (size_t i = 0; i < n_skills; ++i) s += g.task_exact_match[i];
    return s / n_skills;
  };
  auto others_mean = [&](const GeneralAbility& g, const std::string& self) {
    double s = 0;
    int n = 0;
    for (size_t i = n_skills; i < general.tasks.size(); ++i) {
      if (general.tasks[i].name == self) continue;
      s += g.task_exact_match[i];
      ++n;
    }
    return n ? s / n : 0.0;
  };
  std::printf("methods table on builtin:tiny (%lld parameters, %lld expert slots, model %lld bytes f32), "
              "%lld/%lld/%lld train/val/test, %d threads; methods %s\n",
              static_cast<long long>(c.NumParameters()), static_cast<long long>(c.num_layers * c.num_experts),
              static_cast<long long>(model_bytes), static_cast<long long>(n_train),
              static_cast<long long>(n_val), static_cast<long long>(n_test), NumThreads(),
              absl::StrJoin(methods, ",").c_str());
  const GeneralAbility base_general =
      Must(EvaluateGeneralAbility(*model, nullptr, general, &tok), "base general ability");
  std::printf("base general ability: mixture loss %.4f token acc %.4f (%lld tokens), skills em %.3f\n",
              base_general.loss, base_general.token_accuracy, static_cast<long long>(base_general.tokens),
              skills_mean(base_general));
  std::printf("| task | method | EM before -> after | best val loss (base) | steps | wall s | trainable params "
              "| version bytes (%% model) | general loss change | token acc change | skills EM | other tasks EM |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::fflush(stdout);

  std::vector<Row> rows;
  for (const std::string& name : tasks) {
    const data::TaskSplits& sp = splits[name];
    std::vector<data::TokenizedExample> train, val;
    AutoDataStats stats;
    for (const auto& e : sp.train) {
      train.push_back(data::TokenizePromptCompletion(e.prompt, e.completion, tok));
      stats.tokens += static_cast<int64_t>(train.back().tokens.size());
      // The completion length enters the rule's epochs, as for a job (and the suite).
      for (uint8_t m : train.back().loss_mask) stats.loss_tokens += m != 0;
    }
    stats.examples = static_cast<int64_t>(train.size());
    for (const auto& e : sp.validation) val.push_back(data::TokenizePromptCompletion(e.prompt, e.completion, tok));
    const ResolvedHparams h = ResolveHparams(stats, {c.hidden_size, c.num_layers, c.num_experts, c.top_k}, req);
    TrainerOptions to;
    to.max_steps = h.max_steps;
    to.batch_size = h.batch_size;
    to.seq_len = 128;
    to.learning_rate = h.learning_rate;
    to.warmup_steps = h.warmup_steps;
    to.seed = 0;
    to.eval_every = h.eval_every;
    to.eval_max_examples = 256;
    to.early_stopping_patience = h.early_stopping_patience;
    to.early_stopping_min_delta = h.early_stopping_min_delta_ratio;
    to.restore_best = true;
    const int max_new = DecodeBudget(sp.test, tok);
    const double em_before = Must(EvaluateExactMatch(*model, nullptr, sp.test, tok, max_new), "base em").accuracy;
    // ESFT's selections on the task's data (expert_selection.h: the per-layer cumulative score rule), each
    // computed only when a requested method trains its slots (a selection is a forward over the data).
    auto wanted = [&](std::initializer_list<const char*> users) {
      return std::any_of(users.begin(), users.end(),
                         [&](const char* m) { return std::find(methods.begin(), methods.end(), m) != methods.end(); });
    };
    auto select = [&](RelevanceScore score, double p) {
      SelectionOptions so;
      so.score = score;
      so.threshold = p;
      so.max_experts = max_slots;
      return Must(SelectExpertsAuto(*model, train, so), "expert selection").slots;
    };
    const std::vector<SlotId> gate_slots =
        wanted({"esft_gate"}) ? select(RelevanceScore::kGate, p_gate) : std::vector<SlotId>{};
    const std::vector<SlotId> token_slots =
        wanted({"esft_token", "lora"}) ? select(RelevanceScore::kToken, p_token) : std::vector<SlotId>{};
    // What a job with every hyperparameter auto trains: the service's mixed score at the rule's p and
    // expert budget (auto_hparams.h), as the suite runs it.
    std::vector<SlotId> auto_slots;
    if (wanted({"auto"})) {
      SelectionOptions auto_selection;
      auto_selection.threshold = h.relevance_threshold;
      auto_selection.max_experts = h.max_experts;
      auto_slots = Must(SelectExpertsAuto(*model, train, auto_selection), "expert selection").slots;
    }

    for (const std::string& method : methods) {
      Row r;
      r.task = name;
      r.method = method;
      r.em_before = em_before;
      GeneralAbility after;
      if (method == "full") {
        auto copy = Must(model->weights().Clone(c, be.get()), "clone");
        auto full_model = Must(Model::Create(c, copy, be.get()), "full model");
        auto trainable = Must(ModelTrainable::ForAllParameters(full_model.get()), "full trainable");
        TrainerOptions fo = to;
        fo.learning_rate = full_lr;
        const double t0 = Now();
        auto trainer = Must(Trainer::Create(trainable.get(), train, val, fo), "full trainer");
        auto res = Must(trainer->Run(), "full training");
        r.seconds = Now() - t0;
        r.val_loss = res.final_val_loss;
        r.base_val_loss = res.initial_val_loss;
        r.steps = res.steps;
        r.best_step = res.best_step;
        r.plateau = res.stopped_early;
        r.params = res.trainable_parameters;
        r.bytes = SavedBytes(*full_model, c);
        r.slots = c.num_layers * c.num_experts;
        r.em_after = Must(EvaluateExactMatch(*full_model, nullptr, sp.test, tok, max_new), "em").accuracy;
        after = Must(EvaluateGeneralAbility(*full_model, nullptr, general, &tok), "general ability");
      } else {
        FineTuneOptions o;
        o.trainer = to;
        o.auto_select = false;
        o.explicit_slots = method == "esft_gate" ? gate_slots : method == "auto" ? auto_slots : token_slots;
        const double t0 = Now();
        FineTuneResult ft;
        if (method == "lora") {
          // LoRA on ESFT-Token's slots: the same slots as esft_token, low-rank deltas instead of the
          // slots' full weights. ft.overlay is the merged version (what serving runs).
          ft = Must(FineTuneLora(*model, bb.sha256, train, val, o, lora), name.c_str()).result;
        } else {
          ft = Must(FineTuneExperts(*model, bb.sha256, train, val, o), name.c_str());
        }
        r.seconds = Now() - t0;
        r.val_loss = ft.train.final_val_loss;
        r.base_val_loss = ft.train.initial_val_loss;
        r.steps = ft.train.steps;
        r.best_step = ft.train.best_step;
        r.plateau = ft.train.stopped_early;
        r.params = ft.trainable_parameters;
        r.bytes = static_cast<int64_t>(ft.artifact.size());
        r.slots = static_cast<int64_t>(ft.trained_slots.size());
        r.em_after = Must(EvaluateExactMatch(*model, ft.overlay.get(), sp.test, tok, max_new), "em").accuracy;
        after = Must(EvaluateGeneralAbility(*model, ft.overlay.get(), general, &tok), "general ability");
      }
      r.general = CompareGeneralAbility(base_general, after);
      r.skills_before = skills_mean(base_general);
      r.skills_after = skills_mean(after);
      r.other_before = others_mean(base_general, name);
      r.other_after = others_mean(after, name);
      std::printf("| %s | %s | %.3f -> %.3f | %.4f (%.2f) | %lld%s, best %lld | %.1f | %lld (%lld slots) | "
                  "%lld (%.1f%%) | %+.2f%% (%.4f -> %.4f) | %+.4f | %.3f -> %.3f | %.3f -> %.3f |\n",
                  name.c_str(), method.c_str(), r.em_before, r.em_after, r.val_loss, r.base_val_loss,
                  static_cast<long long>(r.steps), r.plateau ? " plateau" : "",
                  static_cast<long long>(r.best_step), r.seconds, static_cast<long long>(r.params),
                  static_cast<long long>(r.slots), static_cast<long long>(r.bytes),
                  100.0 * r.bytes / model_bytes, 100.0 * r.general.relative_loss_increase,
                  r.general.loss_before, r.general.loss_after, r.general.token_accuracy_change,
                  r.skills_before, r.skills_after, r.other_before, r.other_after);
      std::fflush(stdout);
      rows.push_back(r);
    }
  }

  // The goal, per task and ESFT method, against full fine-tuning of the same task.
  std::printf("\ngoal: ESFT gain >= 95%% of full FT's, smaller general-loss increase, <= 15%% of the model's bytes\n");
  std::map<std::string, int> meets;
  for (const std::string& name : tasks) {
    const Row* full = nullptr;
    for (const Row& r : rows) {
      if (r.task == name && r.method == "full") full = &r;
    }
    for (const Row& r : rows) {
      if (r.task != name || r.method.rfind("esft", 0) != 0) continue;
      if (full == nullptr) {
        std::printf("%-13s %-10s (no full fine-tuning row to compare with)\n", name.c_str(), r.method.c_str());
        continue;
      }
      const double gain = r.em_after - r.em_before, full_gain = full->em_after - full->em_before;
      const double ratio = full_gain > 0 ? gain / full_gain : (gain >= 0 ? 1.0 : 0.0);
      const bool gain_ok = gain >= 0.95 * full_gain;
      const bool general_ok = r.general.relative_loss_increase < full->general.relative_loss_increase;
      const double pct = 100.0 * r.bytes / model_bytes;
      const bool bytes_ok = pct <= 15.0;
      const bool ok = gain_ok && general_ok && bytes_ok;
      meets[r.method] += ok;
      std::printf("%-13s %-10s gain %.3f vs full %.3f (%.0f%%) %s | general loss %+.2f%% vs full %+.2f%% %s | "
                  "bytes %.1f%% %s | %s\n",
                  name.c_str(), r.method.c_str(), gain, full_gain, 100 * ratio, gain_ok ? "ok" : "MISS",
                  100 * r.general.relative_loss_increase, 100 * full->general.relative_loss_increase,
                  general_ok ? "ok" : "MISS", pct, bytes_ok ? "ok" : "MISS", ok ? "meets" : "misses");
    }
  }
  // LoRA against ESFT-Token on the same slots: bytes saved, exact match and general ability.
  for (const Row& l : rows) {
    if (l.method != "lora") continue;
    for (const Row& t : rows) {
      if (t.task != l.task || t.method != "esft_token") continue;
      std::printf("%-13s lora vs esft_token (same %lld slots): bytes %.1f%% vs %.1f%% | EM %.3f vs %.3f | "
                  "general loss %+.2f%% vs %+.2f%%\n",
                  l.task.c_str(), static_cast<long long>(l.slots), 100.0 * l.bytes / model_bytes,
                  100.0 * t.bytes / model_bytes, l.em_after, t.em_after, 100 * l.general.relative_loss_increase,
                  100 * t.general.relative_loss_increase);
    }
  }
  std::printf("methods_table tasks=%zu esft_gate_meets=%d esft_token_meets=%d\n", tasks.size(), meets["esft_gate"],
              meets["esft_token"]);
  return 0;
}

}  // namespace tessera::bench
