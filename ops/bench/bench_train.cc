// bench_train: expert-only training throughput and peak memory, Tessera vs PyTorch + transformers on
// the CPU, same model, same weights, same trainable slots, same batch and thread count.
//
// For builtin:tiny (the shipped checkpoint) and the 'small' config (random weights written once to a
// temporary checkpoint, bf16), ~10% of the expert slots (drawn with a fixed seed) are trainable. Each
// side runs in its own process (so peak RSS is its own): Tessera = this binary with --child (the
// Trainer over ModelTrainable::ForExperts, AdamW, loss on every token); the peer =
// ops/bench/torch_train_peer.py (transformers' model class from the same config.json, weights from
// the same model.safetensors, requires_grad only on the same slots, torch.optim.AdamW, the fastest
// experts implementation it offers on the CPU, which it names). One warm-up step, then --steps timed.
// The peer's Python comes from --python, $TESSERA_TORCH_PYTHON, /root/tvenv, or a virtual environment
// this bench creates under the build directory (pip install torch transformers) when none has torch.
//
//   bench_train [--threads N] [--batch B] [--seq S] [--steps N] [--configs tiny,small] [--python P]
//               [--no-peer] [--pool-host-buffers] [--profile]
// --pool-host-buffers: Tessera's backend allocates as the server's training jobs do
// (BackendOptions::pool_host_buffers, core/backend/cpu/host_buffer_pool.h).
// --profile: Tessera's timed steps also print a per-op time table (ProfilingBackend; on the CPU its
// per-op synchronization is free, so the table adds up to the step).
// Memory note: the peer's 'small' run holds fused expert gradients and AdamW state for every layer with
// a trainable slot (~15 GB RSS observed); run it on a machine with room for that.
// Limits (issue 17): the BLAS's 1024^3 sgemm in this run is the GEMM peak; Tessera's step is also given as
// estimated training GFLOP/s (TrainFlopsPerToken) against it.
// Last line (small config):
//   tessera_tok_s=<x> torch_tok_s=<x> speedup=<x> tessera_rss_mb=<x> torch_rss_mb=<x> tessera_gflops=<x>
//   peak_gflops=<x>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/backend/cpu/cpu_blas.h"  // Sgemm, CpuKernelSetString
#include "core/backend/profiling_backend.h"
#include "core/data/rng.h"
#include "core/model/model.h"
#include "core/train/artifact.h"
#include "core/train/backbone.h"
#include "core/train/expert_selection.h"
#include "core/train/finetune.h"
#include "core/train/model_trainable.h"
#include "core/train/pretrain.h"
#include "core/util/parallel.h"
#include "core/util/thread_budget.h"

namespace {

using namespace tessera;         // NOLINT
using namespace tessera::train;  // NOLINT
namespace fs = std::filesystem;

double RssMb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;
}

