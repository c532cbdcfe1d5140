// Who may do what, end to end with the real fujid, agents and CLI: every RPC of every service
// refuses a missing, wrong or revoked credential; users see only their own jobs; TLS refuses a
// client without the cluster CA; agents are enrolled, bound to their worker ids, and cannot report
// for jobs they were not leased.
#include <grpcpp/generic/generic_stub.h>
#include <google/protobuf/descriptor.h>

#include <chrono>
#include <fstream>
#include <string>
#include <vector>

#include "fuji/v1/admin.grpc.pb.h"
#include "fuji/v1/jobs.grpc.pb.h"
#include "fuji/v1/worker.grpc.pb.h"
#include "lib/rpc/connection.h"
#include "tests/integration/process_util.h"

namespace fuji::testing {
namespace {

using namespace std::chrono_literals;

constexpr const char* kServices[] = {"fuji.v1.JobService", "fuji.v1.WorkerService", "fuji.v1.AdminService"};

class AuthTest : public ServiceTestBase {
 protected:
  static void SetUpTestSuite() {
    MakeRoot("auth_test");
    ASSERT_EQ(Fuji({"model", "init", "--arch", "tiny", "--out", root_ + "/tiny"}).exit_code, 0);
    // Slow enough to be caught mid-run.
    ASSERT_EQ(Fuji({"model", "init", "--arch", "tiny", "--layers", "8", "--width", "256", "--heads", "4",
                    "--positions", "2048", "--out", root_ + "/slow"})
                  .exit_code,
              0);
  }
  static void TearDownTestSuite() { RemoveRoot(); }

  std::shared_ptr<grpc::Channel> Channel() {
    auto channel = rpc::MakeChannel({address_, ca_, false}, grpc::ChannelArguments());
    EXPECT_TRUE(channel.ok()) << channel.status().ToString();
    return channel.ok() ? *channel : nullptr;
  }

  // Calls "/service/method" with an empty request (a valid message of every request type) and
  // `credential` (none when empty); the status it ends with.
  grpc::Status CallRaw(const std::string& method, const std::string& credential) {
    grpc::GenericStub stub(Channel());
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 10s);
    if (!credential.empty()) rpc::Authorize(&context, credential);
    grpc::CompletionQueue cq;
    // An empty message of any request type: zero bytes, but a message (a ByteBuffer without one
    // would send none, and the server would not run the method at all).
    grpc::Slice empty("");
    grpc::ByteBuffer request(&empty, 1), response;
    std::unique_ptr<grpc::GenericClientAsyncResponseReader> call =
        stub.PrepareUnaryCall(&context, method, request, &cq);
    call->StartCall();
    grpc::Status status;
    call->Finish(&response, &status, reinterpret_cast<void*>(1));
    void* tag = nullptr;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&tag, &ok));
    cq.Shutdown();
    while (cq.Next(&tag, &ok)) {
    }
    return status;
  }

  // Every method of every service, as "/package.Service/Method".
  static std::vector<std::string> AllMethods() {
    // The generated files register the descriptors when they are linked in: naming a message of
    // each links it.
    (void)v1::HealthRequest::descriptor();
    (void)v1::EnrollRequest::descriptor();
    (void)v1::CreateUserRequest::descriptor();
    std::vector<std::string> out;
    for (const char* name : kServices) {
      const auto* service = google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(name);
      EXPECT_NE(service, nullptr) << name;
      if (service == nullptr) continue;
      for (int i = 0; i < service->method_count(); ++i) {
        out.push_back("/" + std::string(name) + "/" + service->method(i)->name());
      }
    }
    return out;
  }

  // A join token from the admin, and an agent credential for worker_id enrolled with it.
  std::string Enroll(const std::string& worker_id) {
    CliResult join = FujiAs(admin_token_, {"admin", "agent-token"}, address_);
    EXPECT_EQ(join.exit_code, 0) << join.err;
    std::string token = join.out.substr(0, join.out.find('\n'));
    auto stub = v1::WorkerService::NewStub(Channel());
    grpc::ClientContext context;
    rpc::Authorize(&context, token);
    v1::EnrollRequest request;
    request.set_worker_id(worker_id);
    v1::EnrollResponse response;
    grpc::Status s = stub->Enroll(&context, request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return response.credential();
  }

  // The credential an enrolled fuji-agent keeps in its state directory.
  std::string SavedCredential(const std::string& worker_id) {
    auto j = nlohmann::json::parse(Slurp(dir_ + "/agent-" + worker_id + "/credential.json"), nullptr, false);
    EXPECT_TRUE(j.is_object());
    return j.is_object() ? j.value("credential", "") : "";
  }

  // A successful Complete of job `id`'s attempt 0, first placement, sent with `credential`, naming
  // worker_id.
  grpc::Status CompleteAs(const std::string& credential, const std::string& worker_id, int64_t id,
                          const std::string& text) {
    auto stub = v1::WorkerService::NewStub(Channel());
    grpc::ClientContext context;
    rpc::Authorize(&context, credential);
    v1::CompleteRequest request;
    request.set_worker_id(worker_id);
    request.set_job_id(id);
    request.set_lease_epoch(1);
    request.set_succeeded(true);
    request.set_result_json(nlohmann::json{{"text", text}}.dump());
    v1::CompleteResponse response;
    return stub->Complete(&context, request, &response);
  }

  int64_t SubmitAs(const std::string& token, const std::string& model, int tokens) {
    CliResult r = FujiAs(token,
                         {"submit", "infer", "--model", model, "--prompt", "secret prompt of a user",
                          "--max-new-tokens", std::to_string(tokens), "--ignore-eos", "--output", "json"},
                         address_);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    return j.is_object() ? j.value("id", int64_t{0}) : 0;
  }
};

