// JobService::Submit: a job spec is checked, then committed, then acknowledged.
#include <filesystem>

#include <nlohmann/json.hpp>

#include "daemon/server/grpc_status.h"
#include "daemon/server/job_plans.h"
#include "daemon/server/job_service.h"
#include "daemon/server/metrics.h"
#include "lib/common/json_bounds.h"
#include "lib/common/limits.h"
#include "lib/spec/finetune_spec.h"
#include "lib/spec/job_spec.h"
#include "lib/spec/plan_fields.h"

namespace fuji::daemon {
namespace {

// The model directory's real path, if fujid may read it (nothing is said of paths outside its
// roots).
Result<std::string> CheckModelDir(const std::string& model, const PathPolicy& policy) {
  FUJI_ASSIGN_OR_RETURN(std::string real, policy.CheckRead(model, "model path"));
  // One stat: a regular file named config.json below it makes `real` a directory.
  std::error_code ec;
  if (!std::filesystem::is_regular_file(std::filesystem::path(real) / "config.json", ec)) {
    return NotFound("model directory " + model + " not found (or it has no config.json)");
  }
  return real;
}

// What a spec asks for, once checked: the devices its job needs and the model's real path.
struct CheckedSpec {
  int devices = 1;
  std::string real_model;
  // An inference's new tokens and the fewest tokens its prompt can have (its ids, or one for text:
  // the rank counts the text's tokens once it has tokenized it).
  int64_t new_tokens = 0;
  int64_t min_prompt_tokens = 0;
};

// The spec of an infer job, checked ("offload" may be "auto"); its job needs one device.
Result<CheckedSpec> CheckInfer(const nlohmann::json& spec_json, const PathPolicy& policy) {
  PlanFields fields;
  FUJI_ASSIGN_OR_RETURN(InferSpec spec, InferSpecWithAuto(spec_json, &fields));
  FUJI_ASSIGN_OR_RETURN(std::string real, CheckModelDir(spec.model, policy));
  if (spec.serve) return CheckedSpec{1, std::move(real), 0, 0};  // no request of its own
  return CheckedSpec{1, std::move(real), spec.max_new_tokens,
                     spec.prompt ? int64_t{1} : static_cast<int64_t>(spec.prompt_ids.size())};
}

// The spec of a finetune job, checked as far as it can be without reading the data (the agent's
// launcher checks the rest before any rank starts; "zero" and "offload" may be "auto"); its job
// needs one device per rank.
Result<CheckedSpec> CheckFinetune(const nlohmann::json& spec_json, const PathPolicy& policy) {
  PlanFields fields;
  FUJI_ASSIGN_OR_RETURN(FinetuneSpec spec, FinetuneSpecWithAuto(spec_json, &fields));
  FUJI_ASSIGN_OR_RETURN(std::string real, CheckModelDir(spec.model, policy));
  FUJI_RETURN_IF_ERROR(policy.CheckRead(spec.data, "data path").status());
  return CheckedSpec{spec.ranks, std::move(real), 0, 0};
}

// The job record for a submit, or why it is refused (before anything is written).
Result<store::JobRecord> CheckSubmit(const v1::SubmitRequest& request, const JobServiceOptions& options,
                                     const NodeRates& rates) {
  store::JobRecord job;
  if (request.kind() == "infer") {
    job.kind = store::JobKind::kInfer;
  } else if (request.kind() == "finetune") {
    job.kind = store::JobKind::kFinetune;
  } else {
    return InvalidArgument("unknown job kind '" + request.kind() + "' (infer, finetune)");
  }
  if (request.spec_json().size() > limits::kMaxSpecBytes) {
    return InvalidArgument("spec_json has " + std::to_string(request.spec_json().size()) +
                           " bytes, over the limit of " + std::to_string(limits::kMaxSpecBytes));
  }
  if (request.priority() < limits::kMinPriority || request.priority() > limits::kMaxPriority) {
    return InvalidArgument("priority " + std::to_string(request.priority()) + " is outside " +
                           std::to_string(limits::kMinPriority) + ".." + std::to_string(limits::kMaxPriority));
  }
  if (request.max_attempts() < 0 || request.max_attempts() > limits::kMaxAttempts) {
    return InvalidArgument("max_attempts " + std::to_string(request.max_attempts()) + " is outside 0.." +
                           std::to_string(limits::kMaxAttempts) + " (0: fujid's default)");
  }
  FUJI_RETURN_IF_ERROR(CheckJsonDepth(request.spec_json(), "spec_json"));
  nlohmann::json spec_json =
      nlohmann::json::parse(request.spec_json(), nullptr, /*allow_exceptions=*/false);
  if (spec_json.is_discarded() || !spec_json.is_object()) {
    return InvalidArgument("spec_json is not a JSON object");
  }
  FUJI_ASSIGN_OR_RETURN(CheckedSpec checked, job.kind == store::JobKind::kInfer
                                                  ? CheckInfer(spec_json, options.read_policy)
                                                  : CheckFinetune(spec_json, options.read_policy));
  job.devices = checked.devices;
  // A valid explicit offload on a CPU device runs as none; the job's first event says so.
  spec_json = WithoutCpuOffload(std::move(spec_json), &job.reason);
  if (request.timeout_ms() < 0) return InvalidArgument("timeout_ms must not be negative");
  // The planner reads the model's config through the path that was checked, so a link swapped
  // since cannot lead it outside fujid's roots; the job keeps the path its user wrote.
  FUJI_ASSIGN_OR_RETURN(job.plans, PlanJob(job.kind, spec_json, job.devices, rates, checked.real_model));
  if (const int64_t positions = PositionsOfPlans(job.plans);
      checked.new_tokens > 0 && positions > 0 && checked.min_prompt_tokens + checked.new_tokens > positions) {
    return InvalidArgument("max_new_tokens " + std::to_string(checked.new_tokens) + " with a prompt of " +
                           (checked.min_prompt_tokens == 1 ? std::string("at least 1 token")
                                                           : std::to_string(checked.min_prompt_tokens) + " tokens") +
                           " exceeds the model's " + std::to_string(positions) + " positions");
  }
  job.shareable = request.shareable();
  job.priority = request.priority();
  job.spec = job.reason.empty() ? request.spec_json() : spec_json.dump();
  job.max_attempts = request.max_attempts() > 0 ? request.max_attempts() : options.default_max_attempts;
  job.timeout_ms = request.timeout_ms();
  if (!request.notify_url().empty()) {
    FUJI_ASSIGN_OR_RETURN(NotifyUrl url, ParseNotifyUrl(request.notify_url()));
    FUJI_RETURN_IF_ERROR(options.notify_policy.CheckSubmit(url));
    job.notify_url = request.notify_url();
  }
  return job;
}

}  // namespace

grpc::ServerUnaryReactor* JobService::Submit(grpc::CallbackServerContext* context,
                                             const v1::SubmitRequest* request,
                                             v1::SubmitResponse* response) {
  Result<Caller> caller = auth_->User(*context);
  if (!caller.ok()) return Finish(context, caller.status());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Result<store::JobRecord> job = CheckSubmit(*request, options_, *rates_);
  if (!job.ok()) {
    reactor->Finish(ToGrpcStatus(job.status()));
    return reactor;
  }
  job->owner = caller->name;
  sched::JobRequest placement;
  placement.devices = job->devices;
  placement.device_kind = DeviceKindOfSpec(job->spec);
  placement.estimated_run_ms = job->timeout_ms;
  placement.shareable = job->shareable;
  placement.plans = ReadPlans(job->plans);
  placement.may_span = job->kind == store::JobKind::kFinetune;
  placement.nodes = NodesOfSpec(job->spec);
  Status satisfiable = dispatcher_->CheckSatisfiable(placement);
  if (!satisfiable.ok()) {
    reactor->Finish(ToGrpcStatus(satisfiable));
    return reactor;
  }
  store::JobRecord record = std::move(job).value();
  int64_t submitted_ms = clock_->NowMs();
  // Acknowledged only once committed: the callback runs on the store's writer thread.
  store_->SubmitAsync(record, [this, reactor, response, record,
                               submitted_ms](Result<int64_t> id) mutable {
    if (!id.ok()) {
      reactor->Finish(ToGrpcStatus(id.status()));
      return;
    }
    record.id = *id;
    record.submitted_at_ms = submitted_ms;
    record.updated_at_ms = submitted_ms;
    *response->mutable_job() = JobToProto(record);
    reactor->Finish(grpc::Status::OK);
    metrics::Registry::Default().Add("fuji_job_submits_total", {store::JobKindName(record.kind)});
    dispatcher_->Enqueued(record);
  });
  return reactor;
}

}  // namespace fuji::daemon
