#include "services/http/files.h"

#include "absl/strings/str_cat.h"
#include "services/datasets_service.h"
#include "services/http/auth.h"
#include "services/http/errors.h"
#include "services/http/json_fields.h"

namespace tessera::services::http {
namespace {

constexpr size_t kMaxFilenameBytes = 256;
constexpr char kPurpose[] = "fine-tune";

absl::Status Upload(Call& call) {
  absl::StatusOr<std::string> tenant = TenantOf(call.env, call.principal, call.req);
  if (!tenant.ok()) return tenant.status();
  if (!call.req.is_multipart_form_data()) {
    return absl::InvalidArgumentError("file: send a multipart/form-data body with fields `file` and `purpose`");
  }
  if (!call.req.has_file("purpose")) return FieldError("purpose", "is required (\"fine-tune\")");
  std::string purpose = call.req.get_file_value("purpose").content;
  if (purpose != kPurpose) {
    return FieldError("purpose", absl::StrCat("only \"", kPurpose, "\" is supported, got \"", purpose, "\""));
  }
  if (!call.req.has_file("file")) return FieldError("file", "is required (a JSON Lines file)");
  httplib::MultipartFormData file = call.req.get_file_value("file");
  std::string name = file.filename.empty() ? "upload.jsonl" : file.filename;
  if (name.size() > kMaxFilenameBytes) {
    return FieldError("file", absl::StrCat("filename: at most ", kMaxFilenameBytes, " bytes, got ", name.size()));
  }
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) return FieldError("file", "filename: control characters are not allowed");
  }
  if (static_cast<int64_t>(file.content.size()) > call.env.max_dataset_bytes) {
    // A 400 (OUT_OF_RANGE), not a 429: no retry of the same file can succeed.
    return absl::OutOfRangeError(
        absl::StrCat("file: exceeds the server's size limit of ", call.env.max_dataset_bytes, " bytes"));
  }
  absl::StatusOr<storage::Dataset> d = StoreDataset(call.env, *tenant, name, "jsonl", file.content, Actor(call.principal));
  if (!d.ok()) {
    // Validation errors name the line ("line 3: ..."); they are about the uploaded file.
    if (d.status().code() == absl::StatusCode::kInvalidArgument && ParamOf(std::string(d.status().message())).empty()) {
      return FieldError("file", std::string(d.status().message()));
    }
    return d.status();
  }
  SendJson(call.res, FileObject(*d));
  return absl::OkStatus();
}

absl::Status List(Call& call) {
  absl::StatusOr<std::string> tenant = TenantOf(call.env, call.principal, call.req);
  if (!tenant.ok()) return tenant.status();
  Json data = Json::array();
  std::string purpose = call.req.get_param_value("purpose");
  if (purpose.empty() || purpose == kPurpose) {
    absl::StatusOr<std::vector<storage::Dataset>> ds = call.env.registry->ListDatasets(*tenant);
    if (!ds.ok()) return ds.status();
    for (const storage::Dataset& d : *ds) data.push_back(FileObject(d));
  }
  SendJson(call.res, Json{{"object", "list"}, {"data", std::move(data)}, {"has_more", false}});
  return absl::OkStatus();
}

absl::StatusOr<storage::Dataset> Lookup(Call& call) {
  absl::StatusOr<std::string> tenant = TenantOf(call.env, call.principal, call.req);
  if (!tenant.ok()) return tenant.status();
  return call.env.registry->GetDataset(*tenant, call.req.matches[1]);
}

absl::Status Get(Call& call) {
  absl::StatusOr<storage::Dataset> d = Lookup(call);
  if (!d.ok()) return d.status();
  SendJson(call.res, FileObject(*d));
  return absl::OkStatus();
}

absl::Status Content(Call& call) {
  absl::StatusOr<storage::Dataset> d = Lookup(call);
  if (!d.ok()) return d.status();
  absl::StatusOr<std::string> bytes = call.env.registry->blobs().Get(d->sha256);
  if (!bytes.ok()) return bytes.status();
  call.res.set_content(*bytes, "application/jsonl");
  return absl::OkStatus();
}

absl::Status Delete(Call& call) {
  absl::StatusOr<std::string> tenant = TenantOf(call.env, call.principal, call.req);
  if (!tenant.ok()) return tenant.status();
  std::string id = call.req.matches[1];
  if (absl::Status s = call.env.registry->DeleteDataset(*tenant, id, Actor(call.principal)); !s.ok()) return s;
  SendJson(call.res, Json{{"id", id}, {"object", "file"}, {"deleted", true}});
  return absl::OkStatus();
}

}  // namespace

Json FileObject(const storage::Dataset& d) {
  return Json{{"id", d.dataset_id},
              {"object", "file"},
              {"bytes", d.size_bytes},
              {"created_at", d.created_at_us / 1000000},
              {"filename", d.name},
              {"purpose", kPurpose},
              {"status", "processed"},
              {"status_details", nullptr},
              {"tessera", {{"examples", d.num_examples}, {"tokens", d.num_tokens}, {"sha256", d.sha256}}}};
}

void RegisterFiles(Router& router) {
  router.Post("/v1/files", "/v1/files", storage::kScopeFineTune, Upload);
  router.Get("/v1/files", "/v1/files", storage::kScopeRead, List);
  router.Get(R"(/v1/files/([^/]+))", "/v1/files/{id}", storage::kScopeRead, Get);
  router.Get(R"(/v1/files/([^/]+)/content)", "/v1/files/{id}/content", storage::kScopeRead, Content);
  router.Delete(R"(/v1/files/([^/]+))", "/v1/files/{id}", storage::kScopeFineTune, Delete);
}

}  // namespace tessera::services::http
