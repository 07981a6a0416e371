#include "services/convert.h"

#include <algorithm>

#include "nlohmann/json.hpp"
#include "services/status_util.h"

namespace tessera::services {
namespace {

using nlohmann::json;

void SlotsToProto(const std::vector<SlotId>& slots, google::protobuf::RepeatedPtrField<v1::Slot>* out) {
  for (const SlotId& s : slots) {
    v1::Slot* p = out->Add();
    p->set_layer(s.layer);
    p->set_expert(s.expert);
  }
}

void ProgressToProto(const storage::JobProgress& in, v1::JobProgress* out) {
  out->set_step(in.step);
  out->set_max_steps(in.max_steps);
  out->set_train_loss(in.train_loss);
  out->set_val_loss(in.val_loss);
  out->set_tokens_per_second(in.tokens_per_second);
}

template <typename T>
T Get(const json& j, const char* key, T fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    return fallback;
  }
}

}  // namespace

v1::JobState ToProto(storage::JobState state) {
  switch (state) {
    case storage::JobState::kQueued: return v1::QUEUED;
    case storage::JobState::kRunning: return v1::RUNNING;
    case storage::JobState::kSucceeded: return v1::SUCCEEDED;
    case storage::JobState::kFailed: return v1::FAILED;
    case storage::JobState::kCancelled: return v1::CANCELLED;
  }
  return v1::JOB_STATE_UNSPECIFIED;
}

void ToProto(const storage::Dataset& in, v1::Dataset* out) {
  out->set_dataset_id(in.dataset_id);
  out->set_tenant_id(in.tenant_id);
  out->set_name(in.name);
  out->set_format(in.format);
  out->set_num_examples(in.num_examples);
  out->set_num_tokens(in.num_tokens);
  out->set_sha256(in.sha256);
  out->set_size_bytes(in.size_bytes);
  SetTimestamp(in.created_at_us, out->mutable_created_at());
}

void ToProto(const storage::Tenant& in, int64_t live_version, v1::Tenant* out) {
  out->set_tenant_id(in.tenant_id);
  out->set_display_name(in.display_name);
  SetTimestamp(in.created_at_us, out->mutable_created_at());
  out->set_live_version(live_version);
}

void ToProto(const storage::ApiKey& in, v1::ApiKey* out) {
  out->set_key_id(in.key_id);
  out->set_tenant_id(in.tenant_id);
  out->set_role(in.role == storage::Role::kAdmin ? v1::ADMIN : v1::TENANT);
  SetTimestamp(in.created_at_us, out->mutable_created_at());
  if (in.revoked_at_us != 0) SetTimestamp(in.revoked_at_us, out->mutable_revoked_at());
  for (storage::Scope s : {storage::kScopeInference, storage::kScopeFineTune, storage::kScopeRead}) {
    if (in.scopes & s) out->add_scopes(std::string(storage::ScopeName(s)));
  }
  if (in.expires_at_us != 0) SetTimestamp(in.expires_at_us, out->mutable_expires_at());
  if (in.last_used_at_us != 0) SetTimestamp(in.last_used_at_us, out->mutable_last_used_at());
}

void ToProto(const storage::ExpertVersion& in, v1::ExpertVersion* out) {
  out->set_version(in.version);
  out->set_tenant_id(in.tenant_id);
  if (absl::StatusOr<std::vector<SlotId>> slots = SlotsFromJson(in.slots_json); slots.ok()) {
    SlotsToProto(*slots, out->mutable_slots());
  }
  out->set_parent_version(in.parent_version);
  out->set_job_id(in.job_id);
  out->mutable_metrics()->set_val_loss(in.val_loss.value_or(0));
  out->mutable_metrics()->set_base_val_loss(in.base_val_loss.value_or(0));
  if (in.general_loss) out->mutable_metrics()->set_general_loss(*in.general_loss);
  if (in.base_general_loss) out->mutable_metrics()->set_base_general_loss(*in.base_general_loss);
  out->mutable_metrics()->set_promotion_decision(in.promotion_decision);
  out->mutable_metrics()->set_promotion_reason(in.promotion_reason);
  out->set_sha256(in.sha256);
  out->set_size_bytes(in.size_bytes);
  SetTimestamp(in.created_at_us, out->mutable_created_at());
  out->set_live(in.live);
  out->set_backbone_sha256(in.backbone_sha256);
  out->set_method(in.method);
  out->set_lora_rank(static_cast<int32_t>(in.lora_rank));
}

