// See connection_watch.h.
#include "services/http/connection_watch.h"

#include <dirent.h>
#include <netdb.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>

#include <cstdlib>
#include <string>

namespace tessera::services::http {
namespace {

// "ip" and port of a socket address, as httplib formats them (numeric host); false if not IP.
bool IpAndPort(const sockaddr_storage& addr, socklen_t len, std::string* ip, int* port) {
  if (addr.ss_family != AF_INET && addr.ss_family != AF_INET6) return false;
  char host[NI_MAXHOST];
  if (::getnameinfo(reinterpret_cast<const sockaddr*>(&addr), len, host, sizeof(host), nullptr, 0,
                    NI_NUMERICHOST) != 0) {
    return false;
  }
  *ip = host;
  *port = addr.ss_family == AF_INET ? ntohs(reinterpret_cast<const sockaddr_in&>(addr).sin_port)
                                    : ntohs(reinterpret_cast<const sockaddr_in6&>(addr).sin6_port);
  return true;
}

// Whether `fd` is a connected IP socket with these local and peer addresses.
bool IsConnection(int fd, const httplib::Request& req) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  std::string ip;
  int port = 0;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return false;
  if (!IpAndPort(addr, len, &ip, &port) || port != req.remote_port || ip != req.remote_addr) return false;
  len = sizeof(addr);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return false;
  return IpAndPort(addr, len, &ip, &port) && port == req.local_port && ip == req.local_addr;
}

}  // namespace

std::optional<ConnectionWatch> ConnectionWatch::ForRequest(const httplib::Request& req) {
  if (req.ssl != nullptr) {
    const int fd = SSL_get_fd(req.ssl);
    if (fd >= 0) return ConnectionWatch(fd);
    return std::nullopt;
  }
  if (req.remote_port <= 0 || req.local_port <= 0) return std::nullopt;  // not from a socket (fuzzing)
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return std::nullopt;
  std::optional<ConnectionWatch> found;
  const int own = ::dirfd(dir);
  for (dirent* e; !found && (e = ::readdir(dir)) != nullptr;) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == own) continue;
    if (IsConnection(static_cast<int>(fd), req)) found = ConnectionWatch(static_cast<int>(fd));
  }
  ::closedir(dir);
  return found;
}

bool ConnectionWatch::Closed() const {
  pollfd p{fd_, POLLRDHUP, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

}  // namespace tessera::services::http
