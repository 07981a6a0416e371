// Registry: garbage collection of unreferenced blobs -- only in the process that owns them (role all
// or control: owned_blobs_ set). Replicas and trainers (Options::blob_backend) get FAILED_PRECONDITION:
// their blobs are the control plane's, and it alone decides what is garbage.
//
// References: a blob is referenced when a dataset or version row names it, or when it is the checkpoint
// of an unfinished (QUEUED or RUNNING) job, which a requeued job resumes from however long it waits.
//
// Why it is safe against a concurrent publish: a candidate blob is deleted only (1) when nothing
// references it, checked inside a write transaction, so it serializes with PublishVersion /
// CreateDataset, which verify the blob exists inside their own write transactions; and (2) when its last
// Put (mtime, refreshed by every Put) is older than the grace period, re-checked inside that transaction,
// so a blob just written for an upcoming publish is left alone. The only remaining race (a Put landing
// between the re-check and the unlink) makes that publish fail cleanly with FAILED_PRECONDITION: a row
// can never name a missing blob.
#include <set>

#include "absl/strings/str_cat.h"
#include "storage/sv.h"
#include "core/util/status_macros.h"
#include "storage/registry.h"
#include "storage/registry_internal.h"

namespace tessera::storage {

absl::Status Registry::DeleteBlobIfUnreferenced(const std::string& digest, absl::Time cutoff,
                                                 GcStats* stats) {
  bool deleted = false;
  bool young = false;
  int64_t size = 0;
  RETURN_IF_ERROR(pool_->Write(false, [&](Conn& c) -> absl::Status {
    deleted = young = false;
    RETURN_IF_ERROR(internal::LockBlobReferences(c));
    ASSIGN_OR_RETURN(int64_t refs,
                     c.QueryInt("SELECT (SELECT COUNT(*) FROM datasets WHERE blob_digest = ?1) + "
                                "(SELECT COUNT(*) FROM versions WHERE blob_digest = ?1) + "
                                "(SELECT COUNT(*) FROM jobs WHERE checkpoint = ?1 AND "
                                "state IN ('QUEUED', 'RUNNING'))",
                                0, digest));
    if (refs > 0) return absl::OkStatus();
    absl::StatusOr<absl::Time> written = owned_blobs_->LastWritten(digest);
    if (absl::IsNotFound(written.status())) return absl::OkStatus();
    if (!written.ok()) return written.status();
    if (*written > cutoff) {
      young = true;
      return absl::OkStatus();
    }
    size = owned_blobs_->Size(digest).value_or(0);
    RETURN_IF_ERROR(owned_blobs_->Delete(digest));
    deleted = true;
    return internal::AppendAudit(c, "system", "blob.delete", absl::StrCat("blob/", digest),
                                 absl::StrCat("{\"size_bytes\":", size, "}"));
  }));
  if (deleted) {
    ++stats->blobs_deleted;
    stats->bytes_freed += size;
  }
  if (young) ++stats->blobs_kept_grace;
  return absl::OkStatus();
}

absl::StatusOr<GcStats> Registry::DeleteBlobsIfUnreferenced(const std::vector<std::string>& digests,
                                                            absl::Time written_before) {
  RETURN_IF_ERROR(RequireOwnedBlobs("DeleteBlobsIfUnreferenced"));
  GcStats stats;
  std::set<std::string> unique(digests.begin(), digests.end());
  stats.blobs_scanned = static_cast<int64_t>(unique.size());
  for (const std::string& digest : unique) {
    if (digest.empty()) continue;
    RETURN_IF_ERROR(DeleteBlobIfUnreferenced(digest, written_before, &stats));
  }
  return stats;
}

absl::StatusOr<std::set<std::string>> Registry::ReferencedBlobs(const std::vector<std::string>& digests) {
  const std::set<std::string> wanted(digests.begin(), digests.end());
  std::set<std::string> referenced;
  RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
    referenced.clear();
    ASSIGN_OR_RETURN(Stmt st, c.Prepare("SELECT blob_digest FROM datasets UNION "
                                        "SELECT blob_digest FROM versions UNION "
                                        "SELECT checkpoint FROM jobs WHERE state IN ('QUEUED', 'RUNNING') "
                                        "AND checkpoint != ''"));
    while (true) {
      ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      std::string digest = st.Text(0);
      if (wanted.count(digest)) referenced.insert(std::move(digest));
    }
    return absl::OkStatus();
  }));
  return referenced;
}

absl::StatusOr<GcStats> Registry::CollectGarbage(absl::Duration grace) {
  if (grace < absl::ZeroDuration()) return absl::InvalidArgumentError("grace must be >= 0");
  RETURN_IF_ERROR(RequireOwnedBlobs("CollectGarbage"));
  GcStats stats;
  RETURN_IF_ERROR(owned_blobs_->CollectTemps(grace).status());
  ASSIGN_OR_RETURN(std::vector<std::string> digests, owned_blobs_->ListDigests());
  stats.blobs_scanned = static_cast<int64_t>(digests.size());
  // Cheap pre-filter in one read transaction; each candidate is re-checked under the write lock below.
  ASSIGN_OR_RETURN(std::set<std::string> referenced, ReferencedBlobs(digests));
  for (const std::string& digest : digests) {
    if (referenced.count(digest)) continue;
    RETURN_IF_ERROR(DeleteBlobIfUnreferenced(digest, absl::Now() - grace, &stats));
  }
  return stats;
}

}  // namespace tessera::storage