void ToProto(const storage::Job& in, v1::Job* out) {
  out->set_job_id(in.job_id);
  out->set_tenant_id(in.tenant_id);
  out->set_state(ToProto(in.state));
  SetTimestamp(in.created_at_us, out->mutable_created_at());
  if (in.started_at_us) SetTimestamp(in.started_at_us, out->mutable_started_at());
  if (in.finished_at_us) SetTimestamp(in.finished_at_us, out->mutable_finished_at());
  ProgressToProto(in.progress, out->mutable_progress());
  if (absl::StatusOr<std::vector<SlotId>> slots = SlotsFromJson(in.selected_slots); slots.ok()) {
    SlotsToProto(*slots, out->mutable_selected_slots());
  }
  if (in.result_version) out->set_result_version(*in.result_version);
  out->set_promoted(in.promoted);
  out->set_error(in.error);
  out->set_training_dataset_id(in.training_dataset_id);
  out->set_validation_dataset_id(in.validation_dataset_id);
  out->set_idempotency_key(in.idempotency_key);
  out->set_attempts(in.attempts);
  if (absl::StatusOr<JobSpec> spec = JobSpec::FromJson(in.spec); spec.ok()) {
    v1::Hyperparameters* h = out->mutable_hyperparameters();
    h->set_max_steps(spec->max_steps);
    h->set_batch_size(static_cast<int32_t>(spec->batch_size));
    h->set_seq_len(static_cast<int32_t>(spec->seq_len));
    h->set_learning_rate(spec->learning_rate);
    h->set_warmup_steps(spec->warmup_steps);
    h->set_weight_decay(spec->weight_decay);
    h->set_seed(spec->seed);
    if (spec->auto_select) {
      v1::AutoSelection* a = out->mutable_expert_selection()->mutable_auto_();
      a->set_relevance_threshold(spec->relevance_threshold);
      a->set_max_experts(static_cast<int32_t>(spec->max_experts));
    } else {
      SlotsToProto(spec->slots, out->mutable_expert_selection()->mutable_explicit_()->mutable_slots());
    }
    out->set_base_version(spec->base_version);
    out->set_auto_promote(spec->auto_promote);
    v1::ResolvedHyperparameters* rh = out->mutable_resolved_hyperparameters();
    *rh->mutable_hyperparameters() = *h;
    if (spec->auto_select) {
      rh->set_relevance_threshold(spec->relevance_threshold);
      rh->set_max_experts(static_cast<int32_t>(spec->max_experts));
    }
    rh->set_eval_every(spec->eval_every > 0 ? spec->eval_every : std::max<int64_t>(1, spec->max_steps / 5));
    rh->set_early_stopping_patience(static_cast<int32_t>(spec->early_stopping_patience));
    rh->set_keep_best(spec->keep_best);
    for (const std::string& f : spec->auto_fields) rh->add_auto_fields(f);
    out->set_method(spec->method);
    out->set_lora_rank(static_cast<int32_t>(spec->lora_rank));
  }
  out->set_suffix(in.suffix);
}

