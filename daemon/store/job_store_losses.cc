// JobStore: the losses of fine-tuning jobs, per attempt and split (schema/0004_losses.sql).
#include <cmath>

#include "daemon/store/job_rows.h"
#include "daemon/store/job_store.h"
#include "daemon/store/sqlite.h"
#include "daemon/store/writer.h"

namespace fuji::store {
namespace {

// The splits a page can hold at one step: a page fetches this many rows beyond its limit so that
// it can end at a step boundary.
constexpr int kSplits = 2;

bool IsSplit(const std::string& split) { return split == "train" || split == "eval"; }

Loss ReadLoss(int64_t job_id, const Statement& row) {
  Loss l;
  l.job_id = job_id;
  l.step = row.Int(0);
  l.split = row.Text(1);
  l.loss = row.Real(2);
  l.tokens_per_s = row.Real(3);
  l.at_ms = row.Int(4);
  l.attempt = static_cast<int>(row.Int(5));
  return l;
}

}  // namespace

std::string JobStore::CheckLoss(const Loss& l) {
  const std::string where = " at step " + std::to_string(l.step);
  if (!IsSplit(l.split)) return "unknown loss split '" + l.split + "' (train, eval)";
  if (l.step < 0 || l.step > kMaxLossStep) {
    return "loss step " + std::to_string(l.step) + " outside 0.." + std::to_string(kMaxLossStep);
  }
  if (!std::isfinite(l.loss)) return "loss is not finite" + where;
  if (!std::isfinite(l.tokens_per_s) || l.tokens_per_s < 0) {
    return "tokens_per_s is negative or not finite" + where;
  }
  if (l.attempt < 0) return "negative attempt" + where;
  return "";
}

Status JobStore::RecordLosses(const std::vector<Loss>& losses) {
  if (losses.size() > kMaxLossesPerCall) {
    return InvalidArgument(std::to_string(losses.size()) + " loss points at once; at most " +
                           std::to_string(kMaxLossesPerCall));
  }
  for (const Loss& l : losses) {
    if (std::string why = CheckLoss(l); !why.empty()) {
      return InvalidArgument(why + " (job " + std::to_string(l.job_id) + ")");
    }
  }
  if (losses.empty()) return Status::Ok();
  return writer_->Run([&](Connection& db) -> Status {
    FUJI_ASSIGN_OR_RETURN(
        Statement upsert,
        db.Prepare("INSERT INTO losses (job_id, attempt, step, split, loss, tokens_per_s, at_ms) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job_id, step, split, attempt) "
                   "DO UPDATE SET loss = excluded.loss, tokens_per_s = excluded.tokens_per_s, "
                   "at_ms = excluded.at_ms"));
    for (const Loss& l : losses) {
      upsert.Reset();
      Status status = upsert.BindInt(1, l.job_id)
                          .BindInt(2, l.attempt)
                          .BindInt(3, l.step)
                          .BindText(4, l.split)
                          .BindReal(5, l.loss)
                          .BindReal(6, l.tokens_per_s)
                          .BindInt(7, l.at_ms)
                          .Run();
      if (!status.ok()) return status.WithContext("loss of job " + std::to_string(l.job_id));
    }
    return Status::Ok();
  });
}

Result<LossPage> JobStore::Losses(int64_t job_id, const LossQuery& query) {
  if (!query.split.empty() && !IsSplit(query.split)) {
    return InvalidArgument("unknown loss split '" + query.split + "' (train, eval)");
  }
  if (query.limit < 1 || query.limit > kMaxLossPageSize) {
    return InvalidArgument("limit must be 1.." + std::to_string(kMaxLossPageSize));
  }
  FUJI_ASSIGN_OR_RETURN(ReaderPool::Lease db, readers_->Acquire());
  // The latest attempt's point of each (split, step): a lookup in the primary key per row.
  FUJI_ASSIGN_OR_RETURN(
      Statement select,
      db->Prepare("SELECT step, split, loss, tokens_per_s, at_ms, attempt FROM losses AS l "
                  "WHERE job_id = ?1 AND step > ?2 AND (?3 = '' OR split = ?3) AND attempt = "
                  "(SELECT MAX(attempt) FROM losses AS m WHERE m.job_id = l.job_id AND "
                  "m.step = l.step AND m.split = l.split) "
                  "ORDER BY step, split LIMIT ?4"));
  select.BindInt(1, job_id)
      .BindInt(2, query.after_step.value_or(-1))
      .BindText(3, query.split)
      .BindInt(4, query.limit + kSplits);
  FUJI_ASSIGN_OR_RETURN(std::vector<Loss> rows,
                        CollectRows<Loss>(select, [job_id](const Statement& row) {
                          return ReadLoss(job_id, row);
                        }));
  LossPage page;
  const size_t fetched = rows.size();
  if (fetched > static_cast<size_t>(query.limit)) {
    // End the page before the step that did not fit whole; a single step larger than the limit
    // (limit 1, both splits) is returned whole.
    const int64_t boundary = rows[query.limit].step;
    size_t keep = query.limit;
    while (keep > 0 && rows[keep - 1].step == boundary) --keep;
    if (keep == 0) {
      while (keep < fetched && rows[keep].step == boundary) ++keep;
    }
    rows.resize(keep);
  }
  page.more = fetched > rows.size();
  page.losses = std::move(rows);
  return page;
}

Result<std::optional<Loss>> JobStore::LastLoss(int64_t job_id) {
  FUJI_ASSIGN_OR_RETURN(ReaderPool::Lease db, readers_->Acquire());
  FUJI_ASSIGN_OR_RETURN(
      Statement select,
      db->Prepare("SELECT step, split, loss, tokens_per_s, at_ms, attempt FROM losses "
                  "WHERE job_id = ? AND split = 'train' ORDER BY step DESC, attempt DESC LIMIT 1"));
  FUJI_ASSIGN_OR_RETURN(bool found, select.BindInt(1, job_id).Step());
  if (!found) return std::optional<Loss>();
  return std::optional<Loss>(ReadLoss(job_id, select));
}

}  // namespace fuji::store
