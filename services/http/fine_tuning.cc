#include "services/http/fine_tuning.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "services/convert.h"
#include "services/fine_tuning_service.h"
#include "services/http/auth.h"
#include "services/http/errors.h"
#include "services/http/json_fields.h"
#include "services/job_spec.h"

namespace tessera::services::http {
namespace {

constexpr int64_t kMaxSteps = 100000;
constexpr int kDefaultListLimit = 20;
constexpr int kMaxListLimit = 1000;

// "auto" or a value: nullopt for "auto"/absent.
template <typename T>
absl::StatusOr<std::optional<T>> AutoOr(const Json& h, const char* key, bool integer) {
  std::string path = std::string("hyperparameters.") + key;
  auto it = h.find(key);
  if (it == h.end() || it->is_null()) return std::optional<T>();
  if (it->is_string()) {
    if (it->get<std::string>() == "auto") return std::optional<T>();
    return FieldError(path, "must be \"auto\" or a number, got \"" + it->get<std::string>() + "\"");
  }
  if (integer) {
    absl::StatusOr<std::optional<int64_t>> v = GetInt(h, key, path);
    if (!v.ok()) return v.status();
    return std::optional<T>(static_cast<T>(**v));
  }
  absl::StatusOr<std::optional<double>> v = GetNumber(h, key, path);
  if (!v.ok()) return v.status();
  return std::optional<T>(static_cast<T>(**v));
}

// Renames the gRPC field names in CreateJobFor's messages to this API's.
absl::Status RenameFields(const absl::Status& s) {
  std::string m(s.message());
  for (auto [from, to] : {std::pair<const char*, const char*>{"training_dataset_id", "training_file"},
                          {"validation_dataset_id", "validation_file"},
                          {"base_version", "model"}}) {
    if (absl::StartsWith(m, std::string(from) + ":")) {
      return absl::Status(s.code(), std::string(to) + m.substr(strlen(from)));
    }
  }
  return s;
}

absl::StatusOr<std::optional<std::string>> FileId(const Json& body, const char* key) {
  absl::StatusOr<std::optional<std::string>> v = GetString(body, key);
  if (!v.ok()) return v.status();
  if (*v && (*v)->empty()) return FieldError(key, "must not be empty");
  return v;
}

absl::Status Create(Call& call) {
  absl::StatusOr<Json> body = ParseObject(call.req.body);
  if (!body.ok()) return body.status();
  absl::StatusOr<std::optional<std::string>> model = GetString(*body, "model");
  if (!model.ok()) return model.status();
  if (!*model || (*model)->empty()) return FieldError("model", "you must provide a model parameter");
  absl::StatusOr<ModelRef> ref = ResolveModel(call.env, call.principal, **model);
  if (!ref.ok()) return ref.status();

  v1::CreateJobRequest req;
  req.set_tenant_id(ref->tenant);
  if (!ref->live) req.set_base_version(ref->version);
  absl::StatusOr<std::optional<std::string>> training = FileId(*body, "training_file");
  if (!training.ok()) return training.status();
  if (!*training) return FieldError("training_file", "is required");
  req.set_training_dataset_id(**training);
  absl::StatusOr<std::optional<std::string>> validation = FileId(*body, "validation_file");
  if (!validation.ok()) return validation.status();
  if (*validation) req.set_validation_dataset_id(**validation);

  absl::StatusOr<std::optional<std::string>> suffix = GetString(*body, "suffix");
  if (!suffix.ok()) return suffix.status();
  if (*suffix) {
    // Checked here too so the 400 comes before any lookup (the message names the field: param "suffix").
    if (absl::Status s = ValidateJobSuffix(**suffix); !s.ok()) return s;
    req.set_suffix(**suffix);
  }
  absl::StatusOr<std::optional<bool>> promote = GetBool(*body, "auto_promote");
  if (!promote.ok()) return promote.status();
  req.set_auto_promote(promote->value_or(false));
  req.set_idempotency_key(call.req.get_header_value("Idempotency-Key"));

  // OpenAI's newer `method: {type: "supervised", supervised: {hyperparameters}}` or the top-level field.
  Json hp = Json::object();
  absl::StatusOr<std::optional<Json>> method = GetObject(*body, "method");
  if (!method.ok()) return method.status();
  if (*method) {
    absl::StatusOr<std::optional<std::string>> type = GetString(**method, "type", "method.type");
    if (!type.ok()) return type.status();
    if (type->value_or("supervised") != "supervised") {
      return FieldError("method.type", "only \"supervised\" is supported, got \"" + **type + "\"");
    }
    absl::StatusOr<std::optional<Json>> sup = GetObject(**method, "supervised", "method.supervised");
    if (!sup.ok()) return sup.status();
    if (*sup) {
      absl::StatusOr<std::optional<Json>> h = GetObject(**sup, "hyperparameters", "method.supervised.hyperparameters");
      if (!h.ok()) return h.status();
      if (*h) hp = **h;
    }
  }
  absl::StatusOr<std::optional<Json>> top_hp = GetObject(*body, "hyperparameters");
  if (!top_hp.ok()) return top_hp.status();
  if (*top_hp) hp = **top_hp;

  v1::Hyperparameters* h = req.mutable_hyperparameters();
  absl::StatusOr<std::optional<int64_t>> batch = AutoOr<int64_t>(hp, "batch_size", true);
  if (!batch.ok()) return batch.status();
  if (*batch) h->set_batch_size(static_cast<int32_t>(std::clamp<int64_t>(**batch, -1, INT32_MAX)));
  for (auto [key, set] : {std::pair<const char*, void (*)(v1::Hyperparameters*, int64_t)>{
                              "max_steps", [](v1::Hyperparameters* x, int64_t v) { x->set_max_steps(v); }},
                          {"seq_len", [](v1::Hyperparameters* x, int64_t v) {
                             x->set_seq_len(static_cast<int32_t>(std::clamp<int64_t>(v, -1, INT32_MAX)));
                           }},
                          {"warmup_steps", [](v1::Hyperparameters* x, int64_t v) { x->set_warmup_steps(v); }}}) {
    absl::StatusOr<std::optional<int64_t>> v = GetInt(hp, key, std::string("hyperparameters.") + key);
    if (!v.ok()) return v.status();
    if (*v) set(h, **v);
  }
  for (auto [key, set] : {std::pair<const char*, void (*)(v1::Hyperparameters*, double)>{
                              "learning_rate", [](v1::Hyperparameters* x, double v) { x->set_learning_rate(v); }},
                          {"weight_decay", [](v1::Hyperparameters* x, double v) { x->set_weight_decay(v); }}}) {
    absl::StatusOr<std::optional<double>> v = GetNumber(hp, key, std::string("hyperparameters.") + key);
    if (!v.ok()) return v.status();
    if (*v) set(h, **v);
  }
  absl::StatusOr<std::optional<int64_t>> seed = GetInt(*body, "seed");
  if (!seed.ok()) return seed.status();
  if (*seed) h->set_seed(static_cast<uint64_t>(**seed));
  absl::StatusOr<std::optional<int64_t>> epochs = AutoOr<int64_t>(hp, "n_epochs", true);
  if (!epochs.ok()) return epochs.status();
  if (*epochs && **epochs < 1) return FieldError("hyperparameters.n_epochs", absl::StrCat("must be >= 1, got ", **epochs));
  absl::StatusOr<std::optional<double>> lr_mult = AutoOr<double>(hp, "learning_rate_multiplier", false);
  if (!lr_mult.ok()) return lr_mult.status();
  if (*lr_mult && !(**lr_mult > 0 && std::isfinite(**lr_mult))) {
    return FieldError("hyperparameters.learning_rate_multiplier", absl::StrCat("must be > 0, got ", **lr_mult));
  }
  if ((*epochs && h->has_max_steps()) || (*lr_mult && h->has_learning_rate())) {
    return FieldError("hyperparameters", "give n_epochs or max_steps, learning_rate_multiplier or learning_rate, not both");
  }
  if (*epochs || *lr_mult) {
    // Resolve what the job would run with (the auto rule sizes it from the training file), then turn
    // epochs into steps and the multiplier into a rate.
    absl::StatusOr<storage::Dataset> d = call.env.registry->GetDataset(ref->tenant, req.training_dataset_id());
    if (!d.ok()) return RenameFields(absl::Status(d.status().code(), absl::StrCat("training_file: ", d.status().message())));
    JobRequest jr = FromProto(req);
    jr.training_examples = d->num_examples;
    jr.training_tokens = d->num_tokens;
    absl::StatusOr<int64_t> live = call.env.registry->GetLive(ref->tenant);
    if (!live.ok()) return live.status();
    absl::StatusOr<JobSpec> spec = ValidateAndFill(jr, call.env.backbone, *live);
    if (!spec.ok()) return spec.status();
    if (*epochs) {
      h->set_batch_size(static_cast<int32_t>(spec->batch_size));
      // More epochs than kMaxSteps cannot change the clamped result (each epoch is >= 1 step); capping
      // first keeps the product far from overflow for any n_epochs a client sends.
      int64_t epochs_capped = std::min<int64_t>(**epochs, kMaxSteps);
      int64_t steps = (epochs_capped * d->num_examples + spec->batch_size - 1) / spec->batch_size;
      h->set_max_steps(std::clamp<int64_t>(steps, 1, kMaxSteps));
    }
    if (*lr_mult) h->set_learning_rate(std::min(1.0, **lr_mult * spec->learning_rate));
  }

  v1::Job job;
  if (absl::Status s = CreateJobFor(call.env, call.principal, req, &job); !s.ok()) return RenameFields(s);
  SendJson(call.res, JobObject(job));
  return absl::OkStatus();
}

// An ADMIN key without X-Tessera-Tenant looks jobs up across tenants ("").
absl::StatusOr<std::string> JobTenant(Call& call) { return TenantOf(call.env, call.principal, call.req, true); }

absl::StatusOr<int> Limit(const httplib::Request& req) {
  if (!req.has_param("limit")) return kDefaultListLimit;
  int limit = 0;
  if (!absl::SimpleAtoi(req.get_param_value("limit"), &limit) || limit < 1 || limit > kMaxListLimit) {
    return FieldError("limit", absl::StrCat("must be an integer in [1, ", kMaxListLimit, "]"));
  }
  return limit;
}

absl::Status List(Call& call) {
  absl::StatusOr<std::string> tenant = JobTenant(call);
  if (!tenant.ok()) return tenant.status();
  absl::StatusOr<int> limit = Limit(call.req);
  if (!limit.ok()) return limit.status();
  std::string after = call.req.get_param_value("after");
  // Newest first; `after` is the id of the last job of the previous page.
  Json data = Json::array();
  bool passed_after = after.empty(), has_more = false;
  std::string token;
  do {
    v1::ListJobsResponse page;
    if (absl::Status s = ListJobsFor(call.env, *tenant, kMaxListLimit, token, &page); !s.ok()) return s;
    for (const v1::Job& j : page.jobs()) {
      if (!passed_after) {
        passed_after = j.job_id() == after;
        continue;
      }
      if (static_cast<int>(data.size()) == *limit) {
        has_more = true;
        break;
      }
      data.push_back(JobObject(j));
    }
    token = page.next_page_token();
  } while (!has_more && !token.empty());
  if (!passed_after) return FieldError("after", "no such job: " + after);
  SendJson(call.res, Json{{"object", "list"}, {"data", std::move(data)}, {"has_more", has_more}});
  return absl::OkStatus();
}

absl::Status Get(Call& call) {
  absl::StatusOr<std::string> tenant = JobTenant(call);
  if (!tenant.ok()) return tenant.status();
  absl::StatusOr<storage::Job> job = call.env.registry->GetJob(*tenant, call.req.matches[1]);
  if (!job.ok()) return job.status();
  v1::Job out;
  ToProto(*job, &out);
  SendJson(call.res, JobObject(out));
  return absl::OkStatus();
}

absl::Status Cancel(Call& call) {
  absl::StatusOr<std::string> tenant = JobTenant(call);
  if (!tenant.ok()) return tenant.status();
  std::string job_id = call.req.matches[1];
  if (tenant->empty()) {  // CancelJob needs the tenant: find it
    absl::StatusOr<storage::Job> job = call.env.registry->GetJob("", job_id);
    if (!job.ok()) return job.status();
    *tenant = job->tenant_id;
  }
  v1::Job out;
  if (absl::Status s = CancelJobFor(call.env, *tenant, job_id, Actor(call.principal), &out); !s.ok()) return s;
  SendJson(call.res, JobObject(out));
  return absl::OkStatus();
}

absl::Status Events(Call& call) {
  absl::StatusOr<std::string> tenant = JobTenant(call);
  if (!tenant.ok()) return tenant.status();
  absl::StatusOr<int> limit = Limit(call.req);
  if (!limit.ok()) return limit.status();
  std::string job_id = call.req.matches[1];
  absl::StatusOr<storage::Job> job = call.env.registry->GetJob(*tenant, job_id);
  if (!job.ok()) return job.status();
  absl::StatusOr<std::vector<storage::JobEvent>> events = call.env.registry->ListJobEvents(job->tenant_id, job_id, 0);
  if (!events.ok()) return events.status();
  // Newest first; `after` is an event id: only older events follow it.
  int64_t before = INT64_MAX;
  if (std::string after = call.req.get_param_value("after"); !after.empty()) {
    size_t dash = after.rfind('-');
    if (dash == std::string::npos || !absl::SimpleAtoi(after.substr(dash + 1), &before)) {
      return FieldError("after", "not an event id of this job: " + after);
    }
  }
  Json data = Json::array();
  bool has_more = false;
  for (auto it = events->rbegin(); it != events->rend(); ++it) {
    if (it->seq >= before) continue;
    if (static_cast<int>(data.size()) == *limit) {
      has_more = true;
      break;
    }
    v1::JobEvent e;
    ToProto(*it, &e);
    data.push_back(EventObject(e));
  }
  SendJson(call.res, Json{{"object", "list"}, {"data", std::move(data)}, {"has_more", has_more}});
  return absl::OkStatus();
}

Json OrNull(bool has, int64_t v) { return has ? Json(v) : Json(nullptr); }

}  // namespace

const char* OpenAiJobStatus(v1::JobState state) {
  switch (state) {
    case v1::QUEUED: return "queued";
    case v1::RUNNING: return "running";
    case v1::SUCCEEDED: return "succeeded";
    case v1::FAILED: return "failed";
    case v1::CANCELLED: return "cancelled";
    default: return "queued";
  }
}

Json JobObject(const v1::Job& j) {
  const v1::Hyperparameters& r = j.resolved_hyperparameters().hyperparameters();
  const v1::Hyperparameters& h = j.resolved_hyperparameters().has_hyperparameters() ? r : j.hyperparameters();
  Json error = nullptr;
  if (j.state() == v1::FAILED) error = Json{{"code", "job_failed"}, {"message", j.error()}, {"param", nullptr}};
  return Json{
      {"id", j.job_id()},
      {"object", "fine_tuning.job"},
      {"created_at", j.created_at().seconds()},
      {"finished_at", OrNull(j.has_finished_at(), j.finished_at().seconds())},
      {"model", FormatModelName(j.tenant_id(), j.base_version())},
      {"fine_tuned_model", j.has_result_version() ? Json(FormatModelName(j.tenant_id(), j.result_version())) : Json(nullptr)},
      {"organization_id", j.tenant_id()},
      {"result_files", Json::array()},
      {"status", OpenAiJobStatus(j.state())},
      {"training_file", j.training_dataset_id()},
      {"validation_file", j.validation_dataset_id().empty() ? Json(nullptr) : Json(j.validation_dataset_id())},
      {"hyperparameters",
       {{"n_epochs", "auto"},
        {"batch_size", h.batch_size()},
        {"learning_rate_multiplier", "auto"},
        {"max_steps", h.max_steps()},
        {"learning_rate", h.learning_rate()},
        {"seq_len", h.seq_len()},
        {"warmup_steps", h.warmup_steps()},
        {"weight_decay", h.weight_decay()}}},
      {"seed", h.seed()},
      {"user_provided_suffix", j.suffix().empty() ? Json(nullptr) : Json(j.suffix())},
      {"trained_tokens", nullptr},
      {"error", error},
      {"estimated_finish", nullptr},
      {"integrations", Json::array()},
      {"tessera",
       {{"state", v1::JobState_Name(j.state())},
        {"step", j.progress().step()},
        {"max_steps", j.progress().max_steps()},
        {"train_loss", j.progress().train_loss()},
        {"val_loss", j.progress().val_loss()},
        {"result_version", OrNull(j.has_result_version(), j.result_version())},
        {"promoted", j.promoted()},
        {"attempts", j.attempts()}}}};
}

Json EventObject(const v1::JobEvent& e) {
  std::string message;
  std::string level = "info";
  std::string type = "message";
  Json data = Json::object();
  switch (e.event_case()) {
    case v1::JobEvent::kState:
      message = absl::StrCat("Job ", OpenAiJobStatus(e.state().state()),
                             e.state().message().empty() ? "" : ": ", e.state().message());
      if (e.state().state() == v1::FAILED) level = "error";
      data = {{"status", OpenAiJobStatus(e.state().state())}};
      break;
    case v1::JobEvent::kSelection: {
      Json slots = Json::array();
      for (const v1::Slot& s : e.selection().slots()) slots.push_back({{"layer", s.layer()}, {"expert", s.expert()}});
      message = absl::StrCat("Selected ", e.selection().slots_size(), " expert slots");
      data = {{"slots", slots}};
      break;
    }
    case v1::JobEvent::kProgress:
      type = "metrics";
      message = absl::StrCat("Step ", e.progress().step(), "/", e.progress().max_steps(),
                             ": training loss=", e.progress().train_loss());
      data = {{"step", e.progress().step()},
              {"total_steps", e.progress().max_steps()},
              {"train_loss", e.progress().train_loss()},
              {"valid_loss", e.progress().val_loss()},
              {"tokens_per_second", e.progress().tokens_per_second()},
              {"eta_seconds", e.eta_seconds()}};
      break;
    case v1::JobEvent::kEval:
      type = "metrics";
      message = absl::StrCat("Step ", e.eval().step(), ": validation loss=", e.eval().val_loss(),
                             " (base ", e.eval().base_val_loss(), ")");
      data = {{"step", e.eval().step()}, {"valid_loss", e.eval().val_loss()}, {"base_valid_loss", e.eval().base_val_loss()}};
      break;
    case v1::JobEvent::kVersion:
      message = absl::StrCat("New version ", e.version().version(), e.version().promoted() ? " (live)" : "",
                             e.version().reason().empty() ? "" : ": ", e.version().reason());
      data = {{"version", e.version().version()}, {"promoted", e.version().promoted()}};
      break;
    case v1::JobEvent::kLog: message = e.log(); break;
    default: message = e.type(); break;
  }
  return Json{{"id", absl::StrCat("ftevent-", e.job_id(), "-", e.seq())},
              {"object", "fine_tuning.job.event"},
              {"created_at", e.created_at().seconds()},
              {"level", level},
              {"message", message},
              {"type", type},
              {"data", data},
              {"tessera", {{"seq", e.seq()}, {"type", e.type()}}}};
}

void RegisterFineTuning(Router& router) {
  router.Post("/v1/fine_tuning/jobs", "/v1/fine_tuning/jobs", storage::kScopeFineTune, Create);
  router.Get("/v1/fine_tuning/jobs", "/v1/fine_tuning/jobs", storage::kScopeRead, List);
  router.Get(R"(/v1/fine_tuning/jobs/([^/]+))", "/v1/fine_tuning/jobs/{id}", storage::kScopeRead, Get);
  router.Get(R"(/v1/fine_tuning/jobs/([^/]+)/events)", "/v1/fine_tuning/jobs/{id}/events", storage::kScopeRead, Events);
  router.Post(R"(/v1/fine_tuning/jobs/([^/]+)/cancel)", "/v1/fine_tuning/jobs/{id}/cancel", storage::kScopeFineTune, Cancel);
}

}  // namespace tessera::services::http
