// HttpServer: a small HTTP/1.1 server on Boost.Beast for fujid's OpenAI-compatible API. TLS with
// fujid's certificate (or plaintext, where the caller allows it), one request per connection,
// every input bounded: header bytes, body bytes, the time a request may take to arrive, each
// write's time, the bytes waiting to be written, and the connections open at once. Requests are
// handed to a handler on a thread of their own (a completion waits seconds for its job), while
// the sockets run on the server's own io_context threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lib/common/status.h"

namespace fuji::http {

// One request as it arrived (the body whole: it is bounded).
struct HttpRequest {
  std::string method;         // "GET", "POST", ...
  std::string target;         // the path and query
  std::string authorization;  // the Authorization header ("" when none)
  std::string cookie;         // the Cookie header ("" when none)
  std::string content_type;   // the Content-Type header ("" when none)
  std::string body;
};

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

// The answer channel of one request. Thread-safe: the handler calls it from its own thread, and
// the server from its loop. Only the first of Send and StartEvents counts; the rest are ignored.
class HttpResponder {
 public:
  virtual ~HttpResponder() = default;
  // A whole response with Content-Length; the connection closes once it is written.
  virtual void Send(int status, const std::string& content_type, std::string body,
                    const HttpHeaders& headers = {}) = 0;
  // Server-sent events: a 200 text/event-stream header now, then each SendEvent as
  // "data: DATA\n\n" (chunked), until EndEvents.
  virtual void StartEvents(const HttpHeaders& headers = {}) = 0;
  virtual void SendEvent(const std::string& data) = 0;
  virtual void EndEvents() = 0;
  // Whether the client went away (or the server stops): nobody will read what is sent.
  virtual bool gone() const = 0;
  // Runs `callback` once when the client goes away, on the server's loop (at once, on the
  // caller's thread, when it already has). Keep it short and thread-safe.
  virtual void OnGone(std::function<void()> callback) = 0;
};

// Runs once per request on a thread of its own; it must answer through the responder (or find it
// gone) and return. Exceptions it lets out are answered 500.
using HttpHandler = std::function<void(const HttpRequest&, const std::shared_ptr<HttpResponder>&)>;
// The body of an error the server answers itself (413, 431, 400 for unparsable HTTP, 500).
using HttpErrorBody = std::function<std::string(int status, const std::string& message)>;

struct HttpServerOptions {
  std::string listen;                     // "host:port" or "[v6]:port"; port 0: any free port
  std::string tls_cert_pem, tls_key_pem;  // both empty: plaintext (the caller decides it may)
  int threads = 2;                        // the io_context's threads
  int max_connections = 256;              // more are closed as soon as they are accepted
  size_t max_header_bytes = size_t{16} << 10;
  size_t max_body_bytes = size_t{4} << 20;  // more is 413
  // A request's TLS handshake, headers and body arrive within this, or the connection closes: a
  // slow client cannot hold one forever.
  int64_t read_timeout_ms = 30000;
  int64_t write_timeout_ms = 60000;  // each write is taken by the client within this
  size_t max_pending_write_bytes = size_t{8} << 20;  // a stream that falls further behind is cut
};

// Start and Stop from one owner; port() from any thread.
class HttpServer {
 public:
  // Listens and starts the loop's threads. INVALID_ARGUMENT for an address that does not parse
  // or TLS material that does not load; UNAVAILABLE when the address cannot be bound.
  static Result<std::unique_ptr<HttpServer>> Start(const HttpServerOptions& options,
                                                   HttpHandler handler, HttpErrorBody error_body);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const;
  // Stops accepting, tells every open request its client is gone, waits for the handlers to
  // return, then stops the loop. Idempotent.
  void Stop();

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fuji::http
