// FuzzServer: the real TesseraServer (every gRPC service, the HTTP routes) over a fresh registry in a
// temp dir, without a model (inference answers UNAVAILABLE after validating) and without running jobs,
// for the HTTP and gRPC fuzz targets. Built once per process; the data dir is removed at exit.
//
// It holds: the bootstrap admin key, tenants "acme" and "other" with one key each, an uploaded dataset
// and a queued job of acme's, and one published version (1) of acme's. Fuzz inputs name them by
// placeholders that Substitute() replaces: $ADMIN, $ACME, $OTHER (key secrets), $DATASET, $JOB.
#pragma once

#include <memory>
#include <string>

#include "services/server.h"

namespace tessera::fuzz {

struct FuzzServer {
  std::string data_dir;
  std::unique_ptr<services::TesseraServer> server;
  std::string admin_key, acme_key, other_key;
  std::string dataset_id, job_id;

  std::string address() const { return "127.0.0.1:" + std::to_string(server->port()); }
  std::string Substitute(std::string s) const;
};

// The process's server (started on first use; aborts when it cannot start).
FuzzServer& GetFuzzServer();

}  // namespace tessera::fuzz
