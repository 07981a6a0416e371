// POST /v1/chat/completions: `messages` ({role, content}; content a string or an array of
// {"type": "text", "text"} parts, joined; null content reads as "") rendered with the backbone's chat
// template with the generation prompt, as gRPC Generate's `messages` (builtin:tiny has its own
// template). Replies are role "assistant"; the stream's first chunk carries the role.
#pragma once

#include "services/http/router.h"

namespace tessera::services::http {

void RegisterChat(Router& router);

}  // namespace tessera::services::http
