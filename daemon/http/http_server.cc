// HttpServer; see http_server.h. A connection is a Session on a strand of the server's loop:
// (TLS handshake,) one bounded read of a request, then a watch on the TCP socket while the
// handler works (a client that closes is seen at once), the response written from a queue, and
// the close.
#include "daemon/http/http_server.h"

#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <list>
#include <mutex>
#include <optional>
#include <thread>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "lib/common/log.h"

namespace fuji::http {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;

namespace {

constexpr auto kTlsShutdownTimeout = std::chrono::seconds(2);

// A header value as it may go on the wire: no CR or LF.
std::string HeaderSafe(const std::string& value) {
  std::string out;
  for (char c : value) out += (c == '\r' || c == '\n') ? ' ' : c;
  return out;
}

std::string StatusLine(int status) {
  const beast::string_view reason =
      bhttp::obsolete_reason(bhttp::int_to_status(static_cast<unsigned>(status)));
  return "HTTP/1.1 " + std::to_string(status) + " " +
         std::string(reason.empty() ? "Status" : reason) + "\r\n";
}

std::string HeaderLines(const HttpHeaders& headers) {
  std::string out;
  for (const auto& [name, value] : headers)
    out += HeaderSafe(name) + ": " + HeaderSafe(value) + "\r\n";
  return out;
}

// "host:port" or "[v6]:port" (localhost is 127.0.0.1).
Result<tcp::endpoint> ParseListen(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos)
    return InvalidArgument("HTTP address '" + listen + "' is not HOST:PORT");
  std::string host = listen.substr(0, colon);
  const std::string port_text = listen.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (host == "localhost") host = "127.0.0.1";
  if (port_text.empty() || port_text.size() > 5 ||
      port_text.find_first_not_of("0123456789") != std::string::npos ||
      std::stoi(port_text) > 65535) {
    return InvalidArgument("HTTP address '" + listen + "': the port is not a number 0-65535");
  }
  boost::system::error_code ec;
  const net::ip::address address = net::ip::make_address(host, ec);
  if (ec)
    return InvalidArgument("HTTP address '" + listen + "': '" + host + "' is not an IP address");
  return tcp::endpoint(address, static_cast<uint16_t>(std::stoi(port_text)));
}

// What the server asks of a connection besides answering its request.
class SessionBase : public HttpResponder {
 public:
  // The server stops: the client is as good as gone, and the socket closes now.
  virtual void Abort() = 0;
  // The handler returned: a request it did not answer is answered 500 with `error_body`; an event
  // stream it did not end is cut after what was queued, without its last chunk, so that the
  // client sees it fail instead of waiting for more.
  virtual void Conclude(std::string error_body) = 0;
};

}  // namespace

struct HttpServer::Impl {
  HttpServerOptions options;
  HttpHandler handler;
  HttpErrorBody error_body;
  std::optional<net::ssl::context> tls;  // outlives the loop: sessions hold its SSL_CTX
  std::atomic<int> port{0};
  std::atomic<int> connections{0};  // outlives the loop: a session counts itself out when destroyed
  std::atomic<bool> stopping{false};
  bool stopped = false;
  net::io_context io;
  tcp::acceptor acceptor{io};
  net::steady_timer accept_backoff{io};
  std::vector<std::thread> threads;

  std::mutex mu;
  std::condition_variable handlers_done;
  int handlers = 0;                                // guarded by mu
  std::list<std::weak_ptr<SessionBase>> sessions;  // guarded by mu; for Stop

  void Accept();
  template <class Stream>
  void Open(Stream stream);
  // Runs the handler for `request` on a thread of its own.
  void Dispatch(HttpRequest request, std::shared_ptr<SessionBase> session);
};