TEST_F(AuthTest, EveryRpcRefusesNoTokenAWrongOneAndARevokedOne) {
  auto daemon = StartDaemon();
  const std::string bob = AddUser("bob");
  ASSERT_EQ(FujiAs(admin_token_, {"admin", "user", "revoke", "bob"}, address_).exit_code, 0);
  // A well-formed token whose secret is wrong, and one that is not a token at all.
  std::string wrong = token_;
  wrong.back() = wrong.back() == '0' ? '1' : '0';
  const std::vector<std::string> methods = AllMethods();
  ASSERT_GE(methods.size(), 20u);
  for (const std::string& method : methods) {
    for (const std::string& credential : {std::string(), wrong, std::string("not-a-token"), bob}) {
      grpc::Status s = CallRaw(method, credential);
      EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED)
          << method << " with '" << credential.substr(0, 8) << "...': " << s.error_message();
    }
  }
  // The CLI says so in one line.
  for (const std::string& token : {std::string("fuji_u_1_") + std::string(64, 'a'), bob}) {
    CliResult r = FujiAs(token, {"jobs"}, address_);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find("token"), std::string::npos) << r.err;
  }
  CliResult none = FujiWithEnv("FUJI_CA=" + Quote(ca_) + " FUJI_TOKEN= HOME=" + Quote(dir_), {"jobs"}, address_);
  EXPECT_NE(none.exit_code, 0);
  EXPECT_EQ(std::count(none.err.begin(), none.err.end(), '\n'), 1) << none.err;
  // Revocation held from the next call, and bob's token is not stored anywhere.
  EXPECT_EQ(Sql("SELECT COUNT(*) FROM credentials WHERE hash LIKE '%" + bob.substr(bob.size() - 16) + "%'"), "0\n");
}

