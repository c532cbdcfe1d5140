// The gang: spawn, send, multiplex with poll(2), stop everyone on the first failure, merge.
#include "worker/launcher/gang.h"

#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <thread>

#include "lib/common/file_util.h"
#include "lib/common/json_lines.h"

namespace fuji::launch {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

struct Member {
  std::unique_ptr<ChildProcess> proc;
  bool open = true;  // its pipes still deliver output
  std::optional<ExitInfo> exit;
  std::optional<nlohmann::json> result;
  bool errored = false;  // sent an error event
  std::string last_stderr;
};


// A fresh private directory for the rendezvous file: $TMPDIR or /tmp, mode 0700, owned by the user
// the ranks run as.
Result<std::string> MakeRendezvousDir(const std::optional<Confinement>& confinement) {
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmp != nullptr && tmp[0] == '/' ? tmp : "/tmp") + "/fuji-gang-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) return Internal("cannot create a rendezvous directory in " + tmpl);
  if (confinement && confinement->user &&
      ::chown(tmpl.c_str(), confinement->user->uid, confinement->user->gid) != 0) {
    Status s = Internal("cannot give the rendezvous directory " + tmpl + " to user " +
                        confinement->user->user + ": " + ErrnoMessage());
    ::rmdir(tmpl.c_str());
    return s;
  }
  return tmpl;
}

// Ends every rank that still runs, all at once (each gets the grace), and reaps them.
void TerminateAll(std::vector<Member>& members, milliseconds grace) {
  std::vector<std::thread> threads;
  for (Member& m : members) {
    if (m.exit && !m.proc->OpenOutputFds().empty()) m.exit.reset();  // its group may live on
    if (!m.exit) threads.emplace_back([&m, grace] { m.exit = m.proc->Terminate(grace); });
  }
  for (auto& t : threads) t.join();
}

}  // namespace

Status FailureStatus(const GangFailure& f) {
  switch (f.kind) {
    case GangFailure::Kind::kCancelled: return Cancelled(f.message);
    case GangFailure::Kind::kDeadline: return Unavailable(f.message);
    case GangFailure::Kind::kStart: return Internal(f.message);
    case GangFailure::Kind::kRankExit: return Internal(f.message);
    case GangFailure::Kind::kRankError: break;
  }
  switch (f.reason) {
    case FailureKind::kBadInput: return InvalidArgument(f.message);
    case FailureKind::kCudaOom:
    case FailureKind::kHostOom: return ResourceExhausted(f.message);
    case FailureKind::kCollectiveTimeout: return Unavailable(f.message);
    default: return Internal(f.message);
  }
}

Gang::Gang(FinetuneSpec spec, GangOptions options)
    : request_(spec.ToJson()), ranks_(spec.ranks), world_(spec.ranks), peers_(true), options_(std::move(options)) {
  if (options_.world_size > 0) {
    world_ = options_.world_size;
    first_ = options_.first_rank;
    ranks_ = options_.local_ranks;
  }
}

Gang::Gang(nlohmann::json request, GangOptions options)
    : request_(std::move(request)), ranks_(1), peers_(false), options_(std::move(options)) {}

std::string Gang::Name(int r) const { return peers_ ? "rank " + std::to_string(r) : "fuji-rank"; }

void Gang::Stop() { stop_ = true; }

std::vector<pid_t> Gang::pids() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pids_;
}

