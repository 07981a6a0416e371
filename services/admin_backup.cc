// Admin.Backup: an online backup streamed to the client (see proto/tessera/v1/backup.proto).
//
// The snapshot (storage/backup.h) is taken on the call's own thread while the server keeps serving
// and writing: SQLite's online backup copies the registry as of one commit, and the blobs it references
// are hard-linked into a private staging dir first, so the stream is consistent whatever the garbage
// collector or a training job does meanwhile. Each file is re-hashed as it is read; a blob whose bytes
// do not match its name fails the call with DATA_LOSS rather than sending a bad backup.
#include <fstream>

#include "absl/strings/str_cat.h"
#include "core/util/sha256.h"
#include "services/admin_service.h"
#include "services/backup_manifest.h"
#include "services/log.h"
#include "storage/backup.h"

namespace tessera::services {
namespace {

constexpr int64_t kBackupChunkBytes = 1 << 20;

absl::Status StreamBackup(const ServiceEnv& env, const storage::Principal& who,
                          ThreadedWriter<v1::BackupChunk>* w) {
  const absl::Time start = absl::Now();
  if (env.registry->on_postgres()) {
    // The snapshot is SQLite's online backup of data_dir/registry.db; a PostgreSQL registry has its own
    // tools (and a stale registry.db in the data dir must not be mistaken for the live metadata).
    return absl::FailedPreconditionError(
        "the registry is in PostgreSQL (--registry postgres://...): back it up with pg_dump; Admin.Backup "
        "snapshots SQLite registries");
  }
  if (env.registry->owned_blobs() == nullptr) {
    return absl::FailedPreconditionError(
        "this process does not own the blobs (--role inference or trainer): back up the control plane");
  }
  absl::StatusOr<std::unique_ptr<storage::RegistrySnapshot>> snap =
      storage::RegistrySnapshot::Take(env.registry->data_dir());
  if (absl::IsNotFound(snap.status())) return absl::FailedPreconditionError(snap.status().message());
  if (!snap.ok()) return snap.status();
  BackupManifest m;
  m.created_at_us = absl::ToUnixMicros(absl::Now());
  m.server_version = env.server_version;
  m.schema_version = (*snap)->schema_version();
  m.backbone_name = env.backbone.name;
  m.backbone_sha256 = env.backbone.sha256;
  m.counts = (*snap)->counts();
  m.files = (*snap)->files();
  v1::BackupChunk head;
  head.set_manifest_json(m.ToJson());
  if (!w->Write(head)) return absl::CancelledError("the client went away");

  std::string buf(static_cast<size_t>(kBackupChunkBytes), '\0');
  for (const storage::BackupFile& f : m.files) {
    const std::string path = absl::StrCat((*snap)->dir(), "/", f.path);
    std::ifstream in(path, std::ios::binary);
    if (!in.is_open()) return absl::InternalError(absl::StrCat("backup file ", f.path, " vanished from the staging dir"));
    Sha256 sha;
    int64_t offset = 0;
    for (;;) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      const std::streamsize n = in.gcount();
      if (in.bad()) return absl::DataLossError(absl::StrCat("reading ", f.path, " for the backup failed"));
      const bool eof = in.eof() || in.peek() == std::char_traits<char>::eof();
      v1::BackupChunk c;
      c.set_path(f.path);
      c.set_offset(offset);
      c.set_data(buf.data(), static_cast<size_t>(n));
      sha.Update(buf.data(), static_cast<size_t>(n));
      offset += n;
      if (eof) {
        c.set_eof(true);
        c.set_sha256(sha.FinishHex());
        c.set_size_bytes(offset);
        if (c.sha256() != f.sha256 || offset != f.size_bytes) {
          return absl::DataLossError(absl::StrCat("backup: ", f.path, " reads as ", offset, " bytes with sha256 ",
                                                  c.sha256(), ", expected ", f.size_bytes, " bytes with sha256 ",
                                                  f.sha256, " (the blob store holds a corrupt blob)"));
        }
      }
      if (!w->Write(c)) return absl::CancelledError("the client went away");
      if (eof) break;
    }
  }
  const std::string detail =
      absl::StrCat("{\"files\":", m.files.size(), ",\"bytes\":", m.total_bytes(),
                   ",\"schema_version\":", m.schema_version, ",\"seconds\":",
                   absl::ToDoubleSeconds(absl::Now() - start), "}");
  if (absl::Status s = env.registry->AppendAudit(Actor(who), "backup.create", "backup", detail); !s.ok()) {
    LogWarn("backup: audit entry not written", {{"error", std::string(s.message())}});
  }
  LogInfo("backup streamed", {{"actor", Actor(who)}, {"files", m.files.size()}, {"bytes", m.total_bytes()}});
  return absl::OkStatus();
}

}  // namespace

grpc::ServerWriteReactor<v1::BackupChunk>* AdminService::Backup(grpc::CallbackServerContext* ctx,
                                                                const v1::BackupRequest* /*req*/) {
  const ServiceEnv& env = env_;
  return new ThreadedWriter<v1::BackupChunk>(
      env_, "Admin/Backup", [&env, ctx](ThreadedWriter<v1::BackupChunk>* w) -> absl::Status {
        if (absl::Status s = RequireControlPlane(env, "backup.create"); !s.ok()) return s;
        absl::StatusOr<storage::Principal> p = env.auth->AuthorizeAdmin(*ctx);
        if (!p.ok()) return p.status();
        return StreamBackup(env, *p, w);
      });
}

}  // namespace tessera::services
