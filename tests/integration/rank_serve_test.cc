// fuji-rank serving many inference requests at once (worker/rank/rank_service.h): a real rank
// process given 16 requests together runs them in one batch and returns the tokens the same
// requests give one at a time; token events concatenate to the result; a cancel ends one
// request only; stop strings cut the text; a malformed request gets an error and the rank goes on.
#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "worker/launcher/child_process.h"

namespace fuji {
namespace {

using std::chrono::milliseconds;

// What one request's events said.
struct Reply {
  std::vector<nlohmann::json> tokens;  // "token" events in order
  std::optional<nlohmann::json> result;
  std::optional<nlohmann::json> error;
  bool started = false;
  bool done() const { return result || error; }
};

class RankServeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_dir_ = new std::string(::testing::TempDir() + "/rank_serve_model_" + std::to_string(::getpid()));
    std::filesystem::remove_all(*model_dir_);
    auto rank = Spawn();
    ASSERT_TRUE(rank);
    ASSERT_TRUE(rank->Send({{"op", "init"}, {"id", "init"}, {"out", *model_dir_}, {"arch", "tiny"}, {"seed", 3},
                            {"layers", 2}, {"vocab_dir", std::string(FUJI_BINARY_DIR) + "/share/fuji"}})
                    .ok());
    rank->CloseInput();
    std::map<std::string, Reply> replies;
    std::vector<nlohmann::json> untagged;
    Collect(rank.get(), {"init"}, &replies, &untagged);
    ASSERT_TRUE(replies["init"].result) << (replies["init"].error ? replies["init"].error->dump() : "no answer");
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*model_dir_);
    delete model_dir_;
  }

  static std::unique_ptr<launch::ChildProcess> Spawn() {
    auto exe = launch::FindRankExecutable();
    EXPECT_TRUE(exe.ok()) << exe.status().ToString();
    if (!exe.ok()) return nullptr;
    auto rank = launch::ChildProcess::Spawn({*exe, {}, {}});
    EXPECT_TRUE(rank.ok()) << rank.status().ToString();
    return rank.ok() ? std::move(rank).value() : nullptr;
  }

  // Reads events until every id in `ids` has a result or an error; events without an id go to
  // `untagged`. `on_event` sees each event as it comes.
  static void Collect(launch::ChildProcess* rank, const std::set<std::string>& ids, std::map<std::string, Reply>* replies,
                      std::vector<nlohmann::json>* untagged,
                      const std::function<void(const nlohmann::json&)>& on_event = nullptr) {
    auto all_done = [&] {
      for (const auto& id : ids) {
        if (!(*replies)[id].done()) return false;
      }
      return true;
    };
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (!all_done()) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the rank did not answer every request";
      auto next = rank->Next(milliseconds(1000));
      if (!next.ok()) continue;  // nothing within the second
      ASSERT_TRUE(next->has_value()) << "the rank ended early";
      const launch::ChildOutput& out = **next;
      if (out.kind != launch::ChildOutput::Kind::kEvent) continue;
      const nlohmann::json& e = out.event;
      if (on_event) on_event(e);
      if (!e.contains("id")) {
        untagged->push_back(e);
        continue;
      }
      Reply& r = (*replies)[e.value("id", "")];
      const std::string kind = e.value("event", "");
      ASSERT_FALSE(r.done()) << "an event after the request ended: " << e.dump();
      if (kind == "started") r.started = true;
      if (kind == "token") r.tokens.push_back(e);
      if (kind == "result") r.result = e["result"];
      if (kind == "error") r.error = e;
    }
  }

  // 16 requests: text prompts of different lengths, greedy and seeded sampling, different lengths.
  static std::vector<nlohmann::json> Requests() {
    std::vector<nlohmann::json> out;
    for (int i = 0; i < 16; ++i) {
      std::string prompt = "Request " + std::to_string(i) + ":";
      for (int w = 0; w < i * 3; ++w) prompt += " word" + std::to_string(w * 7 % 13);
      nlohmann::json r = {{"op", "infer"}, {"id", "q" + std::to_string(i)}, {"model", *model_dir_},
                          {"prompt", prompt}, {"max_new_tokens", 24 + (i * 5) % 17}, {"ignore_eos", i % 2 == 0}};
      if (i % 3 == 1) {
        r["greedy"] = false;
        r["seed"] = 100 + i;
        r["temperature"] = 0.9;
        r["top_k"] = 50;
      }
      out.push_back(r);
    }
    return out;
  }

  // Each request's token events: indices follow on, ids concatenate to output_ids and texts to
  // the result's text.
  static void ExpectTokensMatchResult(const std::string& id, const Reply& r) {
    ASSERT_TRUE(r.result) << id << ": " << (r.error ? r.error->dump() : "no result");
    std::vector<int32_t> ids;
    std::string text;
    for (const auto& e : r.tokens) {
      EXPECT_EQ(e.value("index", -1), static_cast<int64_t>(ids.size())) << id;
      for (const auto& t : e["ids"]) ids.push_back(t.get<int32_t>());
      text += e.value("text", "");
      EXPECT_LE(e["ids"].size(), 16u) << id << ": at most 16 tokens in a token event";
    }
    EXPECT_EQ(ids, (*r.result)["output_ids"].get<std::vector<int32_t>>()) << id;
    EXPECT_EQ(text, (*r.result).value("text", "")) << id;
  }

  static std::string* model_dir_;
};