Result<nlohmann::json> Gang::Run(const GangCallbacks& callbacks) {
  failure_.reset();
  auto fail = [&](GangFailure f) {
    if (!failure_) failure_ = std::move(f);
  };
  std::string executable = options_.executable;
  if (executable.empty()) {
    auto found = FindRankExecutable();
    if (!found.ok()) return found.status();
    executable = *found;
  }
  const bool spans_agents = peers_ && options_.world_size > 0;
  if (spans_agents) {
    if (world_ > kMaxFinetuneRanks || first_ < 0 || ranks_ < 1 || first_ + ranks_ > world_) {
      return InvalidArgument("ranks " + std::to_string(first_) + ".." + std::to_string(first_ + ranks_ - 1) +
                             " are not within a gang of " + std::to_string(world_));
    }
    if (options_.rendezvous.rfind("tcp:", 0) != 0 || options_.rendezvous.size() > 300) {
      return InvalidArgument("a gang across agents needs a rendezvous tcp:HOST:PORT, not '" +
                             options_.rendezvous.substr(0, 300) + "'");
    }
  }
  std::string dir;  // the rendezvous's, for peers on this machine alone
  if (peers_ && !spans_agents) {
    FUJI_ASSIGN_OR_RETURN(dir, MakeRendezvousDir(options_.confinement));
  }
  const std::string rendezvous = spans_agents ? options_.rendezvous : "file:" + dir + "/store";
  const int n = ranks_;
  const int first = first_;
  const auto begin = Clock::now();

  std::vector<Member> members(static_cast<size_t>(n));
  for (int r = 0; r < n && !failure_; ++r) {
    ChildSpec launch{executable, {}, options_.env, options_.confinement};
    if (options_.rank_env) {
      for (auto& [k, v] : options_.rank_env(first + r)) launch.env[k] = v;
    }
    auto proc = ChildProcess::Spawn(launch);
    if (!proc.ok()) {
      fail({GangFailure::Kind::kStart, first + r, FailureKind::kInternal,
            "cannot start " + Name(first + r) + ": " + proc.status().message(), {}, ""});
      members.resize(static_cast<size_t>(r));
      break;
    }
    members[r].proc = std::move(proc).value();
    nlohmann::json request = request_;
    request["op"] = options_.op;
    request["id"] = options_.id;
    if (peers_) {
      request["rank"] = first + r;
      request["ranks"] = world_;
      request["rendezvous"] = rendezvous;
    }
    (void)members[r].proc->Send(request);  // a rank that cannot read it shows up by its exit
    members[r].proc->CloseInput();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& m : members) pids_.push_back(m.proc->pid());
  }
  if (!failure_ && callbacks.started) callbacks.started(pids());

  // What the gang itself takes from a rank's event: its result, or its first error. Among peers
  // the error's message names the rank; a lone rank's is its own words.
  auto heed = [&](const nlohmann::json& event, int r, Member& m) {
    const std::string kind = event.value("event", "");
    if (kind == "result") {
      m.result = event.value("result", nlohmann::json::object());
    } else if (kind == "error" && !m.errored) {
      const FailureKind reason = ParseFailureKind(event.value("reason", "internal"));
      const std::string said = peers_ ? Name(r) + ": " + event.value("message", event.value("code", "error"))
                                      : event.value("message", "");
      m.errored = true;
      fail({GangFailure::Kind::kRankError, r, reason, said, {}, ""});
    }
  };
  // Reads what rank `first + r` has written so far; marks its pipes closed at their end.
  auto drain = [&](int r) {
    Member& m = members[static_cast<size_t>(r)];
    while (m.open) {
      auto next = m.proc->Next(milliseconds(0));
      if (!next.ok()) {
        if (next.status().code() != StatusCode::kUnavailable) m.open = false;
        break;
      }
      if (!next->has_value()) {
        m.open = false;
        break;
      }
      ChildOutput& out = **next;
      if (out.kind == ChildOutput::Kind::kLog) {
        if (!out.line.empty()) m.last_stderr = out.line;
      } else {
        try {
          heed(out.event, first + r, m);
        } catch (const nlohmann::json::exception&) {
          // A malformed event means nothing to the gang; the owner's output callback sees it.
        }
      }
      if (callbacks.output) callbacks.output({first + r, std::move(out)});
    }
  };
  // A lone rank's error event does not end the loop: it is read to its end (see gang.h).
  auto running = [&] { return !failure_ || (!peers_ && failure_->kind == GangFailure::Kind::kRankError); };
  while (running()) {
    if (callbacks.tick) callbacks.tick();
    if (stop_) {
      fail({GangFailure::Kind::kCancelled, -1, FailureKind::kCancelled, "cancelled", {}, ""});
      break;
    }
    if (options_.deadline.count() > 0 && Clock::now() - begin >= options_.deadline) {
      fail({GangFailure::Kind::kDeadline, -1, FailureKind::kTimeout, "stopped after the deadline of " +
            std::to_string(options_.deadline.count()) + " ms", {}, ""});
      break;
    }
    std::vector<pollfd> fds;
    for (auto& m : members) {
      for (int fd : m.proc->OpenOutputFds()) fds.push_back({fd, POLLIN, 0});
    }
    ::poll(fds.data(), fds.size(), 50);
    for (int r = 0; r < n; ++r) {
      Member& m = members[r];
      drain(r);
      if (!m.exit) {
        m.exit = m.proc->Poll();
        // What it wrote before it exited is all in its pipes now: its last words (an error event)
        // are heeded before its exit is judged.
        if (m.exit) drain(r);
      }
      const bool done_its_part = !peers_ && m.result;
      if (m.exit && !m.exit->Succeeded() && !m.errored && !done_its_part) {
        fail({GangFailure::Kind::kRankExit, first + r, FailureKind::kInternal, Name(first + r) + " " +
              m.exit->Describe() + (m.last_stderr.empty() ? "" : ": " + m.last_stderr), *m.exit, m.last_stderr});
      } else if (m.exit && !m.open && m.exit->Succeeded() && !m.result && !m.errored) {
        fail({GangFailure::Kind::kRankExit, first + r, FailureKind::kInternal,
              Name(first + r) + " exited without a result", *m.exit, m.last_stderr});
      }
    }
    bool done = true;
    for (auto& m : members) done = done && m.exit && !m.open;
    if (done) break;
  }

  // A collective error usually follows a peer's death: name the peer that died instead. Its exit
  // can reach us a moment after the survivors' error events, so wait a little for it.
  if (failure_ && failure_->reason == FailureKind::kCollectiveTimeout) {
    const auto until = Clock::now() + milliseconds(500);
    bool named = false;
    while (!named) {
      for (int r = 0; r < static_cast<int>(members.size()) && !named; ++r) {
        Member& m = members[r];
        if (!m.exit) m.exit = m.proc->Poll();
        if (m.exit) drain(r);  // a rank that reported its own collective error did not die first
        if (m.exit && !m.exit->Succeeded() && !m.errored) {
          failure_ = GangFailure{GangFailure::Kind::kRankExit, first + r, FailureKind::kInternal,
                                 Name(first + r) + " " + m.exit->Describe() + " (the others lost it: " +
                                 failure_->message + ")", *m.exit, m.last_stderr};
          named = true;
        }
      }
      if (named || Clock::now() >= until) break;
      std::this_thread::sleep_for(milliseconds(10));
    }
  }
  TerminateAll(members, options_.terminate_grace);
  if (failure_ && failure_->rank >= first && failure_->rank - first < static_cast<int>(members.size())) {
    const Member& m = members[failure_->rank - first];
    if (m.exit) failure_->exit = *m.exit;
    failure_->last_stderr = m.last_stderr;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    pids_.clear();
  }
  std::error_code ec;
  if (!dir.empty()) std::filesystem::remove_all(dir, ec);
  if (failure_) return FailureStatus(*failure_);
  if (!peers_) return *members[0].result;
  std::vector<nlohmann::json> results;
  for (auto& m : members) results.push_back(*m.result);
  nlohmann::json merged = MergeRankResults(results);
  merged["corpus_tokens"] = options_.corpus_tokens;
  if (spans_agents) {
    merged["first_rank"] = first;
    merged["world_size"] = world_;
  }
  return merged;
}

