// ConnectionWatch: has the client of an HTTP request gone away while its handler still runs?
//
// A non-streamed completion runs the whole generation inside the handler before anything is written,
// so a client that disconnects (a timeout, a closed tab, Ctrl-C) is only noticed by the write at the
// end: the generation would run to max_tokens for nobody. Streams notice at their next write; this lets
// a non-streamed handler poll (GenerateParams::cancelled) instead.
//
// cpp-httplib 0.11 (Debian 12) gives a handler no access to its connection (Request::is_connection_closed
// came in later releases), so the watch finds the connection's socket itself:
//   - HTTPS: the SSL object httplib puts in Request::ssl, SSL_get_fd;
//   - HTTP: the socket of this process whose local and peer addresses are the request's local_addr:
//     local_port and remote_addr:remote_port (formatted as httplib does: getnameinfo NI_NUMERICHOST).
//     A TCP connection's address 4-tuple is unique among a host's open connections, and httplib keeps
//     the socket open until the handler has returned and the response is written, so the fd found is
//     this request's for as long as the handler runs (the only time the watch may be used).
// Closed() polls the socket without reading: POLLRDHUP (the client shut its sending side down: it
// closed the connection -- an HTTP/1.1 client waiting for a response does not half-close), POLLHUP or
// POLLERR (reset). Bytes of a pipelined next request (POLLIN) are not a close.
#pragma once

#include <optional>

#include "httplib.h"

namespace tessera::services::http {

class ConnectionWatch {
 public:
  // The watch of `req`'s connection; nullopt when its socket cannot be found (then nothing is watched).
  static std::optional<ConnectionWatch> ForRequest(const httplib::Request& req);
  // True once the client has closed or reset the connection. A poll with no timeout: cheap enough to
  // call every few milliseconds.
  bool Closed() const;
  int fd() const { return fd_; }

 private:
  explicit ConnectionWatch(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace tessera::services::http
