// bench_load: peak host memory while loading a bf16 checkpoint into its serving dtype, against the
// weights' serving bytes; optionally the same for `safetensors` and `transformers` in a given Python.
//
// Contract measured: ModelWeights::Load reads every tensor straight into its serving dtype (bf16
// matrices, f32 norm weights), piece by piece, releasing the file mapping's pages as it goes, so
//   peak RSS during load - RSS before load  <=  1.2 x serving bytes
// (serving bytes = the loaded weights' nbytes: on the CPU backend the weights themselves are host
// memory). Mapped file pages count toward RSS while resident, so a loader that keeps the mapping (or
// stages the model in f32) fails this. The peak is /proc/self/status VmHWM after resetting it
// (/proc/self/clear_refs "5") just before the load, so the checkpoint writing done earlier in this
// process does not count; if the reset is refused, ru_maxrss is used and the line says so.
//
// The checkpoint: --dir DIR (an existing HF directory), or else one written under --out (default: the
// system temp dir) from the 'small' config (hidden 1024, 32 experts of 512, vocab 32000) with --layers
// layers (default 8: ~1.0 GB of bf16), random values, stored as BF16 in --shards files (default 2, with
// model.safetensors.index.json). Written in streaming fashion (a few MB of memory).
//
// Peers (--python P, optional): each in its own process, peak RSS after its imports, loading the same
// directory: `safetensors.torch.load_file` of every shard (then one byte of every page read, since its
// tensors may be backed by the file mapping until touched), and
// `transformers.AutoModelForCausalLM.from_pretrained(DIR, dtype=torch.bfloat16)`.
//
//   bench_load [--layers N] [--shards N] [--dir DIR] [--out DIR] [--python P] [--keep]
// Last line:
//   serving_mb=<x> tessera_peak_mb=<x> ratio=<x> [safetensors_peak_mb=<x>] [transformers_peak_mb=<x>]
// Exit status 1 when ratio > 1.2.
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/backend/backend.h"
#include "core/model/config.h"
#include "core/model/weights.h"
#include "core/train/backbone.h"
#include "nlohmann/json.hpp"
#include "ops/bench/bench_check.h"

namespace {

using namespace tessera;
using bench::Must;
namespace fs = std::filesystem;

// Field `key` ("VmRSS:", "VmHWM:") of /proc/self/status in bytes; -1 when absent.
int64_t ProcStatusBytes(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string k(key);
  while (std::getline(in, line)) {
    if (line.rfind(k, 0) == 0) return std::stoll(line.substr(k.size())) * 1024;
  }
  return -1;
}

bool ResetPeakRss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return out.good();
}

