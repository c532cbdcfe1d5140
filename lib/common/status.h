// Status and Result<T>: errors as values inside fuji, converted to exit codes and gRPC codes at the edges.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace fuji {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,   // bad input from a user: flags, prompts, job specs
  kNotFound,          // a path, job or tensor that does not exist
  kDataLoss,          // a file that is truncated, corrupt or inconsistent
  kFailedPrecondition,
  kResourceExhausted, // out of memory, size limits
  kUnavailable,       // a peer or service that cannot be reached
  kCancelled,
  kInternal,
  kUnauthenticated,   // no credential, or one that is not (or no longer) valid
  kPermissionDenied,  // a valid credential that may not do this
  kAlreadyExists,     // a file, user or enrollment that is there already
};

const char* StatusCodeName(StatusCode code);
// The inverse of StatusCodeName; kInternal for an unknown name.
StatusCode StatusCodeFromName(const std::string& name);

// A success or an error code with a message a person can act on. Cheap to copy when OK.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "INVALID_ARGUMENT: message"
  std::string ToString() const;
  // Returns a copy whose message is "context: message".
  Status WithContext(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) { return Status(StatusCode::kInvalidArgument, std::move(m)); }
inline Status NotFound(std::string m) { return Status(StatusCode::kNotFound, std::move(m)); }
inline Status DataLoss(std::string m) { return Status(StatusCode::kDataLoss, std::move(m)); }
inline Status FailedPrecondition(std::string m) { return Status(StatusCode::kFailedPrecondition, std::move(m)); }
inline Status ResourceExhausted(std::string m) { return Status(StatusCode::kResourceExhausted, std::move(m)); }
inline Status Unavailable(std::string m) { return Status(StatusCode::kUnavailable, std::move(m)); }
inline Status Cancelled(std::string m) { return Status(StatusCode::kCancelled, std::move(m)); }
inline Status Internal(std::string m) { return Status(StatusCode::kInternal, std::move(m)); }
inline Status Unauthenticated(std::string m) { return Status(StatusCode::kUnauthenticated, std::move(m)); }
inline Status PermissionDenied(std::string m) { return Status(StatusCode::kPermissionDenied, std::move(m)); }
inline Status AlreadyExists(std::string m) { return Status(StatusCode::kAlreadyExists, std::move(m)); }

// Either a value or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {}  // NOLINT: implicit by design

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace fuji

#define FUJI_CONCAT_INNER(a, b) a##b
#define FUJI_CONCAT(a, b) FUJI_CONCAT_INNER(a, b)

#define FUJI_RETURN_IF_ERROR(expr)              \
  do {                                          \
    ::fuji::Status fuji_status_ = (expr);       \
    if (!fuji_status_.ok()) return fuji_status_; \
  } while (0)

#define FUJI_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()

// FUJI_ASSIGN_OR_RETURN(auto x, Foo()); returns Foo()'s status when it is an error.
#define FUJI_ASSIGN_OR_RETURN(lhs, expr) \
  FUJI_ASSIGN_OR_RETURN_IMPL(FUJI_CONCAT(fuji_result_, __LINE__), lhs, expr)
