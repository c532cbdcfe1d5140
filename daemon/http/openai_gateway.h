// OpenAiGateway: fujid's OpenAI-compatible API (GET /v1/models, POST /v1/completions, POST
// /v1/chat/completions) as a client of fujid's own public gRPC API (fuji.v1.JobService), called
// in-process. The request's bearer token goes with every call, so authentication, limits,
// ownership, path checks and job rows are those of the CLI: each completion is a shareable
// "infer" job, visible in `fuji jobs`, whose result (or, streaming, whose token deltas) the
// gateway turns into OpenAI's JSON. A client that goes away cancels its job.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "daemon/http/http_server.h"
#include "daemon/http/model_catalog.h"
#include "daemon/http/openai_protocol.h"
#include "fuji/v1/jobs.grpc.pb.h"
#include "lib/common/path_policy.h"

namespace fuji::http {

struct GatewayOptions {
  ModelCatalog catalog;    // the models offered by name (fujid --models)
  PathPolicy read_policy;  // what fujid may read: a model's chat_template.json is read through it
};

// Thread-safe: Handle runs on many threads at once.
class OpenAiGateway {
 public:
  // `channel` reaches fujid's JobService (the gRPC server's in-process channel).
  OpenAiGateway(std::shared_ptr<grpc::Channel> channel, GatewayOptions options);

  // Answers one request (an HttpHandler). Blocks while its job runs.
  void Handle(const HttpRequest& request, const std::shared_ptr<HttpResponder>& out) const;

  // OpenAI's error body for an error the HTTP layer answers itself.
  static std::string ErrorBody(int status, const std::string& message);

 private:
  struct Fleet;
  void Models(const std::string& token, const std::string& id, HttpResponder& out) const;
  void Complete(const HttpRequest& request, const std::string& token, Endpoint endpoint,
                const std::shared_ptr<HttpResponder>& out) const;
  // The online workers' warm models and device kinds (ListWorkers).
  std::optional<ApiError> ReadFleet(const std::string& token, Fleet* fleet) const;
  // The directory a request's "model" names: a full path as given, else a --models directory's
  // model, else a warm model of that base name; 404 model_not_found otherwise.
  std::optional<ApiError> Resolve(const std::string& model, const Fleet& fleet,
                                  std::string* path) const;
  void CancelJob(const std::string& token, int64_t job_id) const;

  std::unique_ptr<v1::JobService::Stub> jobs_;
  const GatewayOptions options_;
};

}  // namespace fuji::http
