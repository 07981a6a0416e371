// tessera.v1.Admin: tenants, API keys, versions and live pointers, runtime status, jobs across tenants.
// ADMIN keys only (a TENANT key -> PERMISSION_DENIED). Mutations are audited by the registry in the same
// transaction as the change.
#pragma once

#include "services/service_env.h"
// First: the callback handlers this service's base class instantiates parse requests through
// proto/request_parse.h (invalid UTF-8 -> INVALID_ARGUMENT naming the field, not UNIMPLEMENTED).
#include "tessera/v1/request_traits.h"
#include "tessera/v1/admin.grpc.pb.h"

namespace tessera::services {

class AdminService final : public v1::Admin::CallbackService {
 public:
  explicit AdminService(const ServiceEnv& env) : env_(env) {}
  grpc::ServerUnaryReactor* CreateTenant(grpc::CallbackServerContext* ctx,
                                         const v1::CreateTenantRequest* req,
                                         v1::CreateTenantResponse* resp) override;
  grpc::ServerUnaryReactor* ListTenants(grpc::CallbackServerContext* ctx, const v1::ListTenantsRequest* req,
                                        v1::ListTenantsResponse* resp) override;
  grpc::ServerUnaryReactor* DeleteTenant(grpc::CallbackServerContext* ctx, const v1::DeleteTenantRequest* req,
                                         v1::DeleteTenantResponse* resp) override;
  grpc::ServerUnaryReactor* IssueApiKey(grpc::CallbackServerContext* ctx, const v1::IssueApiKeyRequest* req,
                                        v1::IssueApiKeyResponse* resp) override;
  grpc::ServerUnaryReactor* RevokeApiKey(grpc::CallbackServerContext* ctx,
                                         const v1::RevokeApiKeyRequest* req,
                                         v1::RevokeApiKeyResponse* resp) override;
  grpc::ServerUnaryReactor* ListApiKeys(grpc::CallbackServerContext* ctx, const v1::ListApiKeysRequest* req,
                                        v1::ListApiKeysResponse* resp) override;
  grpc::ServerUnaryReactor* ListVersions(grpc::CallbackServerContext* ctx,
                                         const v1::ListVersionsRequest* req,
                                         v1::ListVersionsResponse* resp) override;
  grpc::ServerUnaryReactor* Promote(grpc::CallbackServerContext* ctx, const v1::PromoteRequest* req,
                                    v1::LiveVersionResponse* resp) override;
  grpc::ServerUnaryReactor* Rollback(grpc::CallbackServerContext* ctx, const v1::RollbackRequest* req,
                                     v1::LiveVersionResponse* resp) override;
  grpc::ServerUnaryReactor* GetRuntimeStatus(grpc::CallbackServerContext* ctx,
                                             const v1::GetRuntimeStatusRequest* req,
                                             v1::RuntimeStatus* resp) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* ctx, const v1::ListJobsRequest* req,
                                     v1::ListJobsResponse* resp) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* ctx, const v1::CancelJobRequest* req,
                                      v1::Job* resp) override;
  grpc::ServerUnaryReactor* ListAuditEvents(grpc::CallbackServerContext* ctx, const v1::ListAuditEventsRequest* req,
                                            v1::ListAuditEventsResponse* resp) override;
  // Implemented in admin_backup.cc.
  grpc::ServerWriteReactor<v1::BackupChunk>* Backup(grpc::CallbackServerContext* ctx,
                                                    const v1::BackupRequest* req) override;
  grpc::ServerUnaryReactor* SetQuotas(grpc::CallbackServerContext* ctx, const v1::SetQuotasRequest* req,
                                      v1::SetQuotasResponse* resp) override;
  grpc::ServerUnaryReactor* GetQuotas(grpc::CallbackServerContext* ctx, const v1::GetQuotasRequest* req,
                                      v1::GetQuotasResponse* resp) override;

 private:
  const ServiceEnv& env_;
};

}  // namespace tessera::services