namespace {

// One connection. kTls: Stream is ssl_stream<tcp_stream>, else tcp_stream. Every member below the
// constructor's runs on the stream's strand; HttpResponder's methods post there.
template <class Stream, bool kTls>
class Session final : public SessionBase,
                      public std::enable_shared_from_this<Session<Stream, kTls>> {
 public:
  Session(HttpServer::Impl* server, Stream stream) : server_(server), stream_(std::move(stream)) {}
  ~Session() override { server_->connections.fetch_sub(1); }

  void Run() {
    if constexpr (kTls) {
      Lowest().expires_after(std::chrono::milliseconds(server_->options.read_timeout_ms));
      stream_.async_handshake(net::ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                if (ec) return self->CloseSocket();
                                self->handshaken_ = true;
                                self->Read();
                              });
    } else {
      Read();
    }
  }

  // ---- HttpResponder (any thread) ----
  void Send(int status, const std::string& content_type, std::string body,
            const HttpHeaders& headers) override {
    std::string bytes = StatusLine(status) + "Content-Type: " + HeaderSafe(content_type) +
                        "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" +
                        HeaderLines(headers) + "Connection: close\r\n\r\n" + body;
    Post([bytes = std::move(bytes)](Session& s) mutable {
      if (s.mode_ != Mode::kNone) return;
      s.mode_ = Mode::kEnded;
      s.Queue(std::move(bytes), /*final=*/true);
    });
  }
  void StartEvents(const HttpHeaders& headers) override {
    std::string bytes = StatusLine(200) +
                        "Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                        "Transfer-Encoding: chunked\r\n" +
                        HeaderLines(headers) + "Connection: close\r\n\r\n";
    Post([bytes = std::move(bytes)](Session& s) mutable {
      if (s.mode_ != Mode::kNone) return;
      s.mode_ = Mode::kEvents;
      s.Queue(std::move(bytes), false);
    });
  }
  void SendEvent(const std::string& data) override {
    const std::string payload = "data: " + data + "\n\n";
    char size[32];
    std::snprintf(size, sizeof size, "%zx\r\n", payload.size());
    Post([bytes = std::string(size) + payload + "\r\n"](Session& s) mutable {
      if (s.mode_ == Mode::kEvents) s.Queue(std::move(bytes), false);
    });
  }
  void EndEvents() override {
    Post([](Session& s) {
      if (s.mode_ != Mode::kEvents) return;
      s.mode_ = Mode::kEnded;
      s.Queue("0\r\n\r\n", true);
    });
  }
  bool gone() const override { return gone_.load(); }
  void OnGone(std::function<void()> callback) override {
    {
      std::lock_guard<std::mutex> lock(gone_mu_);
      if (!gone_.load()) {
        on_gone_.push_back(std::move(callback));
        return;
      }
    }
    callback();
  }
  void Conclude(std::string error_body) override {
    Post([body = std::move(error_body)](Session& s) mutable {
      if (s.mode_ == Mode::kNone) {
        s.mode_ = Mode::kEnded;
        s.Queue(StatusLine(500) + "Content-Type: application/json\r\nContent-Length: " +
                    std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body,
                true);
      } else if (s.mode_ == Mode::kEvents) {
        s.mode_ = Mode::kEnded;
        s.final_queued_ = true;
        s.Write();
      }
    });
  }
  void Abort() override {
    Post([](Session& s) {
      s.MarkGone();
      s.CloseSocket();
    });
  }

 private:
  enum class Mode { kNone, kEvents, kEnded };

  auto& Lowest() { return beast::get_lowest_layer(stream_); }

  template <class F>
  void Post(F f) {
    net::post(stream_.get_executor(),
              [self = this->shared_from_this(), f = std::move(f)]() mutable { f(*self); });
  }