double Mb(int64_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

struct Entry {
  std::string name;
  std::vector<int64_t> shape;
  bool norm = false;  // rank 1: ones
  int64_t bytes = 0;  // as BF16
};

// Writes one BF16 safetensors file of `entries` without holding more than a chunk of data in memory.
void WriteShard(const fs::path& path, const std::vector<Entry>& entries, uint64_t seed) {
  nlohmann::json header = nlohmann::json::object();
  int64_t offset = 0;
  for (const Entry& e : entries) {
    header[e.name] = {{"dtype", "BF16"}, {"shape", e.shape}, {"data_offsets", {offset, offset + e.bytes}}};
    offset += e.bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) bench::Die("opening the checkpoint for writing", absl::InternalError(path.string()));
  const uint64_t n = text.size();
  std::fwrite(&n, 8, 1, f);
  std::fwrite(text.data(), 1, text.size(), f);
  // The data follows `entries`' order, as the offsets do (the header's key order does not matter).
  std::vector<uint16_t> chunk(size_t{1} << 20);
  uint64_t x = seed | 1;
  for (const Entry& e : entries) {
    int64_t left = e.bytes / 2;
    while (left > 0) {
      const int64_t count = std::min<int64_t>(left, static_cast<int64_t>(chunk.size()));
      for (int64_t i = 0; i < count; ++i) {
        if (e.norm) {
          chunk[i] = F32ToBf16(1.0f);
        } else {
          x ^= x << 13;
          x ^= x >> 7;
          x ^= x << 17;
          const float u = static_cast<float>(x >> 40) * (1.0f / 16777216.0f);  // [0, 1)
          chunk[i] = F32ToBf16((u - 0.5f) * 0.04f);
        }
      }
      std::fwrite(chunk.data(), 2, static_cast<size_t>(count), f);
      left -= count;
    }
  }
  if (std::fclose(f) != 0) bench::Die("writing the checkpoint", absl::InternalError(path.string()));
}

void WriteCheckpoint(const fs::path& dir, const ModelConfig& c, int shards) {
  fs::create_directories(dir);
  nlohmann::json config = nlohmann::json::parse(c.ToJson());
  config["torch_dtype"] = "bfloat16";
  std::ofstream(dir / "config.json") << config.dump(2);
  // Names and shapes from the model's own parameter list (allocated, never touched, then freed).
  std::vector<Entry> entries;
  {
    std::unique_ptr<Backend> be = Must(MakeBackend("cpu"), "cpu backend");
    ModelWeights w = Must(ModelWeights::Allocate(c, be.get(), DType::kBF16), "Allocate");
    for (const NamedParam& p : w.Parameters(c)) {
      entries.push_back({p.name, p.tensor->shape(), p.tensor->rank() == 1, p.tensor->numel() * 2});
    }
  }
  int64_t total = 0;
  for (const Entry& e : entries) total += e.bytes;
  std::vector<std::vector<Entry>> per_shard(shards);
  int64_t acc = 0;
  for (const Entry& e : entries) {
    const int s = std::min<int>(shards - 1, static_cast<int>(acc * shards / std::max<int64_t>(total, 1)));
    per_shard[s].push_back(e);
    acc += e.bytes;
  }
  if (shards == 1) {
    WriteShard(dir / "model.safetensors", per_shard[0], 1);
    return;
  }
  nlohmann::json weight_map = nlohmann::json::object();
  for (int s = 0; s < shards; ++s) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05d-of-%05d.safetensors", s + 1, shards);
    WriteShard(dir / name, per_shard[s], static_cast<uint64_t>(s) + 1);
    for (const Entry& e : per_shard[s]) weight_map[e.name] = name;
  }
  nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  std::ofstream(dir / "model.safetensors.index.json") << index.dump(2);
}

constexpr char kPeerScript[] = R"PY(
import glob, os, sys, time
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return -1
mode, d = sys.argv[1], sys.argv[2]
import torch
if mode == 'transformers':
    import transformers
else:
    import safetensors.torch
base = status('VmRSS:')
with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')
t = time.time()
if mode == 'transformers':
    model = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16)
    n = sum(p.numel() * p.element_size() for p in model.parameters())
else:
    n = 0
    kept = []
    for f in sorted(glob.glob(os.path.join(d, '*.safetensors'))):
        sd = safetensors.torch.load_file(f)
        for v in sd.values():
            n += v.numel() * v.element_size()
            # load_file may hand out tensors over its file mapping: read one byte a page so the data
            # is really in memory, as it is once a model computes with it.
            v.reshape(-1).view(torch.uint8)[::4096].sum()
        kept.append(sd)
print('peer_peak_bytes=%d peer_bytes=%d peer_seconds=%.2f' % (status('VmHWM:') - base, n, time.time() - t))
)PY";

