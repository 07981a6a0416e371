// Translation between the registry's value types / JobSpec and the tessera.v1 protos. Pure functions:
// no I/O, no authorization (handlers do that before calling these).
#pragma once

#include "absl/status/statusor.h"
#include "services/job_spec.h"
#include "storage/types.h"
#include "tessera/v1/admin.pb.h"
#include "tessera/v1/datasets.pb.h"
#include "tessera/v1/experts.pb.h"
#include "tessera/v1/fine_tuning.pb.h"

namespace tessera::services {

void ToProto(const storage::Dataset& in, v1::Dataset* out);
void ToProto(const storage::Tenant& in, int64_t live_version, v1::Tenant* out);
void ToProto(const storage::ApiKey& in, v1::ApiKey* out);
void ToProto(const storage::ExpertVersion& in, v1::ExpertVersion* out);
// Fills the request part (hyperparameters, selection, ...) from the stored spec.
void ToProto(const storage::Job& in, v1::Job* out);
// Decodes the stored JSON payload into the typed oneof. An undecodable payload becomes a "log" event
// carrying the raw text (events are informational; a client must never lose the stream over one).
void ToProto(const storage::JobEvent& in, v1::JobEvent* out);

v1::JobState ToProto(storage::JobState state);
JobRequest FromProto(const v1::CreateJobRequest& in);

// Payload builders for the events the scheduler appends (the registry writes "state" itself).
std::string SelectionEventJson(const std::vector<SlotId>& slots, const std::vector<double>& scores);
std::string ProgressEventJson(const storage::JobProgress& p, double eta_seconds);
std::string EvalEventJson(int64_t step, double val_loss, double base_val_loss);
std::string VersionEventJson(int64_t version, bool promoted, const std::string& reason);
std::string LogEventJson(const std::string& message);

}  // namespace tessera::services