  void Read() {
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(server_->options.max_header_bytes));
    parser_->body_limit(server_->options.max_body_bytes);
    // One deadline for the headers and the body together.
    Lowest().expires_after(std::chrono::milliseconds(server_->options.read_timeout_ms));
    bhttp::async_read_header(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](beast::error_code ec, size_t) { self->OnHeader(ec); });
  }

  // A client that waits for "100 Continue" before its body (curl, for bodies over 1 MiB) is told
  // to go on; one whose declared body is over the limit was refused by the header's read.
  void OnHeader(beast::error_code ec) {
    if (ec) return OnRead(ec);
    if (!beast::iequals(parser_->get()[bhttp::field::expect], "100-continue")) return ReadBody();
    static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    net::async_write(stream_, net::buffer(kContinue),
                     [self = this->shared_from_this()](beast::error_code write_ec, size_t) {
                       if (write_ec) return self->CloseSocket();
                       self->ReadBody();
                     });
  }

  void ReadBody() {
    bhttp::async_read(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (ec == bhttp::error::body_limit) {
      return Refuse(413, "the request body is over the limit of " +
                             std::to_string(server_->options.max_body_bytes) + " bytes");
    }
    if (ec == bhttp::error::header_limit) {
      return Refuse(431, "the request's headers are over the limit of " +
                             std::to_string(server_->options.max_header_bytes) + " bytes");
    }
    if (ec) {
      // A request that does not parse is answered; a timeout or a closed socket only closes.
      const bool malformed =
          ec.category() == bhttp::make_error_code(bhttp::error::bad_target).category() &&
          ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message;
      if (malformed) return Refuse(400, "malformed HTTP request: " + ec.message());
      return CloseSocket();
    }
    const auto& message = parser_->get();
    HttpRequest request;
    request.method = std::string(message.method_string());
    request.target = std::string(message.target());
    request.authorization = std::string(message[bhttp::field::authorization]);
    request.cookie = std::string(message[bhttp::field::cookie]);
    request.content_type = std::string(message[bhttp::field::content_type]);
    request.body = std::move(parser_->get().body());
    parser_.reset();
    Watch();
    server_->Dispatch(std::move(request), this->shared_from_this());
  }

  // An answer of the server's own, before any handler saw the request.
  void Refuse(int status, const std::string& message) {
    mode_ = Mode::kEnded;
    const std::string body = server_->error_body(status, message);
    Queue(StatusLine(status) + "Content-Type: application/json\r\nContent-Length: " +
              std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body,
          true);
  }

  // Watches the socket while the handler works: a request is all a client sends, so the socket
  // turns readable only when the client closes (or resets) the connection, or sends more. The
  // wait is on the TCP socket itself, so that no TLS read runs beside the response's writes.
  // Bytes that come (a TLS close_notify before the close, or pipelined requests, which are not
  // answered: the connection closes after this response) are read off the socket and dropped.
  void Watch() {
    Lowest().expires_never();
    watching_ = true;
    Lowest().socket().async_wait(
        tcp::socket::wait_read,
        [self = this->shared_from_this()](beast::error_code ec) { self->OnWatch(ec); });
  }

  void OnWatch(beast::error_code ec) {
    watching_ = false;
    if (closing_) return FinishClose();
    if (ec) {
      MarkGone();
      return CloseSocket();
    }
    char bytes[4096];
    const ssize_t n = ::recv(Lowest().socket().native_handle(), bytes, sizeof bytes, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      MarkGone();
      return CloseSocket();
    }
    if (n > 0) {
      dropped_bytes_ += static_cast<size_t>(n);
      // Past a bound, the client is only sending: stop watching, and close after the response.
      if (dropped_bytes_ > server_->options.max_body_bytes) return;
    }
    Watch();
  }

  void MarkGone() {
    std::vector<std::function<void()>> callbacks;
    {
      std::lock_guard<std::mutex> lock(gone_mu_);
      if (gone_.exchange(true)) return;
      callbacks.swap(on_gone_);
    }
    for (auto& callback : callbacks) callback();
  }

  void Queue(std::string bytes, bool final) {
    if (closed_) return;
    pending_bytes_ += bytes.size();
    if (pending_bytes_ > server_->options.max_pending_write_bytes) {
      log::Warn("HTTP client fell more than " +
                std::to_string(server_->options.max_pending_write_bytes) +
                " bytes behind a stream: closing its connection");
      MarkGone();
      return CloseSocket();
    }
    queue_.push_back(std::move(bytes));
    final_queued_ = final_queued_ || final;
    Write();
  }

  void Write() {
    if (writing_ || closed_) return;
    if (queue_.empty()) {
      if (final_queued_) Close();
      return;
    }
    writing_ = true;
    // With the watch pending this sets only the write's timer (the read's stays "never").
    Lowest().expires_after(std::chrono::milliseconds(server_->options.write_timeout_ms));
    net::async_write(stream_, net::buffer(queue_.front()),
                     [self = this->shared_from_this()](beast::error_code ec, size_t) {
                       self->writing_ = false;
                       // Closed meanwhile (the client left as this write ended): the queue is
                       // gone with the connection.
                       if (self->closed_) return;
                       if (ec) {
                         self->MarkGone();
                         return self->CloseSocket();
                       }
                       self->pending_bytes_ -= self->queue_.front().size();
                       self->queue_.pop_front();
                       self->Write();
                     });
  }

  // After the last write: ends the watch, then TLS's close_notify (bounded), then the socket.
  void Close() {
    if (closing_) return;
    closing_ = true;
    if (watching_) {
      beast::error_code ignored;
      Lowest().socket().cancel(ignored);  // the watch's handler calls FinishClose
      return;
    }
    FinishClose();
  }

  void FinishClose() {
    if (closed_) return;
    if constexpr (kTls) {
      // Once bytes under TLS were dropped, its state cannot read the client's close_notify.
      if (handshaken_ && !gone_.load() && dropped_bytes_ == 0) {
        Lowest().expires_after(kTlsShutdownTimeout);
        stream_.async_shutdown(
            [self = this->shared_from_this()](beast::error_code) { self->CloseSocket(); });
        return;
      }
    }
    CloseSocket();
  }

  // The queue stays until the session ends: a write in flight still reads its buffer.
  void CloseSocket() {
    if (closed_) return;
    closed_ = true;
    beast::error_code ignored;
    Lowest().socket().shutdown(tcp::socket::shutdown_both, ignored);
    Lowest().close();
  }

  HttpServer::Impl* const server_;
  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  size_t dropped_bytes_ = 0;  // read off the socket by the watch

  Mode mode_ = Mode::kNone;
  std::deque<std::string> queue_;
  size_t pending_bytes_ = 0;
  bool handshaken_ = false, watching_ = false, writing_ = false;
  bool final_queued_ = false, closing_ = false, closed_ = false;

  mutable std::mutex gone_mu_;
  std::atomic<bool> gone_{false};
  std::vector<std::function<void()>> on_gone_;  // guarded by gone_mu_
};

}  // namespace

