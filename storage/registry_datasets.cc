// Registry: datasets (rows naming a dataset blob; the blob is written first, by the caller).
#include "absl/strings/str_cat.h"
#include "storage/sv.h"
#include "core/util/status_macros.h"
#include "storage/registry.h"
#include "storage/registry_internal.h"

namespace tessera::storage {

absl::StatusOr<Dataset> Registry::CreateDataset(const NewDataset& in, const std::string& actor) {
  RETURN_IF_ERROR(ValidateTenantId(in.tenant_id));
  if (in.name.empty()) return absl::InvalidArgumentError("dataset name is empty");
  if (in.num_examples < 0 || in.num_tokens < 0 || in.num_loss_tokens < 0) {
    return absl::InvalidArgumentError("dataset num_examples, num_tokens and num_loss_tokens must be >= 0");
  }
  if (!BlobStore::IsValidDigest(in.blob_digest)) {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset blob_digest '", in.blob_digest, "' is not a sha256 hex digest"));
  }
  ASSIGN_OR_RETURN(std::string id, internal::NewId("ds_"));
  Dataset d;
  RETURN_IF_ERROR(pool_->Write(false, [&](Conn& c) -> absl::Status {
    RETURN_IF_ERROR(internal::LockBlobReferences(c));  // first: the blob check below races the GC
    RETURN_IF_ERROR(internal::RequireTenant(c, in.tenant_id));
    // Checked inside the write transaction so it serializes with the garbage collector.
    absl::StatusOr<int64_t> size = blobs_->Size(in.blob_digest);
    if (absl::IsNotFound(size.status())) {
      return absl::FailedPreconditionError(
          absl::StrCat("dataset blob ", in.blob_digest, " is not in the blob store"));
    }
    if (!size.ok()) return size.status();
    RETURN_IF_ERROR(internal::CheckDatasetQuota(c, in.tenant_id, quotas_, *size));
    d = Dataset{id,        in.tenant_id,    in.name,          in.format,  in.blob_digest,
                *size,     in.num_examples, in.num_tokens,    NowMicros(), in.num_loss_tokens};
    RETURN_IF_ERROR(c.Exec("INSERT INTO datasets(dataset_id, tenant_id, name, format, blob_digest, "
                           "size_bytes, num_examples, num_tokens, created_at_us, num_loss_tokens) "
                           "VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
                           d.dataset_id, d.tenant_id, d.name, d.format, d.sha256, d.size_bytes,
                           d.num_examples, d.num_tokens, d.created_at_us, d.num_loss_tokens));
    return internal::AppendAudit(
        c, actor, "dataset.create", absl::StrCat("dataset/", id),
        absl::StrCat("{\"tenant_id\":", internal::JsonString(in.tenant_id), ",\"name\":",
                     internal::JsonString(in.name), ",\"sha256\":\"", in.blob_digest, "\"}"));
  }));
  return d;
}

absl::StatusOr<Dataset> Registry::GetDataset(const std::string& tenant_id,
                                             const std::string& dataset_id) {
  Dataset d;
  RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
    ASSIGN_OR_RETURN(Stmt st, c.Prepare(absl::StrCat("SELECT ", internal::kDatasetColumns,
                                                     " FROM datasets WHERE dataset_id = ?1 AND "
                                                     "(?2 = '' OR tenant_id = ?2)"),
                                        dataset_id, tenant_id));
    ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return internal::DatasetNotFound(dataset_id);
    d = internal::ReadDataset(st);
    return absl::OkStatus();
  }));
  return d;
}

absl::StatusOr<std::vector<Dataset>> Registry::ListDatasets(const std::string& tenant_id) {
  std::vector<Dataset> out;
  RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
    out.clear();
    RETURN_IF_ERROR(internal::RequireTenant(c, tenant_id));
    ASSIGN_OR_RETURN(Stmt st, c.Prepare(absl::StrCat("SELECT ", internal::kDatasetColumns,
                                                     " FROM datasets WHERE tenant_id = ?1 "
                                                     "ORDER BY id DESC"),
                                        tenant_id));
    while (true) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      out.push_back(internal::ReadDataset(st));
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::Status Registry::DeleteDataset(const std::string& tenant_id, const std::string& dataset_id,
                                     const std::string& actor) {
  return pool_->Write(false, [&](Conn& c) -> absl::Status {
    ASSIGN_OR_RETURN(int64_t n, c.QueryInt("SELECT COUNT(*) FROM datasets WHERE dataset_id = ?1 "
                                           "AND (?2 = '' OR tenant_id = ?2)",
                                           0, dataset_id, tenant_id));
    if (n == 0) return internal::DatasetNotFound(dataset_id);
    ASSIGN_OR_RETURN(Stmt st, c.Prepare("SELECT job_id FROM jobs WHERE state IN ('QUEUED', "
                                        "'RUNNING') AND (training_dataset_id = ?1 OR "
                                        "validation_dataset_id = ?1) LIMIT 1",
                                        dataset_id));
    ASSIGN_OR_RETURN(bool in_use, st.Step());
    if (in_use) {
      return absl::FailedPreconditionError(absl::StrCat(
          "dataset '", dataset_id, "' is used by job '", st.Text(0), "', which is queued or running"));
    }
    // Audited first: the entry takes its tenant from the row.
    RETURN_IF_ERROR(internal::AppendAudit(c, actor, "dataset.delete", absl::StrCat("dataset/", dataset_id), ""));
    return c.Exec("DELETE FROM datasets WHERE dataset_id = ?1", dataset_id);
  });
}

}  // namespace tessera::storage
