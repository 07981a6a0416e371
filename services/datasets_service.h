// tessera.v1.Datasets: upload (streamed, validated in full before anything is stored), get, list,
// delete. Storage: blob first (content-addressed), then the registry row.
#pragma once

#include "services/service_env.h"
// First: the callback handlers this service's base class instantiates parse requests through
// proto/request_parse.h (invalid UTF-8 -> INVALID_ARGUMENT naming the field, not UNIMPLEMENTED).
#include "tessera/v1/request_traits.h"
#include "tessera/v1/datasets.grpc.pb.h"

namespace tessera::services {

class DatasetsService final : public v1::Datasets::CallbackService {
 public:
  explicit DatasetsService(const ServiceEnv& env) : env_(env) {}

  grpc::ServerReadReactor<v1::UploadDatasetRequest>* UploadDataset(grpc::CallbackServerContext* ctx,
                                                                   v1::Dataset* response) override;
  grpc::ServerUnaryReactor* GetDataset(grpc::CallbackServerContext* ctx, const v1::GetDatasetRequest* req,
                                       v1::Dataset* resp) override;
  grpc::ServerUnaryReactor* ListDatasets(grpc::CallbackServerContext* ctx,
                                         const v1::ListDatasetsRequest* req,
                                         v1::ListDatasetsResponse* resp) override;
  grpc::ServerUnaryReactor* DeleteDataset(grpc::CallbackServerContext* ctx,
                                          const v1::DeleteDatasetRequest* req,
                                          v1::DeleteDatasetResponse* resp) override;

 private:
  const ServiceEnv& env_;
};

// Stores a validated upload: validates `bytes` completely (line-numbered INVALID_ARGUMENT on the first
// bad line), puts the blob, creates the row. Exposed for tests and for tools that import datasets.
absl::StatusOr<storage::Dataset> StoreDataset(const ServiceEnv& env, const std::string& tenant_id,
                                              const std::string& name, const std::string& format,
                                              std::string_view bytes, const std::string& actor);

}  // namespace tessera::services
