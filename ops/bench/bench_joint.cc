// bench_joint: several tenants' fine-tuning jobs trained together (core/train/joint_trainer.h) vs one
// after another, on builtin:tiny with the suite's tasks (core/data/tasks.h).
//
// Each job is a different tenant (task i of --tasks, secret + i) with its own data, expert selection
// (auto, done once before both arms so both train the same slots) and hyperparameters (auto_hparams.h,
// with --steps/--batch/--lr overriding as in bench_finetune), early stopping and the best checkpoint.
// Two arms, in this process, back to back (the machine is shared, so the two are timed under the same
// load; --joint-first swaps the order):
//   sequential  each job's Trainer over a ModelTrainable, one job after the other;
//   joint       every job's Trainer on its own thread over a JointMember of one JointGroup.
// Per job: steps, training tokens, exact match on its test split after each arm (greedy), and the largest
// difference between the two arms' trained weights (the arms agree up to float summation order: GEMMs
// over the pooled rows round differently from the solo ones, and Adam and top-k routing amplify that
// over many steps). Then the aggregate training tokens per second of each arm (training tokens of every
// job / the arm's wall time, validation included in the time), the same per CPU second of the process
// (on a shared, oversubscribed machine the wall time also counts waits to be scheduled), and the ratios,
// with the group's pass counts. Last line:
//   joint jobs=<n> seq_tok_s=<x> joint_tok_s=<x> speedup=<x> cpu_speedup=<x> em_match=<k>/<n>
//         max_em_diff=<x> max_weight_diff=<x>
//
//   bench_joint [--tasks a,b,c,d] [--train N] [--val N] [--test N] [--secret N]
//               [--steps N] [--batch N] [--lr X] [--joint-first]
#include <time.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
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
#include "core/train/joint_trainer.h"
#include "core/train/model_trainable.h"
#include "core/train/trainer.h"
#include "core/util/parallel.h"
#include "ops/bench/bench_check.h"

