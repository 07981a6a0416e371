// tessera-server: the Tessera gRPC server. See --help.
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <iostream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/backend/cpu/cpu_kernel_set.h"
#include "core/util/thread_budget.h"
#include "services/core_components.h"
#include "services/log.h"
#include "services/memory_trim.h"
#include "services/model_host.h"
#include "services/restore.h"
#include "services/server.h"
#include "storage/backup.h"

namespace {

constexpr char kUsage[] = R"(tessera-server: serves the Tessera API (tessera.v1) over gRPC.

Usage: tessera-server --data-dir DIR [options]

Required:
  --data-dir DIR              registry (SQLite) and blob store live here; created if missing. On a data
                              dir without an admin key, one is created, written to DIR/admin.key
                              (mode 0600) and printed once on stdout.
Options:
  --role all|control|inference|trainer
                              which part of the service this process runs (default all: everything).
                              control: the control-plane APIs (tenants, keys, datasets, jobs, versions,
                              promote/rollback, audit, backup), the registry and the blob store; no
                              model for serving, no training (Generate/Score answer UNAVAILABLE).
                              inference: a replica serving Generate/GenerateStream/Score and the HTTP
                              completions, following live-pointer moves through the shared registry;
                              read-only control-plane APIs; registry changes answer UNAVAILABLE naming
                              the control plane (they are not forwarded). trainer: claims jobs from the
                              shared registry, trains, publishes versions; no public inference.
                              inference and trainer need --control-plane, --control-plane-key-file and
                              --registry postgres://... (the control plane's); they accept the same
                              tenant and admin keys, checked against that registry, and register in its
                              replica table (id, address, applied change sequence, heartbeat)
  --control-plane HOST:PORT   (inference, trainer) the control plane's gRPC address; checked at start
                              (Admin.GetRuntimeStatus must answer as --role control or all; retried for
                              60 s while it starts)
  --control-plane-key-file FILE  (inference, trainer) an ADMIN key of the control plane, for that check
  --control-plane-ca PEM      (inference, trainer) the CA of the control plane's TLS certificate (default:
                              plaintext)
  --replica-id ID             (inference, trainer) this process's id in the replica table (default
                              HOSTNAME:PORT)
  --advertise HOST:PORT       (inference, trainer) the address written in the replica table (default: the
                              --listen host, or the host name for 0.0.0.0, with the bound port)
  --replica-wait-seconds S    (all, control on PostgreSQL) Promote/Rollback return once every inference
                              replica with a fresh heartbeat serves the move, or after S seconds, naming
                              the replicas that did not (LiveVersionResponse.lagging_replicas; default 10)
  --replica-fresh-seconds S   a replica whose last heartbeat (every second) is older than S seconds is
                              not waited for (default 5)
  --registry sqlite|postgres://USER@HOST:PORT/DB
                              where the registry's metadata lives: sqlite (default) = DIR/registry.db;
                              a PostgreSQL URI (libpq syntax, e.g. ?password=... or PGPASSWORD) = that
                              database, created tables and migrated on first use, shareable by several
                              servers. Blobs stay in DIR/blobs either way
  --listen HOST:PORT          gRPC address (default 127.0.0.1:7070; port 0 picks a free port, printed)
  --backbone builtin:tiny|DIR  the frozen backbone (default builtin:tiny; its checkpoint is made by
                              tessera-pretrain), or a Hugging Face checkpoint directory (config.json,
                              model.safetensors or model.safetensors.index.json, tokenizer.json,
                              tokenizer_config.json, optional chat_template.jinja/generation_config.json)
                              of a supported family (tessera-model inspect DIR says whether it is).
                              random:tiny = the builtin:tiny architecture with fixed random weights
                              (untrained: for tests and smoke runs)
  --device cpu|cuda           where the model runs (default cpu)
  --dtype auto|f32|bf16       precision of the backbone's weight matrices (default auto: the checkpoint's,
                              bf16 for a BF16 or F16 checkpoint -- F16 rounded to bf16 -- and f32 for an
                              F32 one, so builtin:tiny and random:tiny serve in f32). Weights are read
                              straight into this dtype, never through an f32 copy of the model. bf16
                              halves weight and KV-cache memory and, on cuda, runs every GEMM on tensor
                              cores; tenant versions are served in bf16 and trained through f32 master
                              copies, and the versions a job writes hold bf16-representable values. On
                              cpu, bf16 is the reference path (widened per op): slower than f32
  --metrics-listen HOST:PORT  Prometheus text metrics at http://HOST:PORT/metrics (default: off; plain
                              HTTP, so a non-loopback address needs --allow-insecure)
  --http-listen HOST:PORT     the OpenAI-compatible HTTP API (/v1/models, /v1/completions,
                              /v1/chat/completions, /v1/files, /v1/fine_tuning/jobs) and the web console
                              (/console) on this address, with the same API keys (Authorization: Bearer);
                              model names <tenant> (live), <tenant>:<N>, <tenant>:0 (base). Default: off;
                              port 0 picks a free port (printed)
  --tls-cert PEM --tls-key PEM  serve gRPC and the HTTP API (HTTPS) over TLS with this certificate chain
                              and private key (--metrics-listen stays plain HTTP: loopback only)
  --tls-client-ca PEM         mutual TLS (gRPC and HTTPS): clients must present a certificate signed by
                              this CA
  --allow-insecure            allow plaintext on a non-loopback address (without TLS the server refuses
                              to listen anywhere but 127.0.0.0/8, ::1, localhost or a unix socket, and
                              exits non-zero saying so)
  --max-concurrent-jobs N     fine-tuning training loops run at once (default 1)
  --max-joint-jobs N          jobs on the backbone trained together in one loop: each forward and
                              backward of the backbone runs once over all their batches, each job keeps
                              its own slots, optimizer, validation and result (as alone); so up to
                              max-concurrent-jobs x N jobs run at once. Default 4: tenants' jobs start
                              when queued instead of waiting for the jobs ahead to finish, each pass
                              serves all of them, and on the CPU the total throughput stays that of
                              one job after another (ops/bench/RESULTS.md, bench_joint); 1: one job
                              per loop, the others queue
  --max-dataset-bytes N       upload size limit (default 67108864)
  --job-lease-seconds S       a running job's lease; a crashed server's jobs are requeued after it
                              (default 30)
  --no-jobs                   accept and queue jobs but do not run them in this process
  --no-inference              do not load the model for serving (Inference answers UNAVAILABLE)
  --overlay-device-bytes N    tenant overlays kept on the device, least recently used out (default
                              268435456; --expert-cache-bytes is the old name). Overlays live in three
                              tiers: device, host memory (parsed copies ready to upload), disk (the
                              registry); a request for a version not on the device waits for its own
                              load (done off the decode loop) while other tenants keep decoding
  --overlay-host-bytes N      tenant overlays kept in host memory after leaving the device, LRU to disk
                              (default 1073741824; 0: none). A version larger than a tier's budget is
                              not kept in that tier. On the CPU backend both tiers are host memory,
                              accounted separately
  --train-memory-limit-bytes N  device memory each fine-tuning job may allocate beyond the shared
                              backbone (activations, gradients, optimizer state, its overlay copy); a job
                              that needs more fails with RESOURCE_EXHAUSTED and the server keeps serving
                              (default 0: no limit)
  --export-shard-bytes N      Experts.ExportVersion's safetensors shard size when the request names
                              none (default 2147483648); exports are written under DIR/export first
  --max-batch N               sequences per decode step of the continuous batch (default 16)
  --admission fair|fifo       which waiting generation request gets the next free batch slot and the
                              next inference thread (default fair): fair = deficit round-robin across
                              tenants (a request costs its prompt + max_tokens positions; each tenant is
                              credited 64 x its weight per turn), so a tenant flooding the server delays
                              another's request by about one slot's turnover instead of its whole
                              backlog; fifo = arrival order (one flooding tenant delays everyone)
  --tenant-weight TENANT=W    fair share weight of a tenant (integer >= 1, default 1; repeatable): a
                              backlogged tenant of weight 3 gets 3x the batch positions of one of weight 1
  --max-queued-per-tenant N   generation requests of one tenant waiting for a thread, and for a batch
                              slot (default 64); one more -> RESOURCE_EXHAUSTED, so one tenant cannot fill
                              the server's queue (256 requests) and lock the others out
  --threads N                 compute threads on the CPU (default: TESSERA_NUM_THREADS, else every CPU this
                              process may run on): one pool of N threads runs Tessera's kernels and
                              splits the BLAS's products (the BLAS itself is single-threaded), so
                              serving and training in one process never run more compute threads than N
  --inference-threads N       threads running Generate/Score (default 16); admin work (Promote,
                              Rollback, DeleteTenant) has its own 4 threads and never waits behind them
  --max-streams N             open streams at once (GenerateStream, WatchJob, ExportVersion and HTTP SSE
                              completions; each holds a thread): default 256; one more ->
                              RESOURCE_EXHAUSTED (HTTP 429). 0: unbounded
  --max-streams-per-tenant N  the same per tenant (default 32)
  --max-context N             positions (prompt + completion) per request, at most the model's
                              max_position_embeddings (default: the model's). A prompt longer than the
                              context is refused (INVALID_ARGUMENT, with the numbers and the flag that
                              raises it); a completion stops at the context (finish reason length)
  --kv-memory-bytes N         memory for the paged KV pool, preallocated (default 4294967296 = 4 GiB, but
                              never more than --max-batch sequences of the full context need). Sequences
                              take blocks as they grow, so short and long ones share it; a request is
                              admitted when the blocks it needs are free, and when decodes outgrow the
                              pool the newest request is preempted (it recomputes later; nothing fails).
                              When not even one full context fits, the context is reduced to what does
                              and the start-up log says so
  --kv-block-tokens N         positions per KV block (default 16)
  --prefix-cache-bytes N      memory for the prefix cache (default 0: off): KV of computed prompts in
                              KV blocks, reused by later requests whose prompt starts with the
                              same tokens on the same version content (a shared system prompt, the
                              earlier turns of a chat), so only the rest is prefilled. Added to the
                              KV pool on top of --kv-memory-bytes; requests read cached blocks in
                              place (one copy however many share them); least recently used blocks
                              are evicted, and given to running requests when the pool runs short
  --max-step-tokens N         chunked prefill (default 0: off): at most N tokens per batching step;
                              decodes run every step, prompts share the rest (at least N/4) and long
                              ones are split over steps, so they do not stall the decodes beside them
  --decode-routing host|device  how decode steps group tokens by expert (default host): host copies each
                              layer's router choices to the host to plan the grouped GEMM; device plans
                              on the device (no per-layer round trip; on cuda it has passed its tests on
                              the CPU only so far, hence not the default). The same results (bitwise
                              on cpu; on cuda up to float summation order)
  --general-eval-data FILE    general-ability text for the promotion gate: JSON Lines of {"text": ...}
                              (e.g. a sample of the backbone's pretraining data). Default: builtin:* and
                              random:* use held-out documents of tessera-pretrain's corpus; a checkpoint
                              directory has none, and auto_promote then decides on validation alone
                              (the version's promotion_reason says so)
  --max-general-regression X  auto_promote promotes only when the version's general-ability loss is at
                              most (1 + X) times the backbone's, e.g. 0.05; jobs may set their own
                              (max_general_regression). [0, 10]. Default: no bound (the versions still
                              record both losses): fine-tunes at the defaults raise builtin:tiny's
                              mixture loss by 150-500% (ops/bench/RESULTS.md)
  --gc-interval-seconds S     delete unreferenced blobs (superseded checkpoints, deleted datasets) every
                              S seconds (default 300; 0 disables)
  --gc-grace-seconds S        keep unreferenced blobs younger than S seconds (default 600; it must
                              exceed the time from writing a blob to publishing it, or such a publish
                              fails)
  --restore DIR               restore the backup in DIR (written by tessera-admin backup) into --data-dir,
                              which must not exist or be empty, then serve it. Every file is checked
                              against DIR/manifest.json (sha256 and size) first, and the backup's backbone
                              sha256 against the loaded one; any mismatch is refused with the file or the
                              digests named, leaving --data-dir as it was. API keys (their hashes) come
                              back: the keys of the backed-up server, the admin key included, work here.
                              Jobs that were running resume from the checkpoint the backup holds
Quota defaults, for every tenant without its own (tessera-admin quotas set; 0 = unlimited; over a quota
a call fails with RESOURCE_EXHAUSTED, HTTP 429 with Retry-After for the rate limits):
  --default-requests-per-second N  inference requests per second per tenant, bursts of one second's
                              worth (default 0: fair admission already keeps one tenant's flood from
                              delaying the others and --max-queued-per-tenant bounds its backlog, while
                              what one server completes per second depends on the model and hardware:
                              set it to cap or sell a rate)
  --default-tokens-per-minute N  inference tokens (prompt + completion) per minute per tenant (default 0:
                              tokens are what a contract sells and the right number depends on it and on
                              the hardware; the batch and fair admission already bound a tenant's share)
  --default-max-running-jobs N  a tenant's fine-tuning jobs training at once; more wait queued (default 0:
                              the queue already starts the tenant with the fewest running jobs first, and
                              a cap would leave training slots idle while nobody else has work)
  --default-max-queued-jobs N  queued jobs per tenant; CreateJob is refused beyond (default 100: far above
                              interactive use, low enough that a runaway script cannot fill the durable
                              queue and pin its datasets)
  --default-storage-bytes N   bytes of datasets + versions per tenant (default 107374182400 = 100 GiB:
                              about 150 versions of 64 fine-tuned experts of a 30B MoE, ~0.6 GB each in
                              bf16, plus datasets; a full disk stops every tenant, so size it as disk /
                              tenants)
  --default-max-versions N    versions a tenant may ever publish: they are immutable and never deleted
                              (default 1000: years of daily fine-tunes, and ListVersions stays small)
  --log-level LEVEL           debug|info|warn|error (default info); logs are JSON lines on stderr
  --help                      this text

Reflection and grpc.health.v1.Health are enabled. SIGINT/SIGTERM stop the server cleanly (running jobs
are interrupted and resume from their last checkpoint at the next start).
)";

// "--default-requests-per-second" -> Quota::kRequestsPerSecond (the quota's name with dashes).
std::optional<tessera::storage::Quota> QuotaFlag(const std::string& flag) {
  for (int i = 0; i < tessera::storage::kNumQuotas; ++i) {
    std::string name = tessera::storage::QuotaName(tessera::storage::QuotaAt(i));
    std::replace(name.begin(), name.end(), '_', '-');
    if (flag == "--default-" + name) return tessera::storage::QuotaAt(i);
  }
  return std::nullopt;
}

// The defaults of the --default-* quota flags (see kUsage for why each).
tessera::storage::QuotaLimits DefaultQuotas() {
  tessera::storage::QuotaLimits l;
  l[tessera::storage::Quota::kRequestsPerSecond] = 0;
  l[tessera::storage::Quota::kTokensPerMinute] = 0;
  l[tessera::storage::Quota::kMaxRunningJobs] = 0;
  l[tessera::storage::Quota::kMaxQueuedJobs] = 100;
  l[tessera::storage::Quota::kStorageBytes] = int64_t{100} << 30;
  l[tessera::storage::Quota::kMaxVersions] = 1000;
  return l;
}

int Fail(const std::string& msg) {
  std::fprintf(stderr, "tessera-server: %s\n", msg.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tessera::services;
  UseMmapForLargeAllocations();  // before any thread or large allocation (services/memory_trim.h)
  ServerOptions options;
  CoreOptions core;
  options.max_joint_jobs = core.max_joint_jobs = 4;  // --max-joint-jobs' default (see kUsage)
  int64_t lease_seconds = 30;
  std::string restore_dir;
  std::string control_plane_key_file;
  options.registry.default_quotas = DefaultQuotas();
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_inline = false;
    if (size_t eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_inline = true;
    }
    auto next = [&](std::string* out) -> bool {
      if (has_inline) {
        *out = value;
        return true;
      }
      if (i + 1 >= argc) return false;
      *out = argv[++i];
      return true;
    };
    auto next_int = [&](int64_t* out, int64_t lo) -> bool {
      std::string v;
      return next(&v) && absl::SimpleAtoi(v, out) && *out >= lo;
    };
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (arg == "--role") {
      std::string v;
      if (!next(&v)) return Fail("--role needs all, control, inference or trainer");
      absl::StatusOr<ServerRole> role = ParseServerRole(v);
      if (!role.ok()) return Fail(std::string(role.status().message()));
      options.role = *role;
    } else if (arg == "--control-plane") {
      if (!next(&options.control_plane)) return Fail("--control-plane needs HOST:PORT");
    } else if (arg == "--control-plane-key-file") {
      if (!next(&control_plane_key_file)) return Fail("--control-plane-key-file needs a file holding an ADMIN key");
    } else if (arg == "--control-plane-ca") {
      if (!next(&options.control_plane_ca_file)) return Fail("--control-plane-ca needs a PEM file");
    } else if (arg == "--replica-id") {
      if (!next(&options.replica_id) || options.replica_id.empty()) return Fail("--replica-id needs an id");
    } else if (arg == "--advertise") {
      if (!next(&options.advertise)) return Fail("--advertise needs HOST:PORT");
    } else if (arg == "--replica-wait-seconds") {
      int64_t n;
      if (!next_int(&n, 0)) return Fail("--replica-wait-seconds needs an integer >= 0");
      options.replica_wait = absl::Seconds(n);
    } else if (arg == "--replica-fresh-seconds") {
      int64_t n;
      if (!next_int(&n, 1)) return Fail("--replica-fresh-seconds needs an integer >= 1");
      options.replica_fresh = absl::Seconds(n);
    } else if (arg == "--data-dir") {
      if (!next(&options.data_dir)) return Fail("--data-dir needs a value");
    } else if (arg == "--registry") {
      if (!next(&options.registry.database)) return Fail("--registry needs sqlite or postgres://USER@HOST:PORT/DB");
      if (options.registry.database != "sqlite" && options.registry.database.rfind("postgres://", 0) != 0 &&
          options.registry.database.rfind("postgresql://", 0) != 0) {
        return Fail("--registry must be sqlite or postgres://USER@HOST:PORT/DB, got '" + options.registry.database +
                    "'");
      }
    } else if (arg == "--listen") {
      if (!next(&options.listen)) return Fail("--listen needs HOST:PORT");
    } else if (arg == "--backbone") {
      if (!next(&core.backbone)) return Fail("--backbone needs builtin:tiny or a path");
    } else if (arg == "--device") {
      if (!next(&core.device)) return Fail("--device needs cpu or cuda");
    } else if (arg == "--dtype") {
      if (!next(&core.dtype)) return Fail("--dtype needs auto, f32 or bf16");
    } else if (arg == "--decode-routing") {
      if (!next(&core.decode_routing)) return Fail("--decode-routing needs host or device");
    } else if (arg == "--tls-cert") {
      if (!next(&options.tls_cert_file)) return Fail("--tls-cert needs a PEM file");
    } else if (arg == "--tls-key") {
      if (!next(&options.tls_key_file)) return Fail("--tls-key needs a PEM file");
    } else if (arg == "--tls-client-ca") {
      if (!next(&options.tls_client_ca_file)) return Fail("--tls-client-ca needs a PEM file");
    } else if (arg == "--allow-insecure") {
      options.allow_insecure = true;
    } else if (arg == "--metrics-listen") {
      if (!next(&options.metrics_listen)) return Fail("--metrics-listen needs HOST:PORT");
    } else if (arg == "--http-listen") {
      if (!next(&options.http_listen)) return Fail("--http-listen needs HOST:PORT");
    } else if (arg == "--max-concurrent-jobs") {
      int64_t n;
      if (!next_int(&n, 1)) return Fail("--max-concurrent-jobs needs an integer >= 1");
      options.max_concurrent_jobs = static_cast<int>(n);
    } else if (arg == "--max-joint-jobs") {
      int64_t n;
      if (!next_int(&n, 1)) return Fail("--max-joint-jobs needs an integer >= 1");
      options.max_joint_jobs = core.max_joint_jobs = static_cast<int>(n);
    } else if (arg == "--max-dataset-bytes") {
      if (!next_int(&options.max_dataset_bytes, 1)) return Fail("--max-dataset-bytes needs an integer >= 1");
    } else if (arg == "--job-lease-seconds") {
      if (!next_int(&lease_seconds, 1)) return Fail("--job-lease-seconds needs an integer >= 1");
    } else if (arg == "--no-jobs") {
      options.run_jobs = false;
      core.training = false;
    } else if (arg == "--no-inference") {
      core.inference = false;
    } else if (arg == "--export-shard-bytes") {
      if (!next_int(&core.export_max_shard_bytes, 1)) return Fail("--export-shard-bytes needs an integer >= 1");
    } else if (arg == "--max-batch") {
      int64_t n;
      if (!next_int(&n, 1)) return Fail("--max-batch needs an integer >= 1");
      core.max_batch = static_cast<int>(n);
    } else if (arg == "--admission") {
      std::string v;
      if (!next(&v) || (v != "fair" && v != "fifo")) return Fail("--admission needs fair or fifo");
      options.admission = core.admission =
          v == "fifo" ? tessera::runtime::AdmissionPolicy::kFifo : tessera::runtime::AdmissionPolicy::kFair;
    } else if (arg == "--tenant-weight") {
      std::string v;
      int64_t w = 0;
      size_t eq = std::string::npos;
      if (!next(&v) || (eq = v.rfind('=')) == std::string::npos || eq == 0 ||
          !absl::SimpleAtoi(v.substr(eq + 1), &w) || w < 1) {
        return Fail("--tenant-weight needs TENANT=W with an integer weight >= 1, e.g. --tenant-weight acme=3");
      }
      core.tenant_weights[v.substr(0, eq)] = w;
    } else if (arg == "--max-queued-per-tenant") {
      int64_t n;
      if (!next_int(&n, 1)) return Fail("--max-queued-per-tenant needs an integer >= 1");
      options.max_queued_per_tenant = core.max_queued_per_tenant = n;
    } else if (arg == "--inference-threads") {
      int64_t n;
      if (!next_int(&n, 1)) return Fail("--inference-threads needs an integer >= 1");
      options.work_threads = static_cast<int>(n);
    } else if (arg == "--max-streams") {
      if (!next_int(&options.max_streams, 0)) return Fail("--max-streams needs an integer >= 0 (0: unbounded)");
    } else if (arg == "--max-streams-per-tenant") {
      if (!next_int(&options.max_streams_per_tenant, 0)) {
        return Fail("--max-streams-per-tenant needs an integer >= 0 (0: unbounded)");
      }
    } else if (arg == "--max-context") {
      if (!next_int(&core.max_context, 2)) return Fail("--max-context needs an integer >= 2");
    } else if (arg == "--kv-memory-bytes") {
      if (!next_int(&core.kv_memory_bytes, 1)) return Fail("--kv-memory-bytes needs an integer >= 1");
    } else if (arg == "--max-step-tokens") {
      if (!next_int(&core.max_step_tokens, 0)) return Fail("--max-step-tokens needs an integer >= 0 (0: off)");
    } else if (arg == "--threads") {
      int64_t n = 0;
      if (!next_int(&n, 1) || n > 4096) return Fail("--threads needs an integer from 1 to 4096");
      if (absl::Status s = tessera::SetThreadBudget(static_cast<int>(n)); !s.ok()) {
        return Fail(std::string(s.message()));
      }
    } else if (arg == "--kv-block-tokens") {
      if (!next_int(&core.kv_block_tokens, 1)) return Fail("--kv-block-tokens needs an integer >= 1");
    } else if (arg == "--prefix-cache-bytes") {
      if (!next_int(&core.prefix_cache_bytes, 0)) return Fail("--prefix-cache-bytes needs an integer >= 0 (0: off)");
    } else if (arg == "--expert-cache-bytes" || arg == "--overlay-device-bytes") {
      if (!next_int(&core.expert_cache_bytes, 1)) return Fail(absl::StrCat(arg, " needs an integer >= 1"));
    } else if (arg == "--overlay-host-bytes") {
      if (!next_int(&core.overlay_host_bytes, 0)) return Fail("--overlay-host-bytes needs an integer >= 0 (0: none)");
    } else if (arg == "--train-memory-limit-bytes") {
      if (!next_int(&core.train_memory_limit_bytes, 0)) {
        return Fail("--train-memory-limit-bytes needs an integer >= 0 (0: no limit)");
      }
    } else if (arg == "--general-eval-data") {
      if (!next(&core.general_eval_data)) return Fail("--general-eval-data needs a JSONL file of {\"text\": ...} lines");
    } else if (arg == "--max-general-regression") {
      std::string v;
      if (!next(&v) || !absl::SimpleAtod(v, &options.max_general_regression) ||
          !(options.max_general_regression >= 0 && options.max_general_regression <= 10)) {
        return Fail("--max-general-regression needs a number in [0, 10] (0.05 = a 5% increase)");
      }
    } else if (arg == "--gc-interval-seconds") {
      int64_t n;
      if (!next_int(&n, 0)) return Fail("--gc-interval-seconds needs an integer >= 0 (0 disables)");
      options.gc_interval = absl::Seconds(n);
    } else if (arg == "--gc-grace-seconds") {
      int64_t n;
      if (!next_int(&n, 0)) return Fail("--gc-grace-seconds needs an integer >= 0");
      options.gc_grace = absl::Seconds(n);
    } else if (arg == "--restore") {
      if (!next(&restore_dir)) return Fail("--restore needs the backup directory (tessera-admin backup --out DIR)");
    } else if (arg.rfind("--default-", 0) == 0 && QuotaFlag(arg).has_value()) {
      int64_t n;
      if (!next_int(&n, 0)) return Fail(absl::StrCat(arg, " needs an integer >= 0 (0 = unlimited)"));
      options.registry.default_quotas[*QuotaFlag(arg)] = n;
    } else if (arg == "--log-level") {
      std::string v;
      LogLevel level;
      if (!next(&v) || !ParseLogLevel(v, &level)) return Fail("--log-level needs debug|info|warn|error");
      SetLogLevel(level);
    } else {
      return Fail(absl::StrCat("unknown argument \"", argv[i], "\" (see --help)"));
    }
  }
  if (options.data_dir.empty()) return Fail("--data-dir is required (see --help)");
  if (absl::Status s = CheckRoleOptions(options.role, options.registry.database, options.control_plane); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  if (!RoleIsControlPlane(options.role)) {
    if (control_plane_key_file.empty()) {
      return Fail(absl::StrCat("--role ", ServerRoleName(options.role),
                               " needs --control-plane-key-file FILE (an ADMIN key of the control plane)"));
    }
    std::ifstream in(control_plane_key_file);
    if (!in || !std::getline(in, options.control_plane_key) || options.control_plane_key.empty()) {
      return Fail(absl::StrCat("--control-plane-key-file ", control_plane_key_file,
                               ": cannot read a key from its first line"));
    }
    if (!restore_dir.empty()) return Fail("--restore is for the control plane (--role all or control)");
  } else if (!control_plane_key_file.empty() || !options.control_plane_ca_file.empty()) {
    return Fail("--control-plane-key-file and --control-plane-ca are for --role inference or trainer");
  }
  // What the role does not run is not built (no serving model on a control plane or trainer).
  if (!RoleServesInference(options.role)) core.inference = false;
  if (!RoleRunsJobs(options.role)) {
    core.training = false;
    options.run_jobs = false;
  }
  if (options.role == ServerRole::kInference && !core.inference) {
    return Fail("--role inference with --no-inference would serve nothing");
  }
  // Before the model loads (minutes for a large checkpoint): a transport mistake is reported at once.
  if (absl::Status s = CheckTransportOptions(options); !s.ok()) return Fail(std::string(s.message()));
  options.job_lease = absl::Seconds(lease_seconds);
  options.job_heartbeat = std::max(absl::Seconds(lease_seconds) / 6, absl::Milliseconds(200));

  // Signals are taken synchronously by this thread (blocked before any other thread starts).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // --restore: refused at once for a non-empty data dir, before the model loads.
  if (!restore_dir.empty()) {
    if (absl::Status s = tessera::storage::CheckEmptyDataDir(options.data_dir); !s.ok()) {
      return Fail(absl::StrCat("--restore: ", s.message()));
    }
  }
  absl::StatusOr<ServerComponents> components = MakeCoreComponents(core);
  if (!components.ok()) return Fail(std::string(components.status().message()));
  std::optional<BackupManifest> restored;
  if (!restore_dir.empty()) {
    absl::StatusOr<BackupManifest> m = RestoreBackup(restore_dir, options.data_dir);
    if (!m.ok()) return Fail(absl::StrCat("--restore ", restore_dir, ": ", m.status().message()));
    restored = *m;
    std::printf("restored %s into %s: %zu files, %lld bytes, schema %d, %lld tenants, %lld versions, %lld jobs "
                "(every sha256 verified)\n",
                restore_dir.c_str(), options.data_dir.c_str(), m->files.size(), static_cast<long long>(m->total_bytes()),
                m->schema_version, static_cast<long long>(m->counts.tenants),
                static_cast<long long>(m->counts.versions), static_cast<long long>(m->counts.jobs));
    // The backbone is checked once its weights (and so its digest) are loaded, before the server listens.
    if (components->make_engine) {
      components->make_engine = [make = components->make_engine, manifest = *m](tessera::storage::Registry* r)
          -> absl::StatusOr<std::unique_ptr<InferenceEngine>> {
        absl::StatusOr<std::unique_ptr<InferenceEngine>> e = make(r);
        if (!e.ok()) return e.status();
        if (absl::Status s = CheckBackupBackbone(manifest, (*e)->Backbone().sha256); !s.ok()) return s;
        return e;
      };
    } else {
      std::printf("restore: no inference engine (--no-inference), so the backbone digest was not checked\n");
    }
  }
  absl::StatusOr<std::unique_ptr<TesseraServer>> server =
      TesseraServer::Start(options, *std::move(components));
  if (!server.ok()) {
    if (restored.has_value()) {
      // Leave the data dir as it was before --restore (absent or empty).
      std::error_code ec;
      std::filesystem::remove_all(options.data_dir, ec);
      std::filesystem::create_directories(options.data_dir, ec);
      return Fail(absl::StrCat("--restore ", restore_dir, ": ", server.status().message(),
                               " (the restored data dir was removed again)"));
    }
    return Fail(std::string(server.status().message()));
  }
  const BootstrapInfo& boot = (*server)->bootstrap();
  if (boot.created_admin_key) {
    std::printf("admin key (shown once; also in %s): %s\n", boot.admin_key_path.c_str(),
                boot.admin_key.c_str());
  }
  const BackboneInfo& backbone = (*server)->backbone();
  std::printf("backbone: %s\n", DescribeBackbone(backbone).c_str());
  std::printf("cpu: %s\nkernels: %s\n", tessera::cpu::CpuFeaturesString().c_str(),
              tessera::cpu::CpuKernelSetString().c_str());
  if (!backbone.context_note.empty()) std::printf("%s\n", backbone.context_note.c_str());
  std::printf("role: %s%s\n", ServerRoleName(options.role).c_str(),
              options.control_plane.empty() ? "" : (" (control plane " + options.control_plane + ")").c_str());
  std::printf("tessera-server listening on port %d", (*server)->port());
  if ((*server)->metrics_port() != 0) std::printf(", metrics on port %d", (*server)->metrics_port());
  if ((*server)->http_port() != 0) std::printf(", HTTP API on port %d", (*server)->http_port());
  std::printf("\n");
  std::fflush(stdout);

  int sig = 0;
  sigwait(&signals, &sig);
  LogInfo("signal received", {{"signal", sig == SIGINT ? "SIGINT" : "SIGTERM"}});
  (*server)->Shutdown();
  server->reset();
  return 0;
}
