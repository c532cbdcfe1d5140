// OpenAiGateway; see openai_gateway.h.
#include "daemon/http/openai_gateway.h"

#include <chrono>
#include <ctime>
#include <map>
#include <random>

#include "daemon/http/chat_template.h"
#include "lib/common/json_bounds.h"
#include "lib/common/log.h"
#include "lib/rpc/connection.h"

namespace fuji::http {
namespace {

using nlohmann::json;

// Unary calls are in-process and quick; this only bounds a stuck one.
constexpr auto kCallDeadline = std::chrono::seconds(30);
constexpr size_t kMaxTokenBytes = 1024;

std::string Dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

void Answer(HttpResponder& out, const ApiError& error, const HttpHeaders& headers = {}) {
  out.Send(error.status, "application/json", ErrorJson(error), headers);
}

void AnswerJson(HttpResponder& out, const json& body, const HttpHeaders& headers = {}) {
  out.Send(200, "application/json", Dump(body), headers);
}

// A call's context: the token, and a deadline unless it waits for a job.
std::unique_ptr<grpc::ClientContext> Context(const std::string& token, bool deadline = true) {
  auto context = std::make_unique<grpc::ClientContext>();
  rpc::Authorize(context.get(), token);
  if (deadline) context->set_deadline(std::chrono::system_clock::now() + kCallDeadline);
  return context;
}

// OpenAI's answer for what fujid's API said. fujid's messages name no secret.
ApiError FromGrpc(const grpc::Status& status) {
  const std::string& m = status.error_message();
  switch (status.error_code()) {
    case grpc::StatusCode::UNAUTHENTICATED:
      return {401, "invalid API key: " + m, "invalid_request_error", "", "invalid_api_key"};
    case grpc::StatusCode::PERMISSION_DENIED:
      return {403, m, "invalid_request_error", "", "permission_denied"};
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::ALREADY_EXISTS: return BadRequest(m);
    case grpc::StatusCode::NOT_FOUND:
      return {404, m, "invalid_request_error", "model", "model_not_found"};
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return {429, m, "rate_limit_error", "", "resource_exhausted"};
    case grpc::StatusCode::UNAVAILABLE: return {503, m, "server_error", "", "unavailable"};
    default: return {500, m.empty() ? "internal error" : m, "server_error", "", ""};
  }
}

// The token of "Authorization: Bearer TOKEN", never repeated in an answer.
std::optional<ApiError> Bearer(const std::string& authorization, std::string* token) {
  const ApiError missing{401,
                         "no API key: send a fuji user's token as 'Authorization: Bearer TOKEN' "
                         "(fuji admin user add NAME makes one)",
                         "invalid_request_error", "", "invalid_api_key"};
  const ApiError invalid{401, "invalid API key: it is not a token fujid issued",
                         "invalid_request_error", "", "invalid_api_key"};
  if (authorization.empty()) return missing;
  if (authorization.size() < 7 || ::strncasecmp(authorization.c_str(), "bearer ", 7) != 0)
    return invalid;
  std::string value = authorization.substr(7);
  while (!value.empty() && value.front() == ' ') value.erase(0, 1);
  while (!value.empty() && value.back() == ' ') value.pop_back();
  if (value.empty()) return missing;
  if (value.size() > kMaxTokenBytes) return invalid;
  for (char c : value) {
    if (c < 0x21 || c > 0x7e) return invalid;  // gRPC metadata carries printable ASCII only
  }
  *token = std::move(value);
  return std::nullopt;
}

uint64_t RandomSeed() {
  std::random_device device;
  return ((static_cast<uint64_t>(device()) << 32) | device()) & 0x7fffffffffffffffULL;
}

std::string BaseName(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

// A streamed completion: token deltas as chunks of OpenAI's shape, cut at the stop strings. A
// retried job's runs start again from its first token; what was sent already is not sent again.
// Whatever the deltas did not carry (none came, or the job ended first) is sent from the result.
class EventStream {
 public:
  EventStream(HttpResponder* out, Endpoint endpoint, std::string id, int64_t created,
              std::string model, std::vector<std::string> stops)
      : out_(out),
        endpoint_(endpoint),
        id_(std::move(id)),
        created_(created),
        model_(std::move(model)),
        cutter_(std::move(stops)) {}

  void Start(const HttpHeaders& headers) {
    out_->StartEvents(headers);
    // A chat stream names the role first.
    if (endpoint_ == Endpoint::kChat) Chunk("", "", true);
  }

  void OnDelta(const v1::TokenDelta& delta) {
    const int64_t end = delta.index() + delta.ids_size();
    if (delta.index() != sent_tokens_) {
      // Before what was sent: a retry's run again (sent already). After: a gap, left to the result.
      if (end > sent_tokens_) diverged_ = true;
      return;
    }
    sent_tokens_ = end;
    raw_ += delta.text();
    Emit(cutter_.Feed(delta.text()));
  }

  bool stopped() const { return cutter_.stopped(); }

  void Finish(const std::string& text, const json& result, int64_t max_tokens, const json& usage,
              bool include_usage) {
    // What the deltas did not carry comes from the result. Deltas past the result's end are the
    // rank's own stop: the cutter held their stop string back.
    const bool result_longer =
        text.size() >= raw_.size() && text.compare(0, raw_.size(), raw_) == 0;
    const bool result_cut = raw_.size() > text.size() && raw_.compare(0, text.size(), text) == 0;
    if (result_longer) {
      Emit(cutter_.Feed(std::string_view(text).substr(raw_.size())));
    } else if (!result_cut && !cutter_.stopped()) {
      log::Warn("HTTP " + id_ +
                ": the streamed tokens differ from the result's text (a retry sampled anew)");
    }
    Emit(cutter_.Flush());
    Chunk("", FinishReason(result, max_tokens, cutter_.stopped()), false);
    if (include_usage)
      out_->SendEvent(Dump(UsageChunkJson(endpoint_, id_, created_, model_, usage)));
    End();
  }

  void Fail(const ApiError& error) {
    out_->SendEvent(ErrorJson(error));
    End();
  }

 private:
  void Emit(const std::string& text) {
    if (!text.empty()) Chunk(text, "", false);
  }
  void Chunk(const std::string& text, const std::string& finish_reason, bool first) {
    out_->SendEvent(Dump(ChunkJson(endpoint_, id_, created_, model_, text, finish_reason, first)));
  }
  void End() {
    out_->SendEvent("[DONE]");
    out_->EndEvents();
  }

  HttpResponder* out_;
  const Endpoint endpoint_;
  const std::string id_;
  const int64_t created_;
  const std::string model_;
  StopCutter cutter_;
  int64_t sent_tokens_ = 0;
  std::string raw_;  // the deltas' text as sent to the cutter
  bool diverged_ = false;
};

}  // namespace

struct OpenAiGateway::Fleet {
  std::map<std::string, std::string> warm;  // id (base name) -> directory
  bool has_cpu = false, has_cuda = false;
};

OpenAiGateway::OpenAiGateway(std::shared_ptr<grpc::Channel> channel, GatewayOptions options)
    : jobs_(v1::JobService::NewStub(std::move(channel))), options_(std::move(options)) {}

std::string OpenAiGateway::ErrorBody(int status, const std::string& message) {
  ApiError error{status, message, status >= 500 ? "server_error" : "invalid_request_error", "", ""};
  return ErrorJson(error);
}

void OpenAiGateway::Handle(const HttpRequest& request,
                           const std::shared_ptr<HttpResponder>& out) const {
  const std::string path = request.target.substr(0, request.target.find('?'));
  const bool models = path == "/v1/models" || path.rfind("/v1/models/", 0) == 0;
  const bool completions = path == "/v1/completions";
  const bool chat = path == "/v1/chat/completions";
  if (!models && !completions && !chat) {
    return Answer(
        *out,
        {404,
         "unknown request URL: " + request.method + " " + path.substr(0, 256) +
             " (fujid serves GET /v1/models, POST /v1/completions and POST /v1/chat/completions)",
         "invalid_request_error", "", "unknown_url"});
  }
  const char* method = models ? "GET" : "POST";
  if (request.method != method) {
    return Answer(*out, {405, path + " takes " + method + ", not " + request.method.substr(0, 16),
                         "invalid_request_error", "", "method_not_allowed"});
  }
  std::string token;
  if (auto error = Bearer(request.authorization, &token)) return Answer(*out, *error);
  if (models) return Models(token, path.size() > 11 ? path.substr(11) : "", *out);
  Complete(request, token, chat ? Endpoint::kChat : Endpoint::kCompletions, out);
}

std::optional<ApiError> OpenAiGateway::ReadFleet(const std::string& token, Fleet* fleet) const {
  auto context = Context(token);
  v1::ListWorkersResponse response;
  grpc::Status status = jobs_->ListWorkers(context.get(), v1::ListWorkersRequest(), &response);
  if (!status.ok()) return FromGrpc(status);
  for (const v1::Worker& worker : response.workers()) {
    if (worker.state() != "ONLINE") continue;
    for (const v1::Device& device : worker.devices()) {
      fleet->has_cpu = fleet->has_cpu || device.kind() == "cpu";
      fleet->has_cuda = fleet->has_cuda || device.kind() == "cuda";
    }
    for (const v1::WarmModel& warm : worker.warm()) {
      if (!warm.model().empty()) fleet->warm.emplace(BaseName(warm.model()), warm.model());
    }
  }
  return std::nullopt;
}

void OpenAiGateway::Models(const std::string& token, const std::string& id,
                           HttpResponder& out) const {
  Fleet fleet;
  if (auto error = ReadFleet(token, &fleet)) return Answer(out, *error);
  std::map<std::string, int64_t> models;  // id -> created
  for (const CatalogModel& model : options_.catalog.List())
    models.emplace(model.id, model.created_s);
  for (const auto& [name, path] : fleet.warm) models.emplace(name, 0);
  auto object = [](const std::string& name, int64_t created) {
    return json{{"id", name}, {"object", "model"}, {"created", created}, {"owned_by", "fuji"}};
  };
  if (!id.empty()) {
    auto it = models.find(id);
    if (it == models.end()) {
      return Answer(out, {404, "the model '" + id.substr(0, 256) + "' does not exist",
                          "invalid_request_error", "model", "model_not_found"});
    }
    return AnswerJson(out, object(it->first, it->second));
  }
  json data = json::array();
  for (const auto& [name, created] : models) data.push_back(object(name, created));
  AnswerJson(out, {{"object", "list"}, {"data", data}});
}

std::optional<ApiError> OpenAiGateway::Resolve(const std::string& model, const Fleet& fleet,
                                               std::string* path) const {
  if (model.front() == '/') {
    *path = model;  // fujid's read policy decides at submit (NOT_FOUND there is a 404 too)
    return std::nullopt;
  }
  if (std::optional<std::string> found = options_.catalog.Find(model)) {
    *path = *found;
    return std::nullopt;
  }
  if (auto warm = fleet.warm.find(model); warm != fleet.warm.end()) {
    *path = warm->second;
    return std::nullopt;
  }
  return ApiError{
      404, "the model '" + model.substr(0, 256) + "' does not exist (GET /v1/models lists them)",
      "invalid_request_error", "model", "model_not_found"};
}

void OpenAiGateway::CancelJob(const std::string& token, int64_t job_id) const {
  auto context = Context(token);
  v1::CancelJobRequest request;
  request.set_id(job_id);
  v1::Job job;
  grpc::Status status = jobs_->CancelJob(context.get(), request, &job);
  if (!status.ok() && status.error_code() != grpc::StatusCode::FAILED_PRECONDITION) {
    log::Warn("HTTP: cannot cancel job " + std::to_string(job_id) +
              " of a client that went away: " + status.error_message());
  }
}

void OpenAiGateway::Complete(const HttpRequest& http, const std::string& token, Endpoint endpoint,
                             const std::shared_ptr<HttpResponder>& out) const {
  // ---- The request, the model, the prompt ----
  CompletionRequest request;
  if (auto error = ParseCompletionRequest(http.body, endpoint, &request))
    return Answer(*out, *error);
  Fleet fleet;
  if (auto error = ReadFleet(token, &fleet)) return Answer(*out, *error);
  std::string model_path;
  if (auto error = Resolve(request.model, fleet, &model_path)) return Answer(*out, *error);
  std::vector<std::string> stops = request.stop;
  if (endpoint == Endpoint::kChat) {
    const std::string file = model_path + "/chat_template.json";
    Result<std::string> real = options_.read_policy.CheckRead(file, "chat template");
    Result<ChatTemplate> chat_template =
        real.ok() ? ChatTemplate::Load(*real) : Result<ChatTemplate>(real.status());
    if (!chat_template.ok()) {
      if (chat_template.status().code() == StatusCode::kNotFound) {
        return Answer(
            *out, BadRequest("the model '" + request.model.substr(0, 256) +
                                 "' has no chat template (no chat_template.json in its directory): "
                                 "use /v1/completions with a prompt",
                             "model"));
      }
      return Answer(*out, BadRequest(chat_template.status().message(), "model"));
    }
    Result<std::string> prompt = chat_template->Render(request.messages);
    if (!prompt.ok()) return Answer(*out, BadRequest(prompt.status().message(), "messages"));
    request.prompt = *prompt;
    stops.insert(stops.end(), chat_template->stop.begin(), chat_template->stop.end());
  }
  const std::string device = !request.device.empty()            ? request.device
                             : fleet.has_cuda && !fleet.has_cpu ? "cuda"
                                                                : "cpu";
  json spec = InferSpecJson(request, model_path, device, RandomSeed());
  if (!stops.empty())
    spec["stop"] =
        std::vector<std::string>(stops.begin(), stops.begin() + std::min(stops.size(), kMaxStops));

  // ---- The job ----
  int64_t job_id = 0;
  {
    auto context = Context(token);
    v1::SubmitRequest submit;
    submit.set_kind("infer");
    submit.set_spec_json(Dump(spec));
    submit.set_shareable(true);
    v1::SubmitResponse response;
    grpc::Status status = jobs_->Submit(context.get(), submit, &response);
    if (!status.ok()) return Answer(*out, FromGrpc(status));
    job_id = response.job().id();
  }
  const std::string id =
      (endpoint == Endpoint::kChat ? "chatcmpl-" : "cmpl-") + std::to_string(job_id);
  const int64_t created = static_cast<int64_t>(std::time(nullptr));
  const HttpHeaders headers = {{"Fuji-Job-Id", std::to_string(job_id)}};
  std::optional<EventStream> stream;
  if (request.stream) {
    stream.emplace(out.get(), endpoint, id, created, request.model, stops);
    stream->Start(headers);
  }
  auto fail = [&](const ApiError& error) {
    if (stream) return stream->Fail(error);
    Answer(*out, error, headers);
  };

  // ---- Wait for it (and its tokens, streaming); a client that leaves cancels it ----
  std::shared_ptr<grpc::ClientContext> watch_context = Context(token, /*deadline=*/false);
  out->OnGone([watch_context] { watch_context->TryCancel(); });
  v1::WatchJobRequest watch;
  watch.set_id(job_id);
  watch.set_after_log_seq(INT64_MAX);  // no log lines
  watch.set_tokens(request.stream);
  std::unique_ptr<grpc::ClientReader<v1::WatchEvent>> reader =
      jobs_->WatchJob(watch_context.get(), watch);
  v1::WatchEvent event;
  while (reader->Read(&event)) {
    if (stream && event.what_case() == v1::WatchEvent::kTokens) stream->OnDelta(event.tokens());
  }
  grpc::Status watched = reader->Finish();
  if (out->gone()) {
    CancelJob(token, job_id);
    return;
  }
  if (!watched.ok()) return fail(FromGrpc(watched));
  v1::Job job;
  {
    auto context = Context(token);
    v1::GetJobRequest get;
    get.set_id(job_id);
    if (grpc::Status status = jobs_->GetJob(context.get(), get, &job); !status.ok())
      return fail(FromGrpc(status));
  }
  if (job.state() == v1::FAILED) {
    const bool bad_input = job.reason().rfind("bad_input", 0) == 0;
    return fail({bad_input ? 400 : 500,
                 "job " + std::to_string(job_id) + " failed: " + job.reason(),
                 bad_input ? "invalid_request_error" : "server_error", "", ""});
  }
  if (job.state() != v1::SUCCEEDED) {
    return fail({500,
                 "job " + std::to_string(job_id) + " ended " + v1::JobState_Name(job.state()) +
                     (job.reason().empty() ? "" : ": " + job.reason()),
                 "server_error", "", ""});
  }

  // ---- The result ----
  v1::ResultResponse result_response;
  {
    auto context = Context(token);
    v1::JobRef ref;
    ref.set_id(job_id);
    if (grpc::Status status = jobs_->GetResult(context.get(), ref, &result_response);
        !status.ok()) {
      return fail(FromGrpc(status));
    }
  }
  const json result = ParseJsonBounded(result_response.result_json());
  if (!result.is_object())
    return fail({500, "job " + std::to_string(job_id) + " has no result", "server_error", "", ""});
  const std::string text = result.contains("text") && result["text"].is_string()
                               ? result["text"].get<std::string>()
                               : "";
  auto count = [&](const char* name) {
    return result.contains(name) && result[name].is_array()
               ? static_cast<int64_t>(result[name].size())
               : int64_t{0};
  };
  const json usage = UsageJson(count("prompt_ids"), count("output_ids"));
  if (stream) return stream->Finish(text, result, request.max_tokens, usage, request.include_usage);
  StopCutter cutter(stops);
  const std::string answer = cutter.Feed(text) + cutter.Flush();
  AnswerJson(*out,
             ResponseJson(endpoint, id, created, request.model, answer,
                          FinishReason(result, request.max_tokens, cutter.stopped()), usage),
             headers);
}

}  // namespace fuji::http
