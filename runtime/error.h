// galleon: the one error type of every layer.
// An Error carries a kind (mapped to an exit code by main) and a message to which context is
// prepended as it travels up ("installing x.galleon: member weights.gguf: size 12 != 13").
#pragma once

#include <exception>
#include <string>
#include <string_view>
#include <utility>

namespace galleon {

enum class ErrorKind : int {
  Internal = 1,     // a bug or an unexpected state
  Usage = 2,        // bad command line
  NotFound = 3,     // a file, model, bundle or key that does not exist
  Invalid = 4,      // invalid or corrupt input (files, metadata, bundles, recipes)
  Untrusted = 5,    // signatures missing, invalid, or by untrusted keys; downgrade refused
  Io = 6,           // the operating system refused (disk full, permission, read error)
  Network = 7,      // a download or peer failed
  Unsupported = 8,  // valid input that this build cannot handle (unknown tensor type, missing ISA)
  Mismatch = 9,     // a reproduction check failed (conformance replay, run record replay)
};

// Exit code for an error kind (documented in docs/cli.md).
int exit_code(ErrorKind kind);
const char* error_kind_name(ErrorKind kind);

class Error : public std::exception {
 public:
  Error(ErrorKind kind, std::string message) : kind_(kind), message_(std::move(message)) {}

  ErrorKind kind() const noexcept { return kind_; }
  const std::string& message() const noexcept { return message_; }
  const char* what() const noexcept override { return message_.c_str(); }

  // Prepends "context: " to the message.
  Error& add_context(std::string_view context) {
    message_.insert(0, std::string(context) + ": ");
    return *this;
  }

 private:
  ErrorKind kind_;
  std::string message_;
};

[[noreturn]] inline void fail(ErrorKind kind, std::string message) {
  throw Error(kind, std::move(message));
}

// Runs f(); an Error escaping it gets `context` prepended.
template <class F>
auto with_context(std::string_view context, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (Error& e) {
    e.add_context(context);
    throw;
  }
}

}  // namespace galleon