std::string* RankServeTest::model_dir_ = nullptr;

TEST_F(RankServeTest, SixteenAtOnceRunInOneBatchAndGiveTheTokensOfOneAtATime) {
  const std::vector<nlohmann::json> requests = Requests();
  std::set<std::string> ids;
  for (const auto& r : requests) ids.insert(r["id"].get<std::string>());

  auto together = Spawn();
  ASSERT_TRUE(together);
  for (const auto& r : requests) ASSERT_TRUE(together->Send(r).ok());
  std::map<std::string, Reply> batched;
  std::vector<nlohmann::json> untagged;
  ASSERT_NO_FATAL_FAILURE(Collect(together.get(), ids, &batched, &untagged));
  together->CloseInput();
  EXPECT_TRUE(together->Wait().Succeeded());

  auto alone = Spawn();
  ASSERT_TRUE(alone);
  std::map<std::string, Reply> sequential;
  for (const auto& r : requests) {
    ASSERT_TRUE(alone->Send(r).ok());
    ASSERT_NO_FATAL_FAILURE(Collect(alone.get(), {r["id"].get<std::string>()}, &sequential, &untagged));
  }
  alone->CloseInput();
  EXPECT_TRUE(alone->Wait().Succeeded());
  EXPECT_TRUE(untagged.empty());

  int64_t max_batch = 0;
  for (const auto& id : ids) {
    ASSERT_NO_FATAL_FAILURE(ExpectTokensMatchResult(id, batched[id]));
    ASSERT_NO_FATAL_FAILURE(ExpectTokensMatchResult(id, sequential[id]));
    const nlohmann::json& b = *batched[id].result;
    const nlohmann::json& s = *sequential[id].result;
    EXPECT_EQ(b["output_ids"], s["output_ids"]) << id;
    EXPECT_EQ(b["prompt_ids"], s["prompt_ids"]) << id;
    EXPECT_EQ(b["text"], s["text"]) << id;
    EXPECT_EQ(b["finish_reason"], s["finish_reason"]) << id;
    EXPECT_TRUE(b["timings"].contains("queue_ms")) << id;
    EXPECT_GT(b["model"].value("mib", 0.0), 0.0) << id;
    EXPECT_EQ(s["batch"].value("max_batch_seen", 0), 1) << id;
    max_batch = std::max<int64_t>(max_batch, b["batch"].value("max_batch_seen", 0));
  }
  EXPECT_EQ(max_batch, 16) << "the sixteen ran in one batch";
}

