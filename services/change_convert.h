// storage::Change <-> tessera.internal.v1.Change, for the watch stream (services/changes_service.h,
// services/change_watcher.h).
#pragma once

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "storage/types.h"
#include "tessera/internal/v1/changes.pb.h"

namespace tessera::services {

inline void ToProto(const storage::Change& c, internal::v1::Change* out) {
  out->set_seq(c.seq);
  out->set_tenant_id(c.tenant_id);
  out->set_kind(std::string(storage::ChangeKindName(c.kind)));
  out->set_version(c.version);
  out->set_live_version(c.live_version);
  out->set_previous_live(c.previous_live);
  out->set_actor(c.actor);
  out->set_created_at_us(c.created_at_us);
}

inline absl::StatusOr<storage::Change> FromProto(const internal::v1::Change& c) {
  storage::Change out;
  out.seq = c.seq();
  out.tenant_id = c.tenant_id();
  if (c.kind() == "publish") out.kind = storage::ChangeKind::kPublish;
  else if (c.kind() == "promote") out.kind = storage::ChangeKind::kPromote;
  else if (c.kind() == "rollback") out.kind = storage::ChangeKind::kRollback;
  else return absl::DataLossError(absl::StrCat("change ", c.seq(), ": unknown kind '", c.kind(), "'"));
  out.version = c.version();
  out.live_version = c.live_version();
  out.previous_live = c.previous_live();
  out.actor = c.actor();
  out.created_at_us = c.created_at_us();
  return out;
}

}  // namespace tessera::services
