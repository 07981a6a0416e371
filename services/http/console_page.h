// The web console's page (GET /console): one static HTML document with its CSS and JavaScript inline,
// compiled into the binary (no build step, no external CDN). It holds no data: after the login form
// takes an API key (kept in the tab's sessionStorage only) the script reads everything from
// console_api.h's JSON routes and the /v1 API with that key, so what it shows is exactly what the key
// may see. Views (hash routes): #/ tenants (admin) or the own tenant; #/t/<tenant> versions with
// lineage and metrics, promote/rollback (admin, confirmed), live-pointer history, jobs with live loss
// curves (SVG, long-polled), the expert heat map (SVG, overlay slots outlined) and a playground sending
// one prompt to two versions side by side.
#pragma once

#include "services/http/router.h"

namespace tessera::services::http {

void RegisterConsolePage(Router& router);

}  // namespace tessera::services::http