int Child(const std::string& dir, const std::string& slot_list, int64_t batch, int64_t seq,
          int64_t steps) {
  BackendOptions options;
  // --pool-host-buffers (passed in the environment): as the server's training jobs allocate.
  options.pool_host_buffers = std::getenv("TESSERA_BENCH_POOL_HOST_BUFFERS") != nullptr;
  auto cpu = MakeCpuBackend(options);
  // --profile (passed in the environment): the timed steps' per-op table (ProfilingBackend).
  ProfilingBackend profiler(cpu.get());
  const bool profile = std::getenv("TESSERA_BENCH_PROFILE") != nullptr;
  Backend* be = profile ? static_cast<Backend*>(&profiler) : cpu.get();
  auto fail = [](const absl::Status& s) {
    std::fprintf(stderr, "bench_train child: %s\n", s.ToString().c_str());
    return 1;
  };
  auto bb = LoadBackbone(dir, be);
  if (!bb.ok()) return fail(bb.status());
  auto model = Model::Create(bb->config, bb->weights, be);
  if (!model.ok()) return fail(model.status());
  auto slots = ParseSlotList(slot_list);
  if (!slots.ok()) return fail(slots.status());
  auto overlay = MakeTrainingOverlay(**model, *slots, nullptr);
  if (!overlay.ok()) return fail(overlay.status());
  auto trainable = ModelTrainable::ForExperts(model->get(), *overlay, *slots);
  if (!trainable.ok()) return fail(trainable.status());
  data::Rng rng(5);
  const int64_t vocab = std::min<int64_t>(bb->config.vocab_size, 256);
  std::vector<data::TokenizedExample> train;
  for (int64_t i = 0; i < batch * (steps + 1); ++i) {
    data::TokenizedExample e;
    for (int64_t j = 0; j < seq; ++j) e.tokens.push_back(static_cast<int32_t>(rng.Uniform(vocab)));
    e.loss_mask.assign(seq, 1);
    e.loss_mask[0] = 0;
    train.push_back(std::move(e));
  }
  std::vector<data::TokenizedExample> val = {train[0]};
  TrainerOptions o;
  o.max_steps = steps + 1;
  o.batch_size = batch;
  o.seq_len = seq;
  o.learning_rate = 1e-4;
  o.eval_every = 0;
  o.eval_max_examples = 1;
  auto trainer = Trainer::Create(trainable->get(), train, val, o);
  if (!trainer.ok()) return fail(trainer.status());
  std::chrono::steady_clock::time_point t_first, t_last;
  RunControls rc;
  rc.on_progress = [&](const TrainProgress& p) {
    if (p.step == 1) {
      t_first = std::chrono::steady_clock::now();
      profiler.set_enabled(profile);
    }
    t_last = std::chrono::steady_clock::now();
  };
  auto r = (*trainer)->Run(rc);
  if (!r.ok()) return fail(r.status());
  const double dt = std::chrono::duration<double>(t_last - t_first).count();
  // The final validation (one sequence, forward only) is inside the last step's time: negligible.
  std::printf("tessera tok_s=%.1f rss_mb=%.1f step_ms=%.1f trainable_params=%lld\n",
              static_cast<double>(batch * seq * steps) / dt, RssMb(), 1000.0 * dt / steps,
              static_cast<long long>((*trainer)->trainable_parameters()));
  if (profile) std::printf("per-op time of the timed steps:\n%s", profiler.Report(dt).c_str());
  return 0;
}

// Runs `cmd`, echoes its output, returns the last line starting with `prefix` ("" if none).
std::string RunAndFind(const std::string& cmd, const std::string& prefix) {
  std::string found;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return found;
  char buf[4096];
  while (std::fgets(buf, sizeof(buf), p) != nullptr) {
    std::string line(buf);
    if (line.rfind(prefix, 0) == 0 || line.rfind("#", 0) == 0) {
      std::printf("  %s", line.c_str());
      std::fflush(stdout);
    }
    if (line.rfind(prefix, 0) == 0) found = line;
  }
  pclose(p);
  return found;
}

double Field(const std::string& line, const std::string& key) {
  size_t pos = line.find(key + "=");
  if (pos == std::string::npos) return std::nan("");
  return std::strtod(line.c_str() + pos + key.size() + 1, nullptr);
}

std::string FieldText(const std::string& line, const std::string& key) {
  size_t pos = line.find(key + "=");
  if (pos == std::string::npos) return "?";
  size_t end = line.find_first_of(" \n", pos);
  return line.substr(pos + key.size() + 1, end - pos - key.size() - 1);
}

bool HasTorch(const std::string& python) {
  return !python.empty() && std::system((python + " -c 'import torch, transformers' 2>/dev/null").c_str()) == 0;
}

std::string FindPython(const std::string& given) {
  std::vector<std::string> candidates;
  if (!given.empty()) candidates.push_back(given);
  if (const char* env = std::getenv("TESSERA_TORCH_PYTHON")) candidates.push_back(env);
  candidates.push_back("/root/tvenv/bin/python");
  candidates.push_back("/work/venv/bin/python");
  const std::string venv = std::string(TESSERA_BINARY_DIR) + "/bench_train_venv";
  candidates.push_back(venv + "/bin/python");
  for (const auto& c : candidates) {
    if (HasTorch(c)) return c;
  }
  std::printf("installing torch + transformers into %s ...\n", venv.c_str());
  std::fflush(stdout);
  const std::string cmd = "python3 -m venv " + venv + " && " + venv +
                          "/bin/pip install -q --index-url https://download.pytorch.org/whl/cpu torch && " +
                          venv + "/bin/pip install -q transformers safetensors";
  if (std::system(cmd.c_str()) == 0 && HasTorch(venv + "/bin/python")) return venv + "/bin/python";
  return "";
}