TEST_F(AuthTest, UsersSeeOnlyTheirOwnJobsAndAdminsSeeAll) {
  auto daemon = StartDaemon();
  auto agent = StartAgent("node-a", 1);
  const std::string bob = AddUser("bob");
  const int64_t id = SubmitAs(token_, root_ + "/tiny", 8);
  ASSERT_GT(id, 0);
  ASSERT_TRUE(WaitForState(id, "SUCCEEDED", 120s)) << daemon->log() << agent->log();
  const std::string sid = std::to_string(id);
  const std::string missing = "999999";
  // For bob, alice's job answers exactly as a job that does not exist.
  for (const std::vector<std::string>& command :
       std::vector<std::vector<std::string>>{{"show"}, {"logs"}, {"result"}, {"samples"}, {"timings"},
                                             {"losses"}, {"watch"}, {"cancel"}}) {
    std::vector<std::string> theirs = command, nothing = command;
    theirs.push_back(sid);
    nothing.push_back(missing);
    CliResult a = FujiAs(bob, theirs, address_);
    CliResult b = FujiAs(bob, nothing, address_);
    EXPECT_NE(a.exit_code, 0) << command[0];
    EXPECT_EQ(a.exit_code, b.exit_code) << command[0];
    std::string said = a.err;
    for (size_t at = said.find(sid); at != std::string::npos; at = said.find(sid, at + missing.size())) {
      said.replace(at, sid.size(), missing);
    }
    EXPECT_EQ(said, b.err) << command[0];
    EXPECT_NE(a.err.find("not found"), std::string::npos) << command[0] << ": " << a.err;
  }
  CliResult listed = FujiAs(bob, {"jobs", "--output", "json"}, address_);
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_EQ(listed.out.find("\"id\": " + sid), std::string::npos) << listed.out;
  EXPECT_NE(FujiAs(bob, {"jobs", "--all"}, address_).exit_code, 0) << "--all is for admins";
  // Alice and the admin see it; the admin sees its owner.
  EXPECT_EQ(Show(id)["owner"], "alice");
  CliResult all = FujiAs(admin_token_, {"jobs", "--all", "--output", "json"}, address_);
  ASSERT_EQ(all.exit_code, 0) << all.err;
  auto listed_all = nlohmann::json::parse(all.out, nullptr, false);
  ASSERT_TRUE(listed_all.is_object() && listed_all["jobs"].is_array()) << all.out;
  bool seen = false;
  for (const auto& j : listed_all["jobs"]) seen = seen || (j.value("id", int64_t{0}) == id && j.value("owner", "") == "alice");
  EXPECT_TRUE(seen) << all.out;
  CliResult table = FujiAs(admin_token_, {"jobs", "--all"}, address_);
  EXPECT_NE(table.out.find("OWNER"), std::string::npos) << table.out;
  EXPECT_EQ(FujiAs(admin_token_, {"result", sid}, address_).exit_code, 0);
}

TEST_F(AuthTest, AClientWithoutTheClusterCaFailsTheHandshakeInOneLine) {
  auto daemon = StartDaemon();
  // Another CA, made the way an operator would.
  const std::string other = dir_ + "/other-ca.pem";
  ASSERT_EQ(std::system(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 "
                         "-subj /CN=another -keyout " + dir_ + "/other-ca.key -out " + other + " 2>/dev/null")
                            .c_str()),
            0);
  CliResult r = FujiWithEnv("FUJI_CA=" + Quote(other) + " FUJI_TOKEN=" + Quote(token_), {"jobs"}, address_);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("TLS"), std::string::npos) << r.err;
  // The server refused the handshake: no call reached it.
  auto stub = v1::JobService::NewStub(*rpc::MakeChannel({address_, other, false}, grpc::ChannelArguments()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 5s);
  rpc::Authorize(&context, token_);
  v1::HealthResponse health;
  EXPECT_EQ(stub->Health(&context, v1::HealthRequest(), &health).error_code(), grpc::StatusCode::UNAVAILABLE);
  // No CA at all: said before any call.
  CliResult none = FujiWithEnv("FUJI_TOKEN=" + Quote(token_) + " HOME=" + Quote(dir_), {"jobs"}, address_);
  EXPECT_NE(none.exit_code, 0);
  EXPECT_EQ(std::count(none.err.begin(), none.err.end(), '\n'), 1) << none.err;
}