TEST_F(RankServeTest, CancelEndsOneRequestOnly) {
  auto rank = Spawn();
  ASSERT_TRUE(rank);
  for (const char* id : {"a", "b", "c"}) {
    ASSERT_TRUE(rank->Send({{"op", "infer"}, {"id", id}, {"model", *model_dir_}, {"prompt", std::string("Once ") + id},
                            {"max_new_tokens", 200}, {"ignore_eos", true}})
                    .ok());
  }
  std::map<std::string, Reply> replies;
  std::vector<nlohmann::json> untagged;
  bool sent_cancel = false;
  ASSERT_NO_FATAL_FAILURE(Collect(rank.get(), {"a", "b", "c"}, &replies, &untagged, [&](const nlohmann::json& e) {
    if (!sent_cancel && e.value("event", "") == "token" && e.value("id", "") == "b") {
      sent_cancel = true;
      ASSERT_TRUE(rank->Send({{"op", "cancel"}, {"id", "b"}}).ok());
    }
  }));
  ASSERT_TRUE(replies["b"].error);
  EXPECT_EQ(replies["b"].error->value("reason", ""), "cancelled");
  EXPECT_FALSE(replies["b"].result);
  for (const char* id : {"a", "c"}) {
    ASSERT_NO_FATAL_FAILURE(ExpectTokensMatchResult(id, replies[id]));
    EXPECT_EQ((*replies[id].result)["output_ids"].size(), 200u) << id;
    EXPECT_EQ((*replies[id].result)["finish_reason"], "length") << id;
  }
  // A cancel for a request that has ended says nothing; the rank still serves.
  ASSERT_TRUE(rank->Send({{"op", "cancel"}, {"id", "a"}}).ok());
  ASSERT_TRUE(rank->Send({{"op", "load"}, {"id", "pin"}, {"model", *model_dir_}}).ok());
  ASSERT_NO_FATAL_FAILURE(Collect(rank.get(), {"pin"}, &replies, &untagged));
  ASSERT_TRUE(replies["pin"].result) << replies["pin"].error->dump();
  EXPECT_EQ((*replies["pin"].result)["loaded"], true);
  EXPECT_EQ((*replies["pin"].result)["resident"], true);
  EXPECT_GT((*replies["pin"].result).value("mib", 0.0), 0.0);
  rank->CloseInput();
  EXPECT_TRUE(rank->Wait().Succeeded());
  EXPECT_TRUE(untagged.empty());
}

TEST_F(RankServeTest, StopStringsCutTheTextAndBadRequestsGetErrorsWhileTheRankGoesOn) {
  auto rank = Spawn();
  ASSERT_TRUE(rank);
  std::map<std::string, Reply> replies;
  std::vector<nlohmann::json> untagged;
  nlohmann::json base = {{"op", "infer"}, {"model", *model_dir_}, {"prompt", "The weather today"},
                         {"max_new_tokens", 40}, {"ignore_eos", true}};
  nlohmann::json plain = base;
  plain["id"] = "plain";
  ASSERT_TRUE(rank->Send(plain).ok());
  ASSERT_NO_FATAL_FAILURE(Collect(rank.get(), {"plain"}, &replies, &untagged));
  ASSERT_TRUE(replies["plain"].result);
  const std::string full = (*replies["plain"].result)["text"];
  ASSERT_GT(full.size(), 12u) << full;
  // A stop string taken from the middle of the full text: the text ends just before it.
  const std::string stop = full.substr(full.size() / 2, 3);
  const std::string cut = full.substr(0, full.find(stop));

  nlohmann::json stopped = base;
  stopped["id"] = "stopped";
  stopped["stop"] = {"\xF0\x9F\x99\x82 never", stop};
  // Malformed requests between good ones: each gets an error, the others run on.
  ASSERT_TRUE(rank->Send(nlohmann::json::array({1, 2})).ok());
  ASSERT_TRUE(rank->Send({{"op", "infer"}, {"id", "bad_field"}, {"model", *model_dir_}, {"prompt", "x"},
                          {"max_new_tokens", -3}})
                  .ok());
  ASSERT_TRUE(rank->Send({{"op", "infer"}, {"id", "bad_stop"}, {"model", *model_dir_}, {"prompt", "x"},
                          {"stop", {"a", "b", "c", "d", "e"}}})
                  .ok());
  ASSERT_TRUE(rank->Send({{"op", "infer"}, {"id", "no_model"}, {"model", *model_dir_ + "/absent"}, {"prompt", "x"}})
                  .ok());
  ASSERT_TRUE(rank->Send(stopped).ok());
  ASSERT_TRUE(rank->Send({{"op", "infer"}, {"id", "too_long"}, {"model", *model_dir_}, {"prompt_ids", {1, 2, 3}},
                          {"max_new_tokens", 100000}})
                  .ok());
  ASSERT_TRUE(rank->Send({{"op", "nonsense"}, {"id", "what"}}).ok());
  ASSERT_NO_FATAL_FAILURE(Collect(rank.get(), {"bad_field", "bad_stop", "no_model", "stopped", "too_long", "what"},
                                  &replies, &untagged));
  for (const char* id : {"bad_field", "bad_stop", "no_model", "too_long", "what"}) {
    ASSERT_TRUE(replies[id].error) << id;
    EXPECT_EQ(replies[id].error->value("reason", ""), "bad_input") << id << ": " << replies[id].error->dump();
  }
  EXPECT_NE(replies["bad_stop"].error->value("message", "").find("stop"), std::string::npos);
  ASSERT_EQ(untagged.size(), 1u);
  EXPECT_EQ(untagged[0].value("event", ""), "error");
  ASSERT_NO_FATAL_FAILURE(ExpectTokensMatchResult("stopped", replies["stopped"]));
  EXPECT_EQ((*replies["stopped"].result)["finish_reason"], "stop");
  EXPECT_EQ((*replies["stopped"].result)["text"], cut);
  rank->CloseInput();
  EXPECT_TRUE(rank->Wait().Succeeded());
}

