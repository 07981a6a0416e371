// Files as OpenAI's fine-tuning uses them, stored as Tessera datasets of the caller's tenant:
//   POST   /v1/files             multipart form: file (JSON Lines) and purpose ("fine-tune" only); the
//                                upload is validated in full with the backbone's tokenizer exactly as
//                                Datasets.UploadDataset (StoreDataset: errors name the line) before
//                                anything is stored -> the file object
//   GET    /v1/files[?purpose=]  the tenant's files, newest first
//   GET    /v1/files/{id}        one file;  GET /v1/files/{id}/content  its bytes
//   DELETE /v1/files/{id}        Datasets.DeleteDataset
// File ids are dataset ids ("ds_..."); objects are {id, object: "file", bytes, created_at, filename,
// purpose: "fine-tune", status: "processed", status_details: null} plus `tessera` {examples, tokens,
// sha256}. An ADMIN key names the tenant in the X-Tessera-Tenant header (auth.h).
#pragma once

#include "nlohmann/json.hpp"
#include "services/http/router.h"

namespace tessera::services::http {

void RegisterFiles(Router& router);
nlohmann::json FileObject(const storage::Dataset& d);

}  // namespace tessera::services::http
