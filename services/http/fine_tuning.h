// OpenAI's fine-tuning jobs API over Tessera's job queue (the same CreateJobFor / registry calls as the
// gRPC FineTuning service):
//   POST /v1/fine_tuning/jobs               {model, training_file, validation_file?, hyperparameters?,
//                                            suffix?, seed?, method?}
//   GET  /v1/fine_tuning/jobs[?after=&limit=]   newest first
//   GET  /v1/fine_tuning/jobs/{id}
//   GET  /v1/fine_tuning/jobs/{id}/events[?after=&limit=]   newest first
//   POST /v1/fine_tuning/jobs/{id}/cancel
// `model` names the tenant and the starting point as everywhere (`<tenant>`: its live version,
// `<tenant>:<N>`, `<tenant>:0` the base; an ADMIN key may name any tenant). File ids are dataset ids.
// hyperparameters: OpenAI's n_epochs, batch_size, learning_rate_multiplier ("auto" or a value), and
// Tessera's max_steps, seq_len, learning_rate, warmup_steps, weight_decay. n_epochs N means max_steps =
// ceil(N * examples / batch_size) over the training file (with the batch size the job resolves to);
// learning_rate_multiplier scales the learning rate the job would otherwise use. Tessera extension:
// auto_promote (bool). An Idempotency-Key header (OpenAI's client sends one per logical request) makes a
// retried create return the same job. `suffix` (at most 64 characters of [A-Za-z0-9_-], else 400 with
// param "suffix") is stored with the job and returned as `user_provided_suffix`; the result is still
// named `<tenant>:<N>` (fine_tuned_model), N the published version (shared/API.md fixes the names).
// Status: QUEUED -> "queued", RUNNING -> "running", SUCCEEDED -> "succeeded", FAILED -> "failed",
// CANCELLED -> "cancelled" (files are validated completely at upload, so a job never waits in
// "validating_files").
// Events are {id, object: "fine_tuning.job.event", created_at, level, message, type ("message" or
// "metrics"), data}; progress events are "metrics" with data {step, total_steps, train_loss,
// valid_loss}.
#pragma once

#include "nlohmann/json.hpp"
#include "services/http/router.h"
#include "tessera/v1/fine_tuning.pb.h"

namespace tessera::services::http {

void RegisterFineTuning(Router& router);

const char* OpenAiJobStatus(v1::JobState state);
nlohmann::json JobObject(const v1::Job& job);
nlohmann::json EventObject(const v1::JobEvent& event);

}  // namespace tessera::services::http