nlohmann::json MergeRankResults(const std::vector<nlohmann::json>& results) {
  // A rank's result is its own words: a field of another type reads as absent.
  const nlohmann::json empty = nlohmann::json::object();
  const nlohmann::json& r0 = results.empty() ? empty : results[0];
  nlohmann::json timings = nlohmann::json::array(), memory = nlohmann::json::array(), comm = nlohmann::json::array();
  for (const auto& r : results) {
    timings.push_back(JsonField(r, "timings", empty));
    memory.push_back(JsonField(r, "memory", empty));
    comm.push_back(JsonField(r, "comm", empty));
  }
  return {{"losses", JsonField(r0, "losses", nlohmann::json::array())},
          {"eval_losses", JsonField(r0, "eval_losses", nlohmann::json::array())},
          {"tokens_per_s", NumberField(r0, "tokens_per_s")},
          {"tokens", IntField(r0, "tokens")},
          {"timings", JsonField(r0, "timings", empty)},
          {"timings_per_rank", timings},
          {"memory", {{"ranks", memory}}},
          {"comm", {{"ranks", comm}}},
          {"ranks", static_cast<int64_t>(results.size())},
          {"device", StringField(r0, "device")},
          {"zero", JsonField(r0, "zero", nlohmann::json())},
          {"offload", JsonField(r0, "offload", nlohmann::json())},
          {"precision", JsonField(r0, "precision", nlohmann::json())},
          {"steps", IntField(r0, "steps_done")},
          {"start_step", IntField(r0, "start_step")},
          {"checkpoint", StringField(r0, "checkpoint")}};
}

}  // namespace fuji::launch
