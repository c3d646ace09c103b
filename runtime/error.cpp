#include "runtime/error.h"

namespace galleon {

int exit_code(ErrorKind kind) { return static_cast<int>(kind); }

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::Internal: return "internal";
    case ErrorKind::Usage: return "usage";
    case ErrorKind::NotFound: return "not-found";
    case ErrorKind::Invalid: return "invalid";
    case ErrorKind::Untrusted: return "untrusted";
    case ErrorKind::Io: return "io";
    case ErrorKind::Network: return "network";
    case ErrorKind::Unsupported: return "unsupported";
    case ErrorKind::Mismatch: return "mismatch";
  }
  return "internal";
}

}  // namespace galleon