template <class Stream>
void HttpServer::Impl::Open(Stream stream) {
  constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;
  auto session = std::make_shared<Session<Stream, kTls>>(this, std::move(stream));
  {
    std::lock_guard<std::mutex> lock(mu);
    sessions.remove_if([](const std::weak_ptr<SessionBase>& s) { return s.expired(); });
    sessions.push_back(session);
  }
  session->Run();
}

void HttpServer::Impl::Accept() {
  acceptor.async_accept(net::make_strand(io), [this](beast::error_code ec, tcp::socket socket) {
    if (stopping.load() || ec == net::error::operation_aborted) return;
    if (ec) {
      // Out of descriptors, say: try again shortly rather than spin.
      log::Warn("HTTP accept: " + ec.message());
      accept_backoff.expires_after(std::chrono::milliseconds(100));
      accept_backoff.async_wait([this](beast::error_code wait_ec) {
        if (!wait_ec && !stopping.load()) Accept();
      });
      return;
    }
    if (connections.fetch_add(1) >= options.max_connections) {
      connections.fetch_sub(1);
      beast::error_code ignored;
      socket.close(ignored);
      Accept();
      return;
    }
    // An answer larger than one TLS record goes out as two writes; with Nagle on, the second waits
    // for the client's delayed ACK (40 ms on Linux): measured on the dashboard's 16 KB jobs page.
    beast::error_code nodelay_ec;
    socket.set_option(tcp::no_delay(true), nodelay_ec);
    if (tls) {
      Open(beast::ssl_stream<beast::tcp_stream>(beast::tcp_stream(std::move(socket)), *tls));
    } else {
      Open(beast::tcp_stream(std::move(socket)));
    }
    Accept();
  });
}

