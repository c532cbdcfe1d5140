// fuji usage end to end: fujid's server (in this process, on fake time, over TLS) with a test
// agent that runs two users' jobs for known times through the worker API, and the real fuji CLI
// asking for usage. Each user sees exactly their own device-hours and tokens; an admin with --all
// sees both, grouped by user or kind; a user's --all is refused.
#include <string>
#include <vector>

#include "tests/integration/fujid_test_util.h"
#include "tests/integration/process_util.h"

namespace fuji::testing {
namespace {

constexpr int64_t kMinuteMs = 60 * 1000;

class UsageTest : public FujidTest {
 protected:
  // Has worker "w" take the queued job, runs it for run_ms of fake time and completes it with
  // result_json.
  void RunJob(int64_t id, int64_t run_ms, const std::string& result_json) {
    RunToSuccess("w", id, result_json, [&] { fake_clock_.AdvanceMs(run_ms); });
    // Read from the store: the job may be another user's.
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(kPatienceMs);
    auto job = store_->Get(id);
    while (job.ok() && job->state != store::JobState::kSucceeded && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      job = store_->Get(id);
    }
    ASSERT_TRUE(job.ok() && job->state == store::JobState::kSucceeded);
  }

  // The CLI as the holder of `token`, talking to this fujid.
  CliResult Usage(const std::string& token, std::vector<std::string> args) {
    args.insert(args.begin(), "usage");
    args.insert(args.end(), {"--server", "127.0.0.1:" + std::to_string(server_->port())});
    return RunFuji(args, dir_,
                   "HOME=" + Quote(dir_) + " XDG_CONFIG_HOME= FUJI_SERVER= FUJI_CA=" + Quote(dir_ + "/ca.crt") +
                       " FUJI_TOKEN=" + Quote(token));
  }

  // The rows of `fuji usage --json` by key.
  std::map<std::string, nlohmann::json> Rows(const std::string& token, std::vector<std::string> args) {
    args.push_back("--json");
    CliResult r = Usage(token, args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::map<std::string, nlohmann::json> rows;
    if (!r.json.is_object()) return rows;
    for (const auto& row : r.json["rows"]) rows[row["key"].get<std::string>()] = row;
    return rows;
  }
};

TEST_F(UsageTest, EachUserSeesTheirOwnAndAdminsSeeEveryone) {
  UseFakeClock();
  StartServer();
  auto bob = server_->auth()->CreateUser("bob", /*admin=*/false);
  auto boss = server_->auth()->CreateUser("boss", /*admin=*/true);
  ASSERT_TRUE(bob.ok() && boss.ok());
  Register("w", 1);

  // tester's inference: 60 minutes on one device, 2 prompt and 3 generated tokens.
  v1::Job mine;
  ASSERT_TRUE(Submit(Spec(), &mine).ok());
  RunJob(mine.id(), 60 * kMinuteMs, R"({"prompt_ids":[1,2],"output_ids":[3,4,5],"text":"abc"})");

  // bob's: 30 minutes, 4 + 6 tokens, submitted through a channel with his token.
  grpc::SslCredentialsOptions ca;
  ca.pem_root_certs = Slurp(dir_ + "/ca.crt");
  auto bobs_jobs = v1::JobService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(server_->port()),
      grpc::CompositeChannelCredentials(grpc::SslCredentials(ca), grpc::AccessTokenCredentials(bob->token))));
  grpc::ClientContext context;
  v1::SubmitRequest request;
  request.set_kind("infer");
  request.set_spec_json(Spec());
  v1::SubmitResponse submitted;
  ASSERT_TRUE(bobs_jobs->Submit(&context, request, &submitted).ok());
  RunJob(submitted.job().id(), 30 * kMinuteMs,
         R"({"prompt_ids":[1,2,3,4],"output_ids":[5,6,7,8,9,10],"text":"abcdef"})");
  // Fake time is 2023's: a window of 100 years holds it.
  const std::string since = "36500d";

  auto testers = Rows(user_token_, {"--since", since});
  ASSERT_EQ(testers.size(), 1u);
  EXPECT_EQ(testers["tester"]["jobs"], 1);
  EXPECT_EQ(testers["tester"]["attempts"], 1);
  EXPECT_EQ(testers["tester"]["device_ms"], 60 * kMinuteMs);
  EXPECT_DOUBLE_EQ(testers["tester"]["device_hours"].get<double>(), 1.0);
  EXPECT_EQ(testers["tester"]["tokens"], 5);

  auto bobs = Rows(bob->token, {"--since", since, "--by", "kind"});
  ASSERT_EQ(bobs.size(), 1u);
  EXPECT_EQ(bobs["infer"]["device_ms"], 30 * kMinuteMs);
  EXPECT_EQ(bobs["infer"]["tokens"], 10);

  // The default window (30 days back from the real clock) holds none of fake 2023's jobs.
  EXPECT_TRUE(Rows(user_token_, {}).empty());

  auto everyone = Rows(boss->token, {"--since", since, "--all"});
  ASSERT_EQ(everyone.size(), 2u);
  EXPECT_EQ(everyone["tester"]["device_ms"], 60 * kMinuteMs);
  EXPECT_EQ(everyone["bob"]["device_ms"], 30 * kMinuteMs);
  EXPECT_EQ(everyone["bob"]["tokens"], 10);
  auto by_model = Rows(boss->token, {"--since", since, "--all", "--by", "model"});
  ASSERT_EQ(by_model.size(), 1u);
  EXPECT_EQ(by_model[dir_ + "/model"]["jobs"], 2);

  // The table: a line per user, most device time first, and the total.
  CliResult table = Usage(boss->token, {"--since", since, "--all"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_THAT(table.out, ::testing::HasSubstr("by user\n"));
  EXPECT_THAT(table.out, ::testing::ContainsRegex("USER +JOBS +ATTEMPTS +DEVICE-HOURS +TOKENS"));
  EXPECT_THAT(table.out, ::testing::ContainsRegex("tester +1 +1 +1\\.00 +5\n"));
  EXPECT_THAT(table.out, ::testing::ContainsRegex("bob +1 +1 +0\\.50 +10\n"));
  EXPECT_THAT(table.out, ::testing::ContainsRegex("TOTAL +2 +2 +1\\.50 +15\n"));
  EXPECT_LT(table.out.find("tester"), table.out.find("bob"));

  // A user's --all is refused; a bad window or grouping never reaches fujid.
  CliResult refused = Usage(bob->token, {"--all"});
  EXPECT_EQ(refused.exit_code, 1) << refused.err;
  EXPECT_THAT(refused.err, ::testing::HasSubstr("only admins"));
  CliResult bad_since = Usage(user_token_, {"--since", "30x"});
  EXPECT_EQ(bad_since.exit_code, 2) << bad_since.err;
  CliResult bad_by = Usage(user_token_, {"--by", "host"});
  EXPECT_EQ(bad_by.exit_code, 2) << bad_by.err;
}

}  // namespace
}  // namespace fuji::testing
