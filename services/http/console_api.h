// The web console's JSON API (under /console/api/, on the HTTP API's listener and keys). What a key may
// see follows gRPC's rules: a TENANT key only its own tenant (another tenant's URL -> 403, the same
// answer whether or not that tenant exists), an ADMIN key every tenant; promote and rollback need an
// ADMIN key and go through LiveControl as Admin.Promote / Admin.Rollback do (returning once the runtime
// serves the version).
//   GET  /console/api/me                                  {role, tenant, key_id}
//   GET  /console/api/tenants                             tenants with live version and keys (never secrets)
//   GET  /console/api/tenants/{t}                         versions (metrics, lineage, slots), live-pointer history
//   POST /console/api/tenants/{t}/promote   {version}     admin
//   POST /console/api/tenants/{t}/rollback  {to_version?} admin
//   GET  /console/api/tenants/{t}/jobs                    the tenant's jobs (fine_tuning.h's job objects)
//   GET  /console/api/tenants/{t}/jobs/{id}/curve?after=SEQ&wait=S
//        the job's loss points after event SEQ: train loss per progress event, validation loss per eval;
//        with wait > 0 (at most 20 s) it waits for the next event of a job still running (long poll),
//        so the page's curve moves as the job trains.
//   GET  /console/api/tenants/{t}/experts                 heat map: tokens routed to each (layer, expert)
//        by the tenant's generations since the server started (tessera_expert_routed_tokens_total), and
//        the live version's overlay slots.
#pragma once

#include "services/http/router.h"

namespace tessera::services::http {

void RegisterConsoleApi(Router& router);

}  // namespace tessera::services::http