// A request for another model waits until the batch drains, then that model replaces the
// resident one; requests behind it for the first model wait their turn too.
TEST_F(RankServeTest, AnotherModelWaitsForTheBatchToDrain) {
  const std::string other = ::testing::TempDir() + "/rank_serve_other_" + std::to_string(::getpid());
  std::filesystem::remove_all(other);
  auto rank = Spawn();
  ASSERT_TRUE(rank);
  ASSERT_TRUE(rank->Send({{"op", "init"}, {"id", "init2"}, {"out", other}, {"arch", "tiny"}, {"seed", 4}, {"layers", 2},
                          {"vocab_dir", std::string(FUJI_BINARY_DIR) + "/share/fuji"}})
                  .ok());
  std::map<std::string, Reply> replies;
  std::vector<nlohmann::json> untagged;
  ASSERT_NO_FATAL_FAILURE(Collect(rank.get(), {"init2"}, &replies, &untagged));
  ASSERT_TRUE(replies["init2"].result);
  auto infer = [&](const std::string& id, const std::string& model, int64_t tokens) {
    return nlohmann::json{{"op", "infer"}, {"id", id}, {"model", model}, {"prompt", "Same prompt"},
                          {"max_new_tokens", tokens}, {"ignore_eos", true}};
  };
  ASSERT_TRUE(rank->Send(infer("a1", *model_dir_, 60)).ok());
  ASSERT_TRUE(rank->Send(infer("b", other, 10)).ok());
  ASSERT_TRUE(rank->Send(infer("a2", *model_dir_, 10)).ok());
  std::vector<std::string> order;
  ASSERT_NO_FATAL_FAILURE(Collect(rank.get(), {"a1", "b", "a2"}, &replies, &untagged, [&](const nlohmann::json& e) {
    if (e.value("event", "") == "result") order.push_back(e.value("id", ""));
  }));
  EXPECT_EQ(order, (std::vector<std::string>{"a1", "b", "a2"}));
  for (const char* id : {"a1", "b", "a2"}) ASSERT_NO_FATAL_FAILURE(ExpectTokensMatchResult(id, replies[id]));
  EXPECT_EQ((*replies["b"].result)["model"]["path"], other);
  EXPECT_EQ((*replies["b"].result)["model"]["resident"], false);
  EXPECT_EQ((*replies["a2"].result)["model"]["resident"], false) << "a1's model was replaced by b's";
  EXPECT_NE((*replies["b"].result)["output_ids"], (*replies["a2"].result)["output_ids"]) << "different weights";
  rank->CloseInput();
  EXPECT_TRUE(rank->Wait().Succeeded());
  std::filesystem::remove_all(other);
}

}  // namespace
}  // namespace fuji