void HttpServer::Impl::Dispatch(HttpRequest request, std::shared_ptr<SessionBase> session) {
  {
    std::lock_guard<std::mutex> lock(mu);
    if (stopping.load()) {
      session->Send(503, "application/json", error_body(503, "fujid is stopping"), {});
      return;
    }
    ++handlers;
  }
  auto run = [this, request = std::move(request), session]() {
    try {
      handler(request, session);
    } catch (const std::exception& e) {
      log::Error(std::string("HTTP handler: ") + e.what());
    } catch (...) {
      log::Error("HTTP handler: an unknown exception");
    }
    // Nothing when the handler answered; otherwise the connection must still end.
    session->Conclude(error_body(500, "the server did not answer the request"));
    std::lock_guard<std::mutex> lock(mu);
    --handlers;
    handlers_done.notify_all();
  };
  try {
    std::thread(std::move(run)).detach();
  } catch (const std::system_error& e) {
    log::Error(std::string("HTTP: cannot start a handler thread: ") + e.what());
    session->Send(503, "application/json", error_body(503, "fujid is out of threads; try again"),
                  {});
    std::lock_guard<std::mutex> lock(mu);
    --handlers;
    handlers_done.notify_all();
  }
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() {
  Stop();
}

int HttpServer::port() const {
  return impl_->port.load();
}

Result<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpServerOptions& options,
                                                      HttpHandler handler,
                                                      HttpErrorBody error_body) {
  FUJI_ASSIGN_OR_RETURN(tcp::endpoint endpoint, ParseListen(options.listen));
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->handler = std::move(handler);
  impl->error_body = std::move(error_body);
  if (!options.tls_cert_pem.empty() || !options.tls_key_pem.empty()) {
    impl->tls.emplace(net::ssl::context::tls_server);
    boost::system::error_code ec;
    impl->tls->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                               net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 |
                               net::ssl::context::no_tlsv1_1,
                           ec);
    if (!ec) impl->tls->use_certificate_chain(net::buffer(options.tls_cert_pem), ec);
    if (!ec)
      impl->tls->use_private_key(net::buffer(options.tls_key_pem), net::ssl::context::pem, ec);
    if (ec)
      return InvalidArgument("HTTP TLS: cannot load fujid's certificate and key: " + ec.message());
  }
  boost::system::error_code ec;
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return Unavailable("cannot listen for HTTP on " + options.listen + ": " + ec.message());
  impl->port = impl->acceptor.local_endpoint().port();
  impl->Accept();
  Impl* raw = impl.get();
  for (int i = 0; i < std::max(1, options.threads); ++i) {
    impl->threads.emplace_back([raw] {
      for (;;) {
        try {
          raw->io.run();
          return;
        } catch (const std::exception& e) {
          log::Error(std::string("HTTP loop: ") + e.what());
        }
      }
    });
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

void HttpServer::Stop() {
  Impl& s = *impl_;
  if (s.stopped) return;
  s.stopped = true;
  s.stopping = true;
  net::post(s.io, [&s] {
    beast::error_code ignored;
    s.acceptor.close(ignored);
    s.accept_backoff.cancel();
  });
  std::unique_lock<std::mutex> lock(s.mu);
  for (const auto& weak : s.sessions) {
    if (auto session = weak.lock()) session->Abort();
  }
  // Each handler sees its client gone, cancels its calls and returns.
  s.handlers_done.wait(lock, [&s] { return s.handlers == 0; });
  lock.unlock();
  s.io.stop();
  for (std::thread& t : s.threads) {
    if (t.joinable()) t.join();
  }
}

}  // namespace fuji::http
