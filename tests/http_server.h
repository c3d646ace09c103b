// A minimal HTTP/1.0 server on 127.0.0.1 for tests (build and distribution tests): fixed bodies
// by path, Range resume, a connection cut half-way, servers that ignore ranges, error statuses.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace galleon::testing {

// Serves fixed bodies by path, the query ignored (404 otherwise). It honours "Range: bytes=N-" and "bytes=N-M"
// with a 206 answer; a resource marked cut_first sends only half its bytes the first time it is
// asked for (a dropped connection).
struct Resource {
  std::string body;
  bool cut_first = false;
  bool ranges = true;  // false: answers every request with the whole body (200)
  int status = 200;    // another value: answers with that status and no body
};

// A TCP port on 127.0.0.1 that was free a moment ago (for a program that takes a fixed port).
inline int free_loopback_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

class HttpServer {
 public:
  explicit HttpServer(std::map<std::string, Resource> files) : files_(std::move(files)) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 || listen(fd_, 8) != 0 ||
        getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      throw std::runtime_error("cannot listen on 127.0.0.1");
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~HttpServer() {
    stop_ = true;
    shutdown(fd_, SHUT_RDWR);
    thread_.join();
    close(fd_);
  }
  std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  // Request heads received so far, in order.
  std::vector<std::string> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }

 private:
  void serve() {
    while (!stop_) {
      int c = accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      answer(c);
      close(c);
    }
  }
  static void send_all(int c, const std::string& bytes) {
    for (size_t done = 0; done < bytes.size();) {
      ssize_t k = write(c, bytes.data() + done, bytes.size() - done);
      if (k <= 0) return;
      done += size_t(k);
    }
  }
  static size_t range_start(const std::string& req) {
    size_t at = req.find("Range: bytes=");
    return at == std::string::npos ? 0 : std::strtoull(req.c_str() + at + 13, nullptr, 10);
  }
  // One past the last byte asked for by "Range: bytes=N-M" (`size` when open-ended or absent).
  static size_t range_end(const std::string& req, size_t size) {
    size_t at = req.find("Range: bytes=");
    if (at == std::string::npos) return size;
    size_t dash = req.find('-', at);
    if (dash == std::string::npos || !std::isdigit(static_cast<unsigned char>(req[dash + 1])))
      return size;
    return std::min(size, size_t(std::strtoull(req.c_str() + dash + 1, nullptr, 10)) + 1);
  }
  void answer(int c) {
    std::string req;
    char buf[4096];
    while (req.find("\r\n\r\n") == std::string::npos) {
      ssize_t k = read(c, buf, sizeof buf);
      if (k <= 0) return;
      req.append(buf, size_t(k));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      requests_.push_back(req);
    }
    std::string path = req.substr(4, req.find(' ', 4) - 4);
    path = path.substr(0, path.find('?'));
    auto it = files_.find(path);
    if (it == files_.end())
      return send_all(c, "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    Resource& r = it->second;
    if (r.status != 200)
      return send_all(
          c, "HTTP/1.0 " + std::to_string(r.status) + " Failed\r\nContent-Length: 0\r\n\r\n");
    const size_t from = r.ranges ? std::min(range_start(req), r.body.size()) : 0;
    const size_t end = r.ranges ? std::max(from, range_end(req, r.body.size())) : r.body.size();
    const std::string rest = r.body.substr(from, end - from);
    const bool partial = from != 0 || end != r.body.size();
    std::string head = !partial ? "HTTP/1.0 200 OK\r\n"
                                : "HTTP/1.0 206 Partial Content\r\nContent-Range: bytes " +
                                      std::to_string(from) + "-" + std::to_string(end - 1) + "/" +
                                      std::to_string(r.body.size()) + "\r\n";
    head += "Content-Length: " + std::to_string(rest.size()) + "\r\n\r\n";
    if (r.cut_first) {
      r.cut_first = false;
      return send_all(c, head + rest.substr(0, rest.size() / 2));
    }
    send_all(c, head + rest);
  }
  std::map<std::string, Resource> files_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<std::string> requests_;
  std::thread thread_;
};

}  // namespace galleon::testing
