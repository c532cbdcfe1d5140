// fujid's listings, backups and admins' persisted intent against the real server: pages of jobs
// with large specs stay under the message limit and cover every job once; a backup taken while
// fujid runs is a database another fujid starts from; a drain and a priority change outlive a
// restart of fujid; who may do each.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "fuji/v1/admin.grpc.pb.h"
#include "lib/common/limits.h"
#include "tests/integration/fujid_test_util.h"
#include "tests/unit/sqlite_integrity.h"

namespace fuji::testing {
namespace {

using ::testing::HasSubstr;

class FujidAdminTest : public FujidTest {
 protected:
  void StartAll() {
    StartServer();
    if (admin_token_.empty()) {
      auto admin = server_->auth()->CreateUser("root", /*admin=*/true);
      ASSERT_TRUE(admin.ok()) << admin.status().ToString();
      admin_token_ = admin->token;
      auto other = server_->auth()->CreateUser("other", /*admin=*/false);
      ASSERT_TRUE(other.ok()) << other.status().ToString();
      other_token_ = other->token;
    }
    admin_ = v1::AdminService::NewStub(Channel(admin_token_));
    admin_jobs_ = v1::JobService::NewStub(Channel(admin_token_));
    other_jobs_ = v1::JobService::NewStub(Channel(other_token_));
    users_admin_ = v1::AdminService::NewStub(Channel(user_token_));
  }
  void Restart() {
    StopServer();
    StartAll();
  }

  std::shared_ptr<grpc::Channel> Channel(const std::string& token) {
    auto files = security::EnsureClusterPki(dir_, security::ServerSans("127.0.0.1:0", {}));
    EXPECT_TRUE(files.ok());
    auto tls = security::LoadTlsMaterial(*files);
    EXPECT_TRUE(tls.ok());
    grpc::SslCredentialsOptions ca;
    ca.pem_root_certs = tls->ca_pem;
    return grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(server_->port()),
        grpc::CompositeChannelCredentials(grpc::SslCredentials(ca), grpc::AccessTokenCredentials(token)));
  }

  grpc::Status Drain(v1::AdminService::Stub* stub, const std::string& worker_id, bool drain) {
    grpc::ClientContext context;
    v1::DrainAgentRequest request;
    request.set_worker_id(worker_id);
    request.set_drain(drain);
    v1::Agent agent;
    return stub->DrainAgent(&context, request, &agent);
  }

  grpc::Status SetPriority(v1::JobService::Stub* stub, int64_t id, int priority, v1::Job* job = nullptr) {
    grpc::ClientContext context;
    v1::SetPriorityRequest request;
    request.set_id(id);
    request.set_priority(priority);
    v1::Job response;
    grpc::Status status = stub->SetPriority(&context, request, &response);
    if (job != nullptr) *job = response;
    return status;
  }

  // The backup's chunks joined, checked against the size each announces; each chunk's size in
  // sizes.
  grpc::Status Backup(v1::AdminService::Stub* stub, std::string* bytes, std::vector<size_t>* sizes) {
    grpc::ClientContext context;
    auto reader = stub->Backup(&context, v1::BackupRequest());
    v1::BackupChunk chunk;
    int64_t total = -1;
    while (reader->Read(&chunk)) {
      if (total < 0) total = chunk.total_bytes();
      EXPECT_EQ(chunk.total_bytes(), total);
      bytes->append(chunk.data());
      sizes->push_back(chunk.data().size());
    }
    grpc::Status status = reader->Finish();
    if (status.ok()) {
      EXPECT_EQ(static_cast<int64_t>(bytes->size()), total);
    }
    return status;
  }

  // GetJob until the job's reason holds `text` (or the time is up); returns the last view.
  v1::Job WaitForReason(int64_t id, const std::string& text) {
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(kPatienceMs);
    v1::Job job = GetJob(id);
    while (job.reason().find(text) == std::string::npos && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      job = GetJob(id);
    }
    return job;
  }

