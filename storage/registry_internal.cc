// Shared registry helpers: JSON quoting, ids, audit, row decoding and the job state transition.
#include "storage/registry_internal.h"

#include <optional>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "storage/sv.h"
#include "storage/random_id.h"

namespace tessera::storage::internal {

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += "\"";
  return out;
}

absl::Status LockBlobReferences(Conn& c) {
  if (c.dialect() != Dialect::kPostgres) return absl::OkStatus();
  return c.ExecScript("LOCK TABLE blob_refs_lock IN EXCLUSIVE MODE");
}

absl::StatusOr<std::string> NewId(std::string_view prefix) {
  absl::StatusOr<std::string> r = RandomBase62(16);
  if (!r.ok()) return r.status();
  return absl::StrCat(Sv(prefix), *r);
}

absl::Status AppendAudit(Conn& c, const std::string& actor, std::string_view action,
                         const std::string& target, const std::string& detail,
                         const std::string& tenant_id, const std::string& result) {
  std::string tenant = tenant_id;
  if (tenant.empty()) {
    auto id_after = [&](std::string_view prefix) -> std::optional<std::string> {
      if (target.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
      return target.substr(prefix.size());
    };
    if (auto t = id_after("tenant/")) {
      tenant = t->substr(0, t->find('/'));
    } else {
      static constexpr std::pair<std::string_view, std::string_view> kLookups[] = {
          {"job/", "SELECT tenant_id FROM jobs WHERE job_id = ?1"},
          {"dataset/", "SELECT tenant_id FROM datasets WHERE dataset_id = ?1"},
          {"apikey/", "SELECT COALESCE(tenant_id, '') FROM api_keys WHERE key_id = ?1"}};
      for (const auto& [prefix, sql] : kLookups) {
        std::optional<std::string> id = id_after(prefix);
        if (!id) continue;
        absl::StatusOr<Stmt> st = c.Prepare(sql, *id);
        if (!st.ok()) return st.status();
        absl::StatusOr<bool> row = st->Step();
        if (!row.ok()) return row.status();
        if (*row) tenant = st->Text(0);
        break;
      }
    }
  }
  return c.Exec(
      "INSERT INTO audit_log(actor, action, target, detail, created_at_us, tenant_id, result) "
      "VALUES (?1,?2,?3,?4,?5,?6,?7)",
      actor.empty() ? std::string("system") : actor, action, target, detail, NowMicros(), tenant,
      result.empty() ? std::string("OK") : result);
}

absl::Status RequireTenant(Conn& c, const std::string& tenant_id) {
  absl::StatusOr<int64_t> n =
      c.QueryInt("SELECT COUNT(*) FROM tenants WHERE tenant_id = ?1", 0, tenant_id);
  if (!n.ok()) return n.status();
  if (*n == 0) return absl::NotFoundError(absl::StrCat("tenant '", tenant_id, "' not found"));
  return absl::OkStatus();
}

absl::Status JobNotFound(const std::string& job_id) {
  return absl::NotFoundError(absl::StrCat("job '", job_id, "' not found"));
}
absl::Status DatasetNotFound(const std::string& dataset_id) {
  return absl::NotFoundError(absl::StrCat("dataset '", dataset_id, "' not found"));
}
absl::Status VersionNotFound(const std::string& tenant_id, int64_t version) {
  return absl::NotFoundError(
      absl::StrCat("expert version ", version, " of tenant '", tenant_id, "' not found"));
}

const char kJobColumns[] =
    "job_id, tenant_id, spec, training_dataset_id, validation_dataset_id, "
    "COALESCE(idempotency_key, ''), state, attempts, lease_owner, lease_expires_at_us, "
    "created_at_us, started_at_us, finished_at_us, error, result_version, promoted, step, "
    "max_steps, train_loss, val_loss, tokens_per_second, selected_slots, checkpoint, request, suffix";

Job ReadJob(const Stmt& st) {
  Job j;
  j.job_id = st.Text(0);
  j.tenant_id = st.Text(1);
  j.spec = st.Text(2);
  j.training_dataset_id = st.Text(3);
  j.validation_dataset_id = st.Text(4);
  j.idempotency_key = st.Text(5);
  j.state = ParseJobState(st.Text(6)).value_or(JobState::kFailed);
  j.attempts = st.Int(7);
  j.lease_owner = st.Text(8);
  j.lease_expires_at_us = st.Int(9);
  j.created_at_us = st.Int(10);
  j.started_at_us = st.Int(11);
  j.finished_at_us = st.Int(12);
  j.error = st.Text(13);
  j.result_version = st.OptInt(14);
  j.promoted = st.Int(15) != 0;
  j.progress.step = st.Int(16);
  j.progress.max_steps = st.Int(17);
  j.progress.train_loss = st.Real(18);
  j.progress.val_loss = st.Real(19);
  j.progress.tokens_per_second = st.Real(20);
  j.selected_slots = st.Text(21);
  j.checkpoint = st.Text(22);
  j.request = st.Text(23);
  j.suffix = st.Text(24);
  return j;
}

const char kDatasetColumns[] =
    "dataset_id, tenant_id, name, format, blob_digest, size_bytes, num_examples, num_tokens, "
    "created_at_us, num_loss_tokens";

Dataset ReadDataset(const Stmt& st) {
  Dataset d;
  d.dataset_id = st.Text(0);
  d.tenant_id = st.Text(1);
  d.name = st.Text(2);
  d.format = st.Text(3);
  d.sha256 = st.Text(4);
  d.size_bytes = st.Int(5);
  d.num_examples = st.Int(6);
  d.num_tokens = st.Int(7);
  d.created_at_us = st.Int(8);
  d.num_loss_tokens = st.Int(9);
  return d;
}

const char kVersionColumns[] =
    "tenant_id, version, parent_version, job_id, slots_json, val_loss, base_val_loss, blob_digest, "
    "size_bytes, created_at_us, backbone_sha256, method, lora_rank, general_loss, base_general_loss, "
    "promotion_decision, promotion_reason";

ExpertVersion ReadVersion(const Stmt& st) {
  ExpertVersion v;
  v.tenant_id = st.Text(0);
  v.version = st.Int(1);
  v.parent_version = st.Int(2);
  v.job_id = st.Text(3);
  v.slots_json = st.Text(4);
  v.val_loss = st.OptReal(5);
  v.base_val_loss = st.OptReal(6);
  v.sha256 = st.Text(7);
  v.size_bytes = st.Int(8);
  v.created_at_us = st.Int(9);
  v.backbone_sha256 = st.Text(10);
  v.method = st.Text(11);
  v.lora_rank = st.Int(12);
  v.general_loss = st.OptReal(13);
  v.base_general_loss = st.OptReal(14);
  v.promotion_decision = st.Text(15);
  v.promotion_reason = st.Text(16);
  return v;
}

const char kChangeColumns[] =
    "seq, tenant_id, kind, version, live_version, previous_live, actor, created_at_us";

Change ReadChange(const Stmt& st) {
  Change ch;
  ch.seq = st.Int(0);
  ch.tenant_id = st.Text(1);
  const std::string kind = st.Text(2);
  ch.kind = kind == "promote"    ? ChangeKind::kPromote
            : kind == "rollback" ? ChangeKind::kRollback
                                 : ChangeKind::kPublish;
  ch.version = st.Int(3);
  ch.live_version = st.Int(4);
  ch.previous_live = st.Int(5);
  ch.actor = st.Text(6);
  ch.created_at_us = st.Int(7);
  return ch;
}

absl::StatusOr<Job> LoadJob(Conn& c, const std::string& tenant_id, const std::string& job_id) {
  absl::StatusOr<Stmt> st =
      c.Prepare(absl::StrCat("SELECT ", kJobColumns,
                             " FROM jobs WHERE job_id = ?1 AND (?2 = '' OR tenant_id = ?2)"),
                job_id, tenant_id);
  if (!st.ok()) return st.status();
  absl::StatusOr<bool> row = st->Step();
  if (!row.ok()) return row.status();
  if (!*row) return JobNotFound(job_id);
  return ReadJob(*st);
}

absl::StatusOr<int64_t> AppendEvent(Conn& c, const std::string& job_id, std::string_view type,
                                    const std::string& payload) {
  absl::StatusOr<int64_t> last =
      c.QueryInt("SELECT MAX(seq) FROM job_events WHERE job_id = ?1", 0, job_id);
  if (!last.ok()) return last.status();
  const int64_t seq = *last + 1;
  absl::Status s = c.Exec(
      "INSERT INTO job_events(job_id, seq, type, payload, created_at_us) VALUES (?1,?2,?3,?4,?5)",
      job_id, seq, type, payload, NowMicros());
  if (!s.ok()) return s;
  return seq;
}

absl::StatusOr<int64_t> TransitionJob(Conn& c, const Job& job, JobState to,
                                      const std::string& error) {
  if (absl::Status s = CheckJobTransition(job.state, to); !s.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("job '", job.job_id, "': ", s.message()));
  }
  const bool terminal = IsTerminal(to);
  const bool running = to == JobState::kRunning;
  absl::Status s = c.Exec(
      "UPDATE jobs SET state = ?2, error = CASE WHEN ?3 <> '' THEN ?3 ELSE error END, "
      "finished_at_us = CASE WHEN ?4 <> 0 THEN ?5 ELSE finished_at_us END, "
      "lease_owner = CASE WHEN ?6 <> 0 THEN lease_owner ELSE '' END, "
      "lease_expires_at_us = CASE WHEN ?6 <> 0 THEN lease_expires_at_us ELSE 0 END "
      "WHERE job_id = ?1",
      job.job_id, JobStateName(to), error, terminal, NowMicros(), running);
  if (!s.ok()) return s;
  std::string payload = absl::StrCat("{\"state\":", JsonString(JobStateName(to)),
                                     ",\"previous\":", JsonString(JobStateName(job.state)));
  if (!error.empty()) absl::StrAppend(&payload, ",\"error\":", JsonString(error));
  payload += "}";
  return AppendEvent(c, job.job_id, "state", payload);
}

}  // namespace tessera::storage::internal