namespace {

using namespace tessera;         // NOLINT
using namespace tessera::train;  // NOLINT
using bench::Must;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CPU time of the whole process (every thread): on a shared, oversubscribed machine the wall time of the
// joint arm also counts the waits for its threads to be scheduled, which a dedicated machine has not.
double CpuNow() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

struct Job {
  std::string task;
  data::TaskSplits splits;
  std::vector<data::TokenizedExample> train, val;
  std::vector<SlotId> slots;
  TrainerOptions options;
};

struct ArmResult {
  std::shared_ptr<const ExpertOverlay> overlay;
  TrainResult result;
  absl::Status status;
};

// One job's training on `m` (its own Trainer, exactly as a job runs).
void Train(const Job& job, TrainableLm* m, ArmResult* out) {
  auto trainer = Trainer::Create(m, job.train, job.val, job.options);
  if (!trainer.ok()) {
    out->status = trainer.status();
    return;
  }
  auto r = (*trainer)->Run();
  out->status = r.status();
  if (r.ok()) out->result = *r;
}

std::vector<float> Weights(Backend* be, const ExpertOverlay& o) {
  std::vector<float> out;
  for (const auto& [s, w] : o.slots()) {
    for (const Tensor* t : {&w.gate, &w.up, &w.down}) {
      auto v = Must(be->ToHostF32(*t), "weights");
      out.insert(out.end(), v.begin(), v.end());
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> tasks = {"cipher", "classify", "facts", "rotrev"};
  int64_t n_train = 1000, n_val = 100, n_test = 100;
  uint64_t secret = 1234;
  HparamRequest req;
  req.max_steps = 100;  // the auto rule's 500+ steps per job, times 4 jobs and 2 arms, is too long for a bench
  bool joint_first = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--joint-first") {
      joint_first = true;
      continue;
    }
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
    else ok = false;
    if (!ok) {
      std::fprintf(stderr, "bench_joint: bad argument %s\n", a.c_str());
      return 2;
    }
  }
  auto be = MakeCpuBackend();
  ByteTokenizer tok;
  Backbone bb = Must(LoadBackbone("builtin:tiny", be.get()), "loading the backbone");
  const ModelConfig& c = bb.config;
  auto model = Must(Model::Create(c, bb.weights, be.get()), "model");

  std::vector<Job> jobs;
  for (size_t i = 0; i < tasks.size(); ++i) {
    Job job;
    job.task = tasks[i];
    data::Task task = Must(data::Task::Create(tasks[i], secret + i), "task");
    job.splits = task.Splits(n_train, n_val, n_test);
    AutoDataStats stats;
    for (const auto& e : job.splits.train) {
      job.train.push_back(data::TokenizePromptCompletion(e.prompt, e.completion, tok));
      stats.tokens += static_cast<int64_t>(job.train.back().tokens.size());
    }
    stats.examples = static_cast<int64_t>(job.train.size());
    for (const auto& e : job.splits.validation) {
      job.val.push_back(data::TokenizePromptCompletion(e.prompt, e.completion, tok));
    }
    const ResolvedHparams h = ResolveHparams(stats, {c.hidden_size, c.num_layers, c.num_experts, c.top_k}, req);
    job.options.max_steps = h.max_steps;
    job.options.batch_size = h.batch_size;
    job.options.seq_len = 128;
    job.options.learning_rate = h.learning_rate;
    job.options.warmup_steps = h.warmup_steps;
    job.options.seed = i;
    job.options.eval_every = h.eval_every;
    job.options.early_stopping_patience = h.early_stopping_patience;
    job.options.early_stopping_min_delta = h.early_stopping_min_delta_ratio;
    job.options.restore_best = true;
    SelectionOptions so;
    so.threshold = h.relevance_threshold;
    so.max_experts = h.max_experts;
    job.slots = Must(SelectExpertsAuto(*model, job.train, so), "selection").slots;
    std::printf("job %zu: %s (secret %llu) slots=%zu steps=%lld batch=%lld lr=%.4g eval_every=%lld\n", i,
                job.task.c_str(), static_cast<unsigned long long>(secret + i), job.slots.size(),
                static_cast<long long>(h.max_steps), static_cast<long long>(h.batch_size), h.learning_rate,
                static_cast<long long>(h.eval_every));
    jobs.push_back(std::move(job));
  }
  std::printf("builtin:tiny on the CPU backend, %d threads; arms run back to back in this process (%s first)\n",
              NumThreads(), joint_first ? "joint" : "sequential");
  std::fflush(stdout);

  std::vector<ArmResult> seq(jobs.size()), joint(jobs.size());
  double seq_s = 0, joint_s = 0, seq_cpu = 0, joint_cpu = 0;
  JointGroup::Stats stats;
  auto run_sequential = [&] {
    const double t0 = Now(), c0 = CpuNow();
    for (size_t i = 0; i < jobs.size(); ++i) {
      seq[i].overlay = Must(MakeTrainingOverlay(*model, jobs[i].slots, nullptr), "overlay");
      auto t = Must(ModelTrainable::ForExperts(model.get(), seq[i].overlay, jobs[i].slots), "trainable");
      Train(jobs[i], t.get(), &seq[i]);
    }
    seq_s = Now() - t0;
    seq_cpu = CpuNow() - c0;
  };
  auto run_joint = [&] {
    for (size_t i = 0; i < jobs.size(); ++i) {
      joint[i].overlay = Must(MakeTrainingOverlay(*model, jobs[i].slots, nullptr), "overlay");
    }
    auto group = JointGroup::Create(model.get());
    const double t0 = Now(), c0 = CpuNow();
    std::vector<std::thread> threads;
    for (size_t i = 0; i < jobs.size(); ++i) {
      threads.emplace_back([&, i] {
        auto m = group->Join();
        absl::Status s = m->SetTrainable(joint[i].overlay, jobs[i].slots);
        if (!s.ok()) {
          joint[i].status = s;
          return;
        }
        Train(jobs[i], m.get(), &joint[i]);
      });
    }
    for (auto& t : threads) t.join();
    joint_s = Now() - t0;
    joint_cpu = CpuNow() - c0;
    stats = group->stats();
  };
  if (joint_first) {
    run_joint();
    run_sequential();
  } else {
    run_sequential();
    run_joint();
  }

  int64_t tokens_seq = 0, tokens_joint = 0;
  int em_match = 0;
  double max_diff = 0, max_em_diff = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    if (!seq[i].status.ok()) bench::Die("sequential arm", seq[i].status);
    if (!joint[i].status.ok()) bench::Die("joint arm", joint[i].status);
    tokens_seq += seq[i].result.tokens;
    tokens_joint += joint[i].result.tokens;
    auto em_s = Must(EvaluateExactMatch(*model, seq[i].overlay.get(), jobs[i].splits.test, tok, 24), "em");
    auto em_j = Must(EvaluateExactMatch(*model, joint[i].overlay.get(), jobs[i].splits.test, tok, 24), "em");
    std::vector<float> ws = Weights(be.get(), *seq[i].overlay), wj = Weights(be.get(), *joint[i].overlay);
    double diff = 0;
    for (size_t k = 0; k < ws.size(); ++k) diff = std::max(diff, static_cast<double>(std::fabs(ws[k] - wj[k])));
    max_diff = std::max(max_diff, diff);
    em_match += em_s.correct == em_j.correct;
    max_em_diff = std::max(max_em_diff, std::fabs(em_s.accuracy - em_j.accuracy));
    std::printf("%-10s steps=%lld/%lld best_step=%lld tokens=%lld val_loss solo=%.4f joint=%.4f "
                "exact_match solo=%.3f joint=%.3f max_weight_diff=%.2g\n",
                jobs[i].task.c_str(), static_cast<long long>(joint[i].result.steps),
                static_cast<long long>(jobs[i].options.max_steps), static_cast<long long>(joint[i].result.best_step),
                static_cast<long long>(joint[i].result.tokens), seq[i].result.final_val_loss,
                joint[i].result.final_val_loss, em_s.accuracy, em_j.accuracy, diff);
  }
  const double seq_tps = tokens_seq / seq_s, joint_tps = tokens_joint / joint_s;
  const double seq_cps = tokens_seq / seq_cpu, joint_cps = tokens_joint / joint_cpu;
  std::printf("sequential wall_s=%.1f cpu_s=%.1f tokens=%lld tok_s=%.0f tok_per_cpu_s=%.0f | joint wall_s=%.1f "
              "cpu_s=%.1f tokens=%lld tok_s=%.0f tok_per_cpu_s=%.0f (rounds=%lld forward_passes=%lld "
              "backward_passes=%lld max_jobs_per_pass=%lld)\n",
              seq_s, seq_cpu, static_cast<long long>(tokens_seq), seq_tps, seq_cps, joint_s, joint_cpu,
              static_cast<long long>(tokens_joint), joint_tps, joint_cps, static_cast<long long>(stats.rounds),
              static_cast<long long>(stats.forward_passes), static_cast<long long>(stats.backward_passes),
              static_cast<long long>(stats.max_members_in_pass));
  std::printf("joint jobs=%zu seq_tok_s=%.0f joint_tok_s=%.0f speedup=%.2f cpu_speedup=%.2f em_match=%d/%zu "
              "max_em_diff=%.3f max_weight_diff=%.2g\n",
              jobs.size(), seq_tps, joint_tps, joint_tps / seq_tps, joint_cps / seq_cps, em_match, jobs.size(),
              max_em_diff, max_diff);
  return 0;
}