// Runs the peer; its peak RSS delta in bytes, or -1 (message printed).
int64_t RunPeer(const std::string& python, const std::string& mode, const fs::path& dir, const fs::path& scratch) {
  const fs::path script = scratch / "bench_load_peer.py";
  std::ofstream(script) << kPeerScript;
  const std::string cmd = absl::StrCat("'", python, "' '", script.string(), "' ", mode, " '", dir.string(), "' 2>&1");
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  std::string out;
  char buf[4096];
  while (std::fgets(buf, sizeof(buf), p) != nullptr) out += buf;
  const int rc = ::pclose(p);
  const size_t at = out.find("peer_peak_bytes=");
  if (rc != 0 || at == std::string::npos) {
    std::printf("%s peer failed (exit %d):\n%s\n", mode.c_str(), rc, out.c_str());
    return -1;
  }
  int64_t peak = 0;
  (void)absl::SimpleAtoi(out.substr(at + 16, out.find(' ', at) - at - 16), &peak);
  std::printf("%s: %s", mode.c_str(), out.substr(at).c_str());
  return peak;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t layers = 8, shards = 2;
  std::string dir_arg, out_arg = fs::temp_directory_path().string(), python;
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) bench::Die("arguments", absl::InvalidArgumentError(a + " needs a value"));
      return argv[++i];
    };
    if (a == "--layers") {
      if (!absl::SimpleAtoi(value(), &layers) || layers < 1) bench::Die("arguments", absl::InvalidArgumentError("--layers"));
    } else if (a == "--shards") {
      if (!absl::SimpleAtoi(value(), &shards) || shards < 1) bench::Die("arguments", absl::InvalidArgumentError("--shards"));
    } else if (a == "--dir") {
      dir_arg = value();
    } else if (a == "--out") {
      out_arg = value();
    } else if (a == "--python") {
      python = value();
    } else if (a == "--keep") {
      keep = true;
    } else {
      std::fprintf(stderr, "usage: bench_load [--layers N] [--shards N] [--dir DIR] [--out DIR] [--python P] [--keep]\n");
      return 2;
    }
  }
  fs::path dir = dir_arg;
  const bool wrote = dir_arg.empty();
  if (wrote) {
    ModelConfig c = ModelConfig::BuiltinSmall();
    c.num_layers = layers;
    dir = fs::path(out_arg) / absl::StrCat("tessera_bench_load_", ::getpid());
    const auto t0 = std::chrono::steady_clock::now();
    WriteCheckpoint(dir, c, static_cast<int>(shards));
    std::printf("wrote %s (%lld layers, %lld shards, bf16) in %.1f s\n", dir.c_str(), static_cast<long long>(layers),
                static_cast<long long>(shards),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }

  std::unique_ptr<Backend> be = Must(MakeBackend("cpu"), "cpu backend");
  const bool reset = ResetPeakRss();
  const int64_t before = ProcStatusBytes("VmRSS:");
  rusage ru0{};
  getrusage(RUSAGE_SELF, &ru0);
  const auto t0 = std::chrono::steady_clock::now();
  train::Backbone b = Must(train::LoadBackbone(dir.string(), be.get(), {}, "auto"), "LoadBackbone");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  rusage ru1{};
  getrusage(RUSAGE_SELF, &ru1);
  const int64_t peak = reset ? ProcStatusBytes("VmHWM:") - before : ru1.ru_maxrss * 1024 - before;
  int64_t serving = 0;
  for (const NamedParam& p : b.weights.Parameters(b.config)) serving += static_cast<int64_t>(p.tensor->nbytes());
  const double ratio = static_cast<double>(peak) / static_cast<double>(serving);
  std::printf("tessera: stored %s -> serving %s, %lld parameters, load %.2f s (includes the sha256 of the files), "
              "peak RSS %s\n",
              DTypeName(b.stored_dtype), DTypeName(b.weights.matrix_dtype()),
              static_cast<long long>(b.config.NumParameters()), seconds,
              reset ? "from VmHWM after a reset" : "from ru_maxrss (VmHWM reset refused)");

  std::string peers;
  if (!python.empty()) {
    const fs::path scratch = wrote ? dir.parent_path() : fs::temp_directory_path();
    for (const char* mode : {"safetensors", "transformers"}) {
      const int64_t p = RunPeer(python, mode, dir, scratch);
      if (p >= 0) absl::StrAppend(&peers, " ", mode, "_peak_mb=", absl::StrFormat("%.1f", Mb(p)));
    }
    fs::remove(scratch / "bench_load_peer.py");
  }
  if (wrote && !keep) fs::remove_all(dir);
  std::printf("serving_mb=%.1f tessera_peak_mb=%.1f ratio=%.3f%s\n", Mb(serving), Mb(peak), ratio, peers.c_str());
  if (ratio > 1.2) {
    std::fprintf(stderr, "FAILED: peak RSS during load is %.3fx the serving bytes (limit 1.2x)\n", ratio);
    return 1;
  }
  return 0;
}