  std::string admin_token_, other_token_;
  std::unique_ptr<v1::AdminService::Stub> admin_, users_admin_;
  std::unique_ptr<v1::JobService::Stub> admin_jobs_, other_jobs_;
};

TEST_F(FujidAdminTest, PagesOfLargeSpecsStayUnderTheMessageLimitAndCoverEveryJobOnce) {
  StartAll();
  // Twenty specs of 900 KB: 18 MB together, four times what a client takes in one message.
  const std::string prompt(900 << 10, 'a');
  std::set<int64_t> submitted;
  for (int i = 0; i < 20; ++i) {
    v1::Job job;
    ASSERT_TRUE(Submit(Spec({{"prompt", prompt}}), &job).ok());
    submitted.insert(job.id());
  }
  std::set<int64_t> listed;
  int64_t token = 0;
  int pages = 0;
  do {
    grpc::ClientContext context;
    v1::ListJobsRequest request;
    request.set_limit(7);
    request.set_page_token(token);
    v1::ListJobsResponse page;
    grpc::Status status = jobs_->ListJobs(&context, request, &page);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_LE(page.jobs_size(), 7);
    for (const v1::Job& job : page.jobs()) {
      EXPECT_TRUE(listed.insert(job.id()).second) << "job " << job.id() << " on two pages";
      EXPECT_EQ(job.spec_json(), "");
      EXPECT_EQ(job.device_kind(), "cpu");
    }
    token = page.next_page_token();
    ++pages;
  } while (token != 0 && pages < 10);
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(listed, submitted);
  // One job whole: the spec is there.
  EXPECT_GT(GetJob(*submitted.begin()).spec_json().size(), prompt.size());

  grpc::ClientContext context;
  v1::ListJobsRequest bad;
  bad.set_page_token(-5);
  v1::ListJobsResponse page;
  EXPECT_EQ(jobs_->ListJobs(&context, bad, &page).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(FujidAdminTest, ABackupTakenWhileFujidRunsIsADatabaseFujidStartsFrom) {
  StartAll();
  struct stat st {};
  ASSERT_EQ(::stat((dir_ + "/fujid.db").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "the database is private";
  // A few MB of specs, so the copy takes several chunks.
  const std::string prompt(800 << 10, 'b');
  std::set<int64_t> submitted;
  for (int i = 0; i < 4; ++i) {
    v1::Job job;
    ASSERT_TRUE(Submit(Spec({{"prompt", prompt}}), &job).ok());
    submitted.insert(job.id());
  }
  std::string bytes;
  std::vector<size_t> sizes;
  grpc::Status refused = Backup(users_admin_.get(), &bytes, &sizes);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(bytes.empty());

  grpc::Status status = Backup(admin_.get(), &bytes, &sizes);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GT(sizes.size(), 2u);
  for (size_t size : sizes) EXPECT_LE(size, size_t{1} << 20);
  // Nothing is left beside the database.
  int beside = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    beside += entry.path().filename().string().find(".backup-") != std::string::npos;
  }
  EXPECT_EQ(beside, 0);
  // Submitted after the copy: not in it.
  ASSERT_TRUE(Submit(Spec(), nullptr).ok());

  const std::string copy = dir_ + "/copy.db";
  std::ofstream(copy, std::ios::binary) << bytes;
  EXPECT_EQ(IntegrityCheck(copy), "ok");

  // A second fujid on the copy, beside the first: its jobs are the ones backed up.
  store::SystemClock clock;
  auto store = store::JobStore::Open(copy, &clock);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  daemon::ServerOptions options = Options();
  options.listen = "127.0.0.1:0";
  options.insecure = true;
  auto second = daemon::DaemonServer::Start(options, store->get(), &clock);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  auto page = (*store)->List({});
  ASSERT_TRUE(page.ok());
  std::set<int64_t> copied;
  for (const store::JobRecord& job : page->jobs) copied.insert(job.id);
  EXPECT_EQ(copied, submitted);
  (*second)->Stop();
}

TEST_F(FujidAdminTest, ADrainOutlivesFujidAndRunningJobsGoOn) {
  StartAll();
  Register("node-a", 2);
  v1::Job running;
  SubmitAndStart("node-a", &running);
  EXPECT_EQ(Drain(users_admin_.get(), "node-a", true).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Drain(admin_.get(), "nobody", true).error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(Drain(admin_.get(), "node-a", true).ok());

  // fujid restarts; the drain holds.
  Restart();
  Register("node-a", 2, "cpu", {{running.id(), 0}});
  {
    grpc::ClientContext context;
    v1::ListAgentsResponse agents;
    ASSERT_TRUE(admin_->ListAgents(&context, v1::ListAgentsRequest(), &agents).ok());
    ASSERT_EQ(agents.agents_size(), 1);
    EXPECT_GT(agents.agents(0).drained_at_ms(), 0);
  }
  v1::Job waiting;
  ASSERT_TRUE(Submit(Spec(), &waiting).ok());
  EXPECT_EQ(Poll("node-a", 500).assignments_size(), 0);
  v1::Job job = WaitForReason(waiting.id(), "drained");
  EXPECT_EQ(job.state(), v1::QUEUED);
  EXPECT_THAT(job.reason(), HasSubstr("drained"));
  EXPECT_EQ(GetJob(running.id()).state(), v1::RUNNING) << "the job it ran goes on";

  ASSERT_TRUE(Drain(admin_.get(), "node-a", false).ok());
  v1::PollAssignmentsResponse assigned = Poll("node-a", kPatienceMs);
  ASSERT_EQ(assigned.assignments_size(), 1);
  EXPECT_EQ(assigned.assignments(0).job_id(), waiting.id());
}

TEST_F(FujidAdminTest, APriorityChangeOutlivesFujidForItsOwnerAndAdminsOnly) {
  StartAll();
  v1::Job first, second;
  ASSERT_TRUE(Submit(Spec(), &first).ok());
  ASSERT_TRUE(Submit(Spec(), &second).ok());
  v1::Job changed;
  ASSERT_TRUE(SetPriority(jobs_.get(), second.id(), 5, &changed).ok());
  EXPECT_EQ(changed.priority(), 5);
  ASSERT_TRUE(SetPriority(admin_jobs_.get(), first.id(), -3).ok());
  // Another user's job is as missing as one that never was, word for word.
  grpc::Status others = SetPriority(other_jobs_.get(), second.id(), 9);
  grpc::Status missing = SetPriority(other_jobs_.get(), second.id() + 1000, 9);
  EXPECT_EQ(others.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::NOT_FOUND);
  std::string others_message = others.error_message(), missing_message = missing.error_message();
  const std::string others_id = std::to_string(second.id()), missing_id = std::to_string(second.id() + 1000);
  others_message.replace(others_message.find(others_id), others_id.size(), "N");
  missing_message.replace(missing_message.find(missing_id), missing_id.size(), "N");
  EXPECT_EQ(others_message, missing_message);
  EXPECT_EQ(SetPriority(jobs_.get(), second.id(), limits::kMaxPriority + 1).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  Restart();
  EXPECT_EQ(GetJob(second.id()).priority(), 5);
  Register("node-a", 1);
  v1::PollAssignmentsResponse assigned = Poll("node-a", kPatienceMs);
  ASSERT_EQ(assigned.assignments_size(), 1);
  EXPECT_EQ(assigned.assignments(0).job_id(), second.id()) << "the higher priority goes first";
  EXPECT_EQ(SetPriority(jobs_.get(), second.id(), 1).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(FujidAdminTest, APriorityChangeReordersTheQueueOfARunningFujid) {
  StartAll();
  v1::Job first, second;
  ASSERT_TRUE(Submit(Spec(), &first).ok());
  ASSERT_TRUE(Submit(Spec(), &second).ok());
  ASSERT_TRUE(SetPriority(jobs_.get(), second.id(), 1).ok());
  Register("node-a", 1);
  v1::PollAssignmentsResponse assigned = Poll("node-a", kPatienceMs);
  ASSERT_EQ(assigned.assignments_size(), 1);
  EXPECT_EQ(assigned.assignments(0).job_id(), second.id());
}

}  // namespace
}  // namespace fuji::testing