// Training FLOPs per token (2 per multiply-add), an estimate: the forward (projections, router, the top-k
// experts, causal attention at this sequence length, LM head) twice (forward + input gradients; frozen
// weights get no weight gradient) plus the weight gradients of the trainable expert slots (the tokens
// routed to them: top_k * trainable/total of the expert FLOPs).
double TrainFlopsPerToken(const ModelConfig& c, int64_t seq, double trainable_fraction) {
  const double d = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), f = c.expert_dim;
  const double experts = 2.0 * c.top_k * 3 * d * f;
  const double per_layer = 2.0 * d * (qd + 2 * kvd) + 2.0 * qd * d + 2.0 * d * c.num_experts + experts +
                           4.0 * (seq + 1) / 2.0 * c.num_heads * c.head_dim;
  const double fwd = c.num_layers * per_layer + 2.0 * d * c.vocab_size;
  return 2.0 * fwd + trainable_fraction * c.num_layers * experts;
}

// The BLAS's 1024^3 sgemm, best of 5 after a warm-up (GFLOP/s): the machine's measured GEMM peak.
double PeakSgemmGflops() {
  const int n = 1024;
  std::vector<float> a(n * n, 0.01f), b(n * n, 0.02f), c(n * n);
  double best = 1e30;
  for (int r = 0; r < 6; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    cpu::Sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) best = std::min(best, dt);
  }
  return 2.0 * n * n * n / best / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t threads = 2, batch = 4, seq = 128, steps = 3;
  std::string configs = "tiny,small", python;
  bool no_peer = false, pool = false, profile = false;
  if (argc > 1 && std::string(argv[1]) == "--child") {
    if (argc != 7) return 2;
    int64_t b = 0, s = 0, n = 0;
    if (!absl::SimpleAtoi(argv[4], &b) || !absl::SimpleAtoi(argv[5], &s) ||
        !absl::SimpleAtoi(argv[6], &n)) {
      return 2;
    }
    return Child(argv[2], argv[3], b, s, n);
  }
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--no-peer") {
      no_peer = true;
      continue;
    }
    if (a == "--pool-host-buffers") {
      pool = true;
      continue;
    }
    if (a == "--profile") {
      profile = true;
      continue;
    }
    std::string v = i + 1 < argc ? argv[++i] : "";
    bool ok = true;
    if (a == "--threads") ok = absl::SimpleAtoi(v, &threads);
    else if (a == "--batch") ok = absl::SimpleAtoi(v, &batch);
    else if (a == "--seq") ok = absl::SimpleAtoi(v, &seq);
    else if (a == "--steps") ok = absl::SimpleAtoi(v, &steps);
    else if (a == "--configs") configs = v;
    else if (a == "--python") python = v;
    else ok = false;
    if (!ok) {
      std::fprintf(stderr, "bench_train: bad argument %s\n", a.c_str());
      return 2;
    }
  }
  if (!no_peer) python = FindPython(python);
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  const std::string peer = std::string(TESSERA_SOURCE_DIR) + "/ops/bench/torch_train_peer.py";
  const std::string env = absl::StrCat("TESSERA_NUM_THREADS=", threads, " OPENBLAS_NUM_THREADS=", threads,
                                       " OMP_NUM_THREADS=", threads, " ",
                                       pool ? "TESSERA_BENCH_POOL_HOST_BUFFERS=1 " : "",
                                       profile ? "TESSERA_BENCH_PROFILE=1 " : "");
  std::printf("bench_train: %lld threads, batch %lld x seq %lld, %lld timed steps (+1 warm-up), peer %s\n",
              static_cast<long long>(threads), static_cast<long long>(batch),
              static_cast<long long>(seq), static_cast<long long>(steps),
              python.empty() ? "unavailable" : python.c_str());
  // This process's pool and BLAS at the bench's thread count (before CpuKernelSetString loads the BLAS).
  if (absl::Status s = SetThreadBudget(static_cast<int>(threads)); !s.ok()) {
    std::fprintf(stderr, "bench_train: --threads: %s\n", s.ToString().c_str());
    return 2;
  }
  std::printf("cpu: %s\nkernels: %s\n", cpu::CpuFeaturesString().c_str(), cpu::CpuKernelSetString().c_str());
  const double peak_gflops = PeakSgemmGflops();
  std::printf("machine limit (this run): sgemm 1024^3 %.1f GFLOP/s with the BLAS above\n", peak_gflops);
  std::string last;
  for (const std::string name : {"tiny", "small"}) {
    if (configs.find(name) == std::string::npos) continue;
    auto be = MakeCpuBackend();
    std::string dir;
    ModelConfig c;
    if (name == "tiny") {
      auto files = LocateBackbone("builtin:tiny");
      if (!files.ok()) {
        std::fprintf(stderr, "bench_train: %s\n", files.status().ToString().c_str());
        return 1;
      }
      dir = files->dir;
      c = *ModelConfig::FromFile(files->config_path);
    } else {
      c = ModelConfig::BuiltinSmall();
      dir = (fs::temp_directory_path() / "tessera_bench_train_small").string();
      if (!fs::exists(dir + "/model.safetensors")) {
        std::printf("writing random 'small' weights (bf16) to %s ...\n", dir.c_str());
        std::fflush(stdout);
        auto w = ModelWeights::RandomInit(c, 1, be.get());
        if (!w.ok() || !SaveBackbone(c, *w, be.get(), dir, {{"format", "pt"}}, true).ok()) {
          std::fprintf(stderr, "bench_train: cannot write %s\n", dir.c_str());
          return 1;
        }
      }
    }
    const int64_t total = c.num_layers * c.num_experts;
    const auto slots = RandomSlots(c, std::max<int64_t>(1, (total + 5) / 10), 2026);
    const std::string slot_list = SlotListString(slots);
    std::printf("[%s] %lld parameters, %zu/%lld expert slots trainable: %s\n", name.c_str(),
                static_cast<long long>(c.NumParameters()), slots.size(), static_cast<long long>(total),
                slot_list.c_str());
    std::fflush(stdout);
    const std::string t_line = RunAndFind(
        absl::StrCat(env, self, " --child ", dir, " ", slot_list, " ", batch, " ", seq, " ", steps), "tessera ");
    std::string p_line;
    if (!python.empty()) {
      p_line = RunAndFind(absl::StrCat(env, python, " ", peer, " --model-dir ", dir, " --slots ", slot_list,
                                       " --batch ", batch, " --seq ", seq, " --steps ", steps,
                                       " --threads ", threads, " 2>/dev/null"),
                          "peer ");
    }
    const double t_tok = Field(t_line, "tok_s"), p_tok = Field(p_line, "tok_s");
    const double t_gflops = t_tok * TrainFlopsPerToken(c, seq, static_cast<double>(slots.size()) / total) / 1e9;
    std::printf("[%s] tessera ~%.1f GFLOP/s (estimated training FLOPs) = %.2f of the sgemm peak\n", name.c_str(),
                t_gflops, t_gflops / peak_gflops);
    const double t_rss = Field(t_line, "rss_mb"), p_rss = Field(p_line, "rss_mb");
    std::printf("[%s] tessera %.1f tok/s, %.0f MB peak RSS | torch (%s) %.1f tok/s, %.0f MB | speedup %.2fx\n",
                name.c_str(), t_tok, t_rss, FieldText(p_line, "experts_impl").c_str(), p_tok, p_rss,
                t_tok / p_tok);
    std::fflush(stdout);
    last = absl::StrFormat("tessera_tok_s=%.1f torch_tok_s=%.1f speedup=%.2f tessera_rss_mb=%.1f torch_rss_mb=%.1f "
                           "tessera_gflops=%.1f peak_gflops=%.1f",
                           t_tok, p_tok, t_tok / p_tok, t_rss, p_rss, t_gflops, peak_gflops);
  }
  std::printf("%s\n", last.c_str());
  return 0;
}