void ToProto(const storage::JobEvent& in, v1::JobEvent* out) {
  out->set_job_id(in.job_id);
  out->set_seq(in.seq);
  SetTimestamp(in.created_at_us, out->mutable_created_at());
  out->set_type(in.type);
  json j = json::parse(in.payload, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    out->set_log(in.payload);
    return;
  }
  if (in.type == "state") {
    v1::StateChange* s = out->mutable_state();
    absl::StatusOr<storage::JobState> st = storage::ParseJobState(Get<std::string>(j, "state", ""));
    s->set_state(st.ok() ? ToProto(*st) : v1::JOB_STATE_UNSPECIFIED);
    s->set_message(Get<std::string>(j, "error", ""));
  } else if (in.type == "selection") {
    v1::SlotsSelected* s = out->mutable_selection();
    if (j.contains("slots")) {
      if (auto slots = SlotsFromJson(j["slots"].dump()); slots.ok()) SlotsToProto(*slots, s->mutable_slots());
    }
    for (double v : Get<std::vector<double>>(j, "scores", {})) s->add_scores(v);
  } else if (in.type == "progress") {
    v1::JobProgress* p = out->mutable_progress();
    p->set_step(Get<int64_t>(j, "step", 0));
    p->set_max_steps(Get<int64_t>(j, "max_steps", 0));
    p->set_train_loss(Get<double>(j, "train_loss", 0));
    p->set_val_loss(Get<double>(j, "val_loss", 0));
    p->set_tokens_per_second(Get<double>(j, "tokens_per_second", 0));
    out->set_eta_seconds(Get<double>(j, "eta_seconds", 0));
  } else if (in.type == "eval") {
    v1::Evaluation* e = out->mutable_eval();
    e->set_step(Get<int64_t>(j, "step", 0));
    e->set_val_loss(Get<double>(j, "val_loss", 0));
    e->set_base_val_loss(Get<double>(j, "base_val_loss", 0));
  } else if (in.type == "version") {
    v1::VersionPublished* v = out->mutable_version();
    v->set_version(Get<int64_t>(j, "version", 0));
    v->set_promoted(Get<bool>(j, "promoted", false));
    v->set_reason(Get<std::string>(j, "reason", ""));
  } else {
    out->set_log(Get<std::string>(j, "message", in.payload));
  }
}

JobRequest FromProto(const v1::CreateJobRequest& in) {
  JobRequest r;
  r.training_dataset_id = in.training_dataset_id();
  r.validation_dataset_id = in.validation_dataset_id();
  const v1::Hyperparameters& h = in.hyperparameters();
  if (h.has_max_steps()) r.max_steps = h.max_steps();
  if (h.has_batch_size()) r.batch_size = h.batch_size();
  if (h.has_seq_len()) r.seq_len = h.seq_len();
  if (h.has_learning_rate()) r.learning_rate = h.learning_rate();
  if (h.has_warmup_steps()) r.warmup_steps = h.warmup_steps();
  if (h.has_weight_decay()) r.weight_decay = h.weight_decay();
  if (h.has_seed()) r.seed = h.seed();
  const v1::ExpertSelection& sel = in.expert_selection();
  if (sel.has_explicit_()) {
    r.selection = JobRequest::Selection::kExplicit;
    for (const v1::Slot& s : sel.explicit_().slots()) r.slots.push_back({s.layer(), s.expert()});
  } else if (sel.has_auto_()) {
    r.selection = JobRequest::Selection::kAuto;
    r.relevance_threshold = sel.auto_().relevance_threshold();
    r.max_experts = sel.auto_().max_experts();
  }
  if (in.has_base_version()) r.base_version = in.base_version();
  r.auto_promote = in.auto_promote();
  if (in.has_max_general_regression()) r.max_general_regression = in.max_general_regression();
  r.idempotency_key = in.idempotency_key();
  r.method = in.method();
  r.lora_rank = in.lora_rank();
  return r;
}

std::string SelectionEventJson(const std::vector<SlotId>& slots, const std::vector<double>& scores) {
  return json{{"slots", json::parse(SlotsToJson(slots))}, {"scores", scores}}.dump();
}

std::string ProgressEventJson(const storage::JobProgress& p, double eta_seconds) {
  return json{{"step", p.step},
              {"max_steps", p.max_steps},
              {"train_loss", p.train_loss},
              {"val_loss", p.val_loss},
              {"tokens_per_second", p.tokens_per_second},
              {"eta_seconds", eta_seconds}}
      .dump();
}

std::string EvalEventJson(int64_t step, double val_loss, double base_val_loss) {
  return json{{"step", step}, {"val_loss", val_loss}, {"base_val_loss", base_val_loss}}.dump();
}

std::string VersionEventJson(int64_t version, bool promoted, const std::string& reason) {
  return json{{"version", version}, {"promoted", promoted}, {"reason", reason}}.dump();
}

std::string LogEventJson(const std::string& message) {
  return json{{"message", message}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace tessera::services