TEST_F(AuthTest, AgentCredentialsAndUserTokensStayOnTheirSide) {
  auto daemon = StartDaemon();
  const std::string agent = Enroll("node-x");
  for (const std::string& method : AllMethods()) {
    const bool worker_api = method.rfind("/fuji.v1.WorkerService/", 0) == 0;
    if (worker_api) {
      if (method.find("/Enroll") != std::string::npos) continue;  // a join token's
      EXPECT_EQ(CallRaw(method, token_).error_code(), grpc::StatusCode::PERMISSION_DENIED) << method;
      EXPECT_EQ(CallRaw(method, admin_token_).error_code(), grpc::StatusCode::PERMISSION_DENIED) << method;
    } else {
      EXPECT_EQ(CallRaw(method, agent).error_code(), grpc::StatusCode::PERMISSION_DENIED) << method;
    }
  }
  // Admin calls need an admin.
  EXPECT_EQ(CallRaw("/fuji.v1.AdminService/ListUsers", token_).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(CallRaw("/fuji.v1.AdminService/ListUsers", admin_token_).ok());
}

TEST_F(AuthTest, AgentsAreBoundToTheirWorkerIdsAndTheirLeases) {
  auto daemon = StartDaemon();
  auto node_a = StartAgent("node-a", 1);
  const int64_t id = SubmitAs(token_, root_ + "/slow", 2000);
  ASSERT_TRUE(WaitForState(id, "RUNNING", 60s)) << daemon->log() << node_a->log();
  // A second agent cannot enroll under node-a.
  {
    CliResult join = FujiAs(admin_token_, {"admin", "agent-token"}, address_);
    ASSERT_EQ(join.exit_code, 0) << join.err;
    auto stub = v1::WorkerService::NewStub(Channel());
    grpc::ClientContext context;
    rpc::Authorize(&context, join.out.substr(0, join.out.find('\n')));
    v1::EnrollRequest request;
    request.set_worker_id("node-a");
    v1::EnrollResponse response;
    EXPECT_EQ(stub->Enroll(&context, request, &response).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  }
  const nlohmann::json before = Show(id);
  const std::string b = Enroll("node-b");
  auto stub = v1::WorkerService::NewStub(Channel());
  // node-b cannot speak as node-a, not even to register (which would wipe node-a's devices).
  {
    grpc::ClientContext context;
    rpc::Authorize(&context, b);
    v1::RegisterRequest request;
    request.set_worker_id("node-a");
    v1::RegisterResponse response;
    EXPECT_EQ(stub->Register(&context, request, &response).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  EXPECT_EQ(CompleteAs(b, "node-a", id, "forged").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // As itself, for a job leased to node-a: refused, nothing kept.
  {
    grpc::ClientContext context;
    rpc::Authorize(&context, b);
    v1::JobReport report;
    report.set_worker_id("node-b");
    report.set_job_id(id);
    v1::LogLine* line = report.add_logs();
    line->set_stream("rank0/stderr");
    line->set_line("forged line");
    v1::ReportResponse response;
    ASSERT_TRUE(stub->Report(&context, report, &response).ok());
    EXPECT_TRUE(response.cancel()) << "told to stop what is not its own";
  }
  EXPECT_EQ(CompleteAs(b, "node-b", id, "forged").error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  nlohmann::json after = Show(id);
  EXPECT_EQ(after["state"], "RUNNING");
  EXPECT_EQ(after["worker_id"], before["worker_id"]);
  EXPECT_EQ(after["attempts"], before["attempts"]);
  EXPECT_EQ(Fuji({"logs", std::to_string(id)}, address_).out.find("forged"), std::string::npos);
  EXPECT_NE(daemon->log().find("not leased to it"), std::string::npos) << daemon->log();

  // Once it ends, node-a's own completion of the old attempt changes nothing either.
  ASSERT_EQ(Fuji({"cancel", std::to_string(id)}, address_).exit_code, 0);
  ASSERT_TRUE(WaitForState(id, "CANCELLED", 60s)) << daemon->log() << node_a->log();
  EXPECT_TRUE(CompleteAs(SavedCredential("node-a"), "node-a", id, "late").ok());
  EXPECT_EQ(Show(id)["state"], "CANCELLED");
  EXPECT_NE(Fuji({"result", std::to_string(id)}, address_).exit_code, 0) << "no result was taken";
}

}  // namespace
}  // namespace fuji::testing
