#include "pkg/http.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "pkg/crash_point.h"
#include "runtime/error.h"
#include "signing/files.h"

namespace galleon::pkg {
namespace {

using signing::UniqueFd;

struct CurlGlobal {
  CurlGlobal() { curl_global_init(CURL_GLOBAL_DEFAULT); }
  ~CurlGlobal() { curl_global_cleanup(); }
  CurlGlobal(const CurlGlobal&) = delete;
  CurlGlobal& operator=(const CurlGlobal&) = delete;
};

void ensure_curl_global() { static CurlGlobal global; }

struct EasyFree {
  void operator()(CURL* c) const noexcept { curl_easy_cleanup(c); }
};
using EasyPtr = std::unique_ptr<CURL, EasyFree>;

// State shared with the write and progress callbacks of one attempt.
struct Transfer {
  CURL* curl = nullptr;
  int fd = -1;
  uint64_t offset = 0;   // bytes already in the file when the attempt started
  uint64_t written = 0;  // bytes written by this attempt
  uint64_t max_size = 0;
  bool status_checked = false;
  bool too_large = false;
  int io_errno = 0;
  std::string url;
};

void restart_file(Transfer& t) {
  if (ftruncate(t.fd, 0) != 0) t.io_errno = errno;
  t.offset = 0;
}

// The first data of a resumed transfer: a server answering 200 ignored the Range header.
void check_resume(Transfer& t) {
  t.status_checked = true;
  if (t.offset == 0) return;
  long code = 0;
  curl_easy_getinfo(t.curl, CURLINFO_RESPONSE_CODE, &code);
  if (code == 200) restart_file(t);
}

size_t on_write(char* data, size_t size, size_t nmemb, void* user) {
  Transfer& t = *static_cast<Transfer*>(user);
  const size_t n = size * nmemb;
  if (!t.status_checked) check_resume(t);
  if (t.io_errno != 0) return 0;
  if (t.offset + t.written + n > t.max_size) {
    t.too_large = true;
    return 0;
  }
  size_t done = 0;
  while (done < n) {
    ssize_t k = write(t.fd, data + done, n - done);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      t.io_errno = k < 0 ? errno : EIO;
      return 0;
    }
    done += size_t(k);
  }
  crash_point("fetch.downloading");  // a chunk is on disk, the download is not complete
  t.written += n;
  return n;
}

int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  const Transfer& t = *static_cast<const Transfer*>(user);
  std::fprintf(stderr, "\r  %s: %llu / %llu KiB", t.url.c_str(),
               static_cast<unsigned long long>((t.offset + t.written) / 1024),
               static_cast<unsigned long long>(t.max_size / 1024));
  return 0;
}

void set_common_options(CURL* c, const std::string& url, const DownloadOptions& o, char* errbuf) {
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https,file");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, o.connect_timeout_s);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, o.low_speed_bytes);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, o.low_speed_time_s);
  curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(o.max_size));
  curl_easy_setopt(c, CURLOPT_USERAGENT, "galleon/0.1");
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
}

uint64_t file_size(int fd, const std::string& path) {
  struct stat st {};
  if (fstat(fd, &st) != 0) fail(ErrorKind::Io, path + ": " + std::strerror(errno));
  return uint64_t(st.st_size);
}

enum class Outcome { Done, Retry };

std::string curl_message(CURLcode rc, const char* errbuf) {
  return errbuf[0] ? std::string(errbuf) : std::string(curl_easy_strerror(rc));
}

// Turns a failed transfer into an Error, or says that another attempt may help.
Outcome judge(CURLcode rc, Transfer& t, const char* errbuf, const std::string& dest) {
  if (rc == CURLE_OK) return Outcome::Done;
  if (t.io_errno != 0) fail(ErrorKind::Io, dest + ": cannot write: " + std::strerror(t.io_errno));
  if (t.too_large || rc == CURLE_FILESIZE_EXCEEDED)
    fail(ErrorKind::Invalid, t.url + ": the server sends more than the pinned size of " +
                                 std::to_string(t.max_size) + " bytes");
  if (rc == CURLE_HTTP_RETURNED_ERROR) {
    long code = 0;
    curl_easy_getinfo(t.curl, CURLINFO_RESPONSE_CODE, &code);
    if (code == 416) {  // the range is past what the server has: start over
      restart_file(t);
      return Outcome::Retry;
    }
    if (code >= 500) return Outcome::Retry;
    fail(ErrorKind::Network, t.url + ": HTTP " + std::to_string(code));
  }
  if (rc == CURLE_RANGE_ERROR) {  // the server cannot resume: start over
    restart_file(t);
    return Outcome::Retry;
  }
  switch (rc) {
    case CURLE_PARTIAL_FILE:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return Outcome::Retry;
    default:
      fail(ErrorKind::Network, t.url + ": " + curl_message(rc, errbuf));
  }
}

// One transfer, resuming after the bytes already in `fd`.
Outcome attempt(const std::string& url, int fd, const std::string& dest, const DownloadOptions& o,
                std::string& last_error) {
  EasyPtr curl(curl_easy_init());
  if (!curl) fail(ErrorKind::Internal, "curl_easy_init failed");
  char errbuf[CURL_ERROR_SIZE] = {0};
  Transfer t;
  t.curl = curl.get();
  t.fd = fd;
  t.url = url;
  t.max_size = o.max_size;
  t.offset = file_size(fd, dest);
  if (t.offset == o.max_size) return Outcome::Done;  // complete already: the caller verifies it
  if (t.offset > o.max_size) restart_file(t);
  set_common_options(curl.get(), url, o, errbuf);
  curl_easy_setopt(curl.get(), CURLOPT_RESUME_FROM_LARGE, static_cast<curl_off_t>(t.offset));
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &t);
  if (o.progress) {
    curl_easy_setopt(curl.get(), CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl.get(), CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(curl.get(), CURLOPT_XFERINFODATA, &t);
  }
  CURLcode rc = curl_easy_perform(curl.get());
  if (o.progress) std::fputs("\n", stderr);
  last_error = url + ": " + curl_message(rc, errbuf);
  return judge(rc, t, errbuf, dest);
}

}  // namespace

bool is_supported_url(const std::string& url) {
  for (const char* scheme : {"http://", "https://", "file://"})
    if (url.rfind(scheme, 0) == 0 && url.size() > std::strlen(scheme)) return true;
  return false;
}

void download(const std::string& url, const std::string& dest, const DownloadOptions& options) {
  if (!is_supported_url(url))
    fail(ErrorKind::Usage, url + ": only http://, https:// and file:// URLs are supported");
  if (options.max_size == 0) fail(ErrorKind::Internal, "download: no size cap for " + url);
  ensure_curl_global();
  UniqueFd fd(open(dest.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (fd.get() < 0) fail(ErrorKind::Io, dest + ": cannot create: " + std::strerror(errno));
  std::string last_error;
  for (int i = 0; i < std::max(1, options.attempts); ++i) {
    if (i > 0) sleep(unsigned(i));  // 1 s, 2 s, ... before each retry
    if (attempt(url, fd.get(), dest, options, last_error) == Outcome::Done) return;
  }
  fail(ErrorKind::Network, last_error + " (after " + std::to_string(options.attempts) + " attempts)");
}

}  // namespace galleon::pkg
