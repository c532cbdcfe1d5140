// The limits every fuji program agrees on, in one table: what fujid accepts and stores, what the
// agent must be able to receive and send, and what the rank and the CLI must not exceed. A limit
// that only one side enforces is a job that wedges at the boundary (a spec fujid stores that the
// agent cannot receive, a log line fujid refuses and the agent retries forever). README.md's
// "Limits" table lists them; a change here is a change there.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace fuji::limits {

// ---- Requests ----
// The largest gRPC message any fuji program sends or receives: fujid's server, the agent's and the
// CLI's channels all set it, so whatever one side may send the other can receive.
inline constexpr int kMaxMessageBytes = 32 << 20;
// A job spec (JSON) as submitted; the spec an agent receives adds the chosen plan (a few KiB).
inline constexpr size_t kMaxSpecBytes = size_t{4} << 20;
// The assignments of one poll answer together: more wait for the next poll, so a batch always
// fits in a message with room to spare.
inline constexpr size_t kMaxPollBatchBytes = size_t{16} << 20;
// How deep any JSON from outside a process may nest (lib/common/json_bounds.h checks it).
inline constexpr int kMaxJsonDepth = 64;
// An inference prompt: text bytes, or token ids. The model's positions bound the ids further
// (kMaxNewTokens too): prompt tokens + max_new_tokens <= the model's positions, checked by fujid
// at submit against the model's config and by the rank against the tokenized prompt.
inline constexpr size_t kMaxPromptBytes = size_t{1} << 20;
inline constexpr size_t kMaxPromptIds = size_t{1} << 16;
inline constexpr int64_t kMaxNewTokens = int64_t{1} << 16;
// Names: users and agents (worker ids).
inline constexpr size_t kMaxNameBytes = 64;
// The order of queued jobs (higher first).
inline constexpr int32_t kMinPriority = -1000;
inline constexpr int32_t kMaxPriority = 1000;
// Runs of one job (its first and its retries); 0 in a request means fujid's default.
inline constexpr int32_t kMaxAttempts = 100;

// ---- Reports (agent -> fujid) ----
// The longest log line fujid stores; the agent cuts longer ones (CutLine) before it reports them,
// and reads a rank's stderr in lines of at most this, cutting the rest.
inline constexpr size_t kMaxLogLineBytes = size_t{64} << 10;
// Entries of one kind in one report (log lines, memory samples, timings); the agent sends more in
// the next report, so a report stays far below kMaxMessageBytes (512 lines of 64 KiB: 32 MiB is the
// worst case, hence also a byte budget).
inline constexpr int kMaxReportEntries = 512;
inline constexpr size_t kMaxReportBytes = size_t{8} << 20;

// The marker that ends a cut line.
inline constexpr char kCutMarker[] = " [cut: line longer than 64 KiB]";

// `line` when it fits in max_bytes; else its head, ended at a UTF-8 character boundary, and
// kCutMarker, max_bytes in all.
std::string CutLine(std::string line, size_t max_bytes = kMaxLogLineBytes);

}  // namespace fuji::limits
