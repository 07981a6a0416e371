// POST /v1/completions: OpenAI's legacy text completion. `prompt` is one string (or an array holding
// exactly one string); the tokenizer's default special tokens are added, as gRPC Generate's `prompt`.
#pragma once

#include "services/http/router.h"

namespace tessera::services::http {

void RegisterCompletions(Router& router);

}  // namespace tessera::services::http
