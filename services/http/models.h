// GET /v1/models and GET /v1/models/{model}: the models the caller may use. For each tenant (a TENANT
// key: its own; an ADMIN key: every tenant) the live version `<tenant>`, the base `<tenant>:0` and each
// published version `<tenant>:<N>`; objects {id, object: "model", created (unix seconds), owned_by: the
// tenant}. Tessera's extension `tessera`: {tenant, version, live} (the live version's number for
// `<tenant>`).
#pragma once

#include "services/http/router.h"

namespace tessera::services::http {

void RegisterModels(Router& router);

}  // namespace tessera::services::http
