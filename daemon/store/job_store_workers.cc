// JobStore: workers and their devices, assignments of jobs to workers, and lease bookkeeping.
#include <nlohmann/json.hpp>

#include <set>

#include "daemon/store/job_rows.h"
#include "daemon/store/job_store.h"
#include "daemon/store/sqlite.h"
#include "daemon/store/writer.h"

namespace fuji::store {
namespace {

Status ValidateWorker(const WorkerRecord& worker) {
  if (worker.id.empty()) return InvalidArgument("a worker needs an id");
  std::set<int> seen;
  for (const DeviceRecord& device : worker.devices) {
    if (device.kind != "cuda" && device.kind != "cpu") {
      return InvalidArgument("device " + std::to_string(device.index) + " of worker " + worker.id +
                             ": unknown kind '" + device.kind + "' (cuda, cpu)");
    }
    if (device.index < 0 || !seen.insert(device.index).second) {
      return InvalidArgument("worker " + worker.id + ": device index " +
                             std::to_string(device.index) + " is negative or repeated");
    }
  }
  if (worker.advertise_addr.size() > 255) {
    return InvalidArgument("worker " + worker.id + ": advertise address longer than 255 bytes");
  }
  const int lo = worker.gang_port_lo, hi = worker.gang_port_hi;
  if (!((lo == 0 && hi == 0) || (lo >= 1 && lo <= hi && hi <= 65535))) {
    return InvalidArgument("worker " + worker.id + ": gang ports must be 0 0 or LO-HI within 1-65535");
  }
  return Status::Ok();
}

// Fails unless the worker exists and has every one of the devices.
Status CheckWorkerDevices(Connection& db, const std::string& worker_id,
                          const std::string& indices_json, size_t count) {
  FUJI_ASSIGN_OR_RETURN(
      Statement select,
      db.Prepare("SELECT EXISTS (SELECT 1 FROM workers WHERE id = ?1), "
                 "(SELECT COUNT(*) FROM devices WHERE worker_id = ?1 AND device_index IN "
                 "(SELECT value FROM json_each(?2)))"));
  FUJI_RETURN_IF_ERROR(select.BindText(1, worker_id).BindText(2, indices_json).Step().status());
  if (select.Int(0) == 0) return NotFound("worker " + worker_id + " not found");
  if (static_cast<size_t>(select.Int(1)) != count) {
    return InvalidArgument("worker " + worker_id + " does not have devices " + indices_json);
  }
  return Status::Ok();
}

// Readings beyond this (a mebibyte count of an exbibyte) are not memory any machine has.
constexpr int64_t kMaxReadingMib = int64_t{1} << 40;

bool Plausible(int64_t mib) { return mib >= 0 && mib <= kMaxReadingMib; }

// The readings of `samples` (host memory and devices) onto the worker's rows. Devices the worker
// does not have are skipped, as are readings that are negative, absurdly large, or claim more
// used than total or more of it fuji's than used.
Status WriteReadings(Connection& db, const std::string& worker_id,
                     const std::vector<MemorySample>& samples) {
  FUJI_ASSIGN_OR_RETURN(
      Statement host,
      db.Prepare("UPDATE workers SET host_total_mib = ?, host_used_mib = ?, host_fuji_mib = ?, "
                 "host_sampled_at_ms = ? WHERE id = ?"));
  FUJI_ASSIGN_OR_RETURN(
      Statement device,
      db.Prepare("UPDATE devices SET used_mib = ?, fuji_mib = ?, sampled_at_ms = ? "
                 "WHERE worker_id = ? AND device_index = ?"));
  for (const MemorySample& s : samples) {
    if (!Plausible(s.used_mib) || !Plausible(s.total_mib) || !Plausible(s.process_mib) ||
        s.used_mib > s.total_mib || s.process_mib > s.used_mib) {
      continue;
    }
    if (s.host_memory) {
      host.Reset();
      FUJI_RETURN_IF_ERROR(host.BindInt(1, s.total_mib)
                               .BindInt(2, s.used_mib)
                               .BindInt(3, s.process_mib)
                               .BindInt(4, s.at_ms)
                               .BindText(5, worker_id)
                               .Run());
    } else if (s.device_index >= 0) {
      device.Reset();
      FUJI_RETURN_IF_ERROR(device.BindInt(1, s.used_mib)
                               .BindInt(2, s.process_mib)
                               .BindInt(3, s.at_ms)
                               .BindText(4, worker_id)
                               .BindInt(5, s.device_index)
                               .Run());
    }
  }
  return Status::Ok();
}

std::optional<MemoryReading> ReadingAt(const Statement& row, int used, int total, int fuji, int at) {
  if (row.IsNull(used) || row.IsNull(total) || row.IsNull(at)) return std::nullopt;
  return MemoryReading{row.Int(used), row.Int(total), row.IsNull(fuji) ? 0 : row.Int(fuji), row.Int(at)};
}

}  // namespace

Status JobStore::RegisterWorker(const WorkerRecord& worker, const std::vector<MemorySample>& samples) {
  FUJI_RETURN_IF_ERROR(ValidateWorker(worker));
  return writer_->Run([&](Connection& db) -> Status {
    int64_t now_ms = clock_->NowMs();
    FUJI_ASSIGN_OR_RETURN(
        Statement upsert,
        db.Prepare("INSERT INTO workers (id, host, registered_at_ms, last_heartbeat_ms, state, advertise_addr, "
                   "gang_port_lo, gang_port_hi) VALUES (?1, ?2, ?3, ?3, 'ONLINE', ?4, ?5, ?6) ON CONFLICT (id) DO UPDATE SET "
                   "host = excluded.host, registered_at_ms = excluded.registered_at_ms, "
                   "last_heartbeat_ms = excluded.last_heartbeat_ms, state = 'ONLINE', "
                   "advertise_addr = excluded.advertise_addr, gang_port_lo = excluded.gang_port_lo, "
                   "gang_port_hi = excluded.gang_port_hi"));
    FUJI_RETURN_IF_ERROR(upsert.BindText(1, worker.id)
                             .BindText(2, worker.host)
                             .BindInt(3, now_ms)
                             .BindText(4, worker.advertise_addr)
                             .BindInt(5, worker.gang_port_lo)
                             .BindInt(6, worker.gang_port_hi)
                             .Run());
    FUJI_ASSIGN_OR_RETURN(Statement clear, db.Prepare("DELETE FROM devices WHERE worker_id = ?"));
    FUJI_RETURN_IF_ERROR(clear.BindText(1, worker.id).Run());
    FUJI_ASSIGN_OR_RETURN(
        Statement insert,
        db.Prepare("INSERT INTO devices (worker_id, device_index, name, total_mib, kind) "
                   "VALUES (?, ?, ?, ?, ?)"));
    for (const DeviceRecord& device : worker.devices) {
      insert.Reset();
      FUJI_RETURN_IF_ERROR(insert.BindText(1, worker.id)
                               .BindInt(2, device.index)
                               .BindText(3, device.name)
                               .BindInt(4, device.total_mib)
                               .BindText(5, device.kind)
                               .Run());
    }
    return WriteReadings(db, worker.id, samples);
  });
}

Status JobStore::Heartbeat(const std::string& worker_id, const std::vector<MemorySample>& samples) {
  return writer_->Run([&](Connection& db) -> Status {
    FUJI_ASSIGN_OR_RETURN(
        Statement update,
        db.Prepare("UPDATE workers SET last_heartbeat_ms = ?, state = 'ONLINE' WHERE id = ?"));
    FUJI_RETURN_IF_ERROR(update.BindInt(1, clock_->NowMs()).BindText(2, worker_id).Run());
    if (db.Changes() == 0) return NotFound("worker " + worker_id + " not found");
    return WriteReadings(db, worker_id, samples);
  });
}

Status JobStore::MarkWorkerLost(const std::string& worker_id) {
  return writer_->Run([&](Connection& db) -> Status {
    FUJI_ASSIGN_OR_RETURN(Statement update,
                          db.Prepare("UPDATE workers SET state = 'LOST' WHERE id = ?"));
    FUJI_RETURN_IF_ERROR(update.BindText(1, worker_id).Run());
    if (db.Changes() == 0) return NotFound("worker " + worker_id + " not found");
    return Status::Ok();
  });
}

Result<std::optional<int64_t>> JobStore::SetDrained(const std::string& worker_id, bool drained, bool requeue) {
  std::optional<int64_t> since;
  FUJI_RETURN_IF_ERROR(writer_->Run([&](Connection& db) -> Status {
    // A second drain keeps the time of the first; the latest drain says whether it requeues.
    FUJI_ASSIGN_OR_RETURN(Statement update,
                          db.Prepare("UPDATE workers SET drained_at_ms = "
                                     "CASE WHEN ?1 THEN COALESCE(drained_at_ms, ?2) END, "
                                     "drain_requeue = CASE WHEN ?1 THEN ?4 ELSE 0 END WHERE id = ?3 "
                                     "RETURNING drained_at_ms"));
    FUJI_ASSIGN_OR_RETURN(bool found, update.BindInt(1, drained ? 1 : 0)
                                          .BindInt(2, clock_->NowMs())
                                          .BindText(3, worker_id)
                                          .BindInt(4, drained && requeue ? 1 : 0)
                                          .Step());
    if (!found) return NotFound("worker " + worker_id + " not found");
    if (!update.IsNull(0)) since = update.Int(0);
    return update.Step().status();  // to the end, so the statement completes
  }));
  return since;
}

Result<std::set<std::string>> JobStore::RequeueDrainedWorkers() {
  FUJI_ASSIGN_OR_RETURN(ReaderPool::Lease db, readers_->Acquire());
  FUJI_ASSIGN_OR_RETURN(Statement select, db->Prepare("SELECT id FROM workers WHERE drain_requeue = 1"));
  std::set<std::string> ids;
  while (true) {
    FUJI_ASSIGN_OR_RETURN(bool has_row, select.Step());
    if (!has_row) return ids;
    ids.insert(select.Text(0));
  }
}

Result<std::vector<WorkerRecord>> JobStore::ListWorkers() {
  FUJI_ASSIGN_OR_RETURN(ReaderPool::Lease db, readers_->Acquire());
  // One statement, so workers and devices come from one snapshot.
  FUJI_ASSIGN_OR_RETURN(
      Statement select,
      db->Prepare("SELECT w.id, w.host, w.registered_at_ms, w.last_heartbeat_ms, w.state, "
                  "d.device_index, d.name, d.total_mib, d.kind, d.used_mib, d.fuji_mib, "
                  "d.sampled_at_ms, w.host_used_mib, w.host_total_mib, w.host_fuji_mib, "
                  "w.host_sampled_at_ms, w.drained_at_ms, w.advertise_addr, w.gang_port_lo, w.gang_port_hi, "
                  "w.drain_requeue "
                  "FROM workers w LEFT JOIN devices d ON d.worker_id = w.id "
                  "ORDER BY w.id, d.device_index"));
  std::vector<WorkerRecord> workers;
  while (true) {
    FUJI_ASSIGN_OR_RETURN(bool has_row, select.Step());
    if (!has_row) return workers;
    std::string id = select.Text(0);
    if (workers.empty() || workers.back().id != id) {
      workers.push_back(WorkerRecord{id, select.Text(1), select.Int(2), select.Int(3),
                                     select.Text(4), {}, ReadingAt(select, 12, 13, 14, 15)});
      if (!select.IsNull(16)) workers.back().drained_at_ms = select.Int(16);
      workers.back().advertise_addr = select.Text(17);
      workers.back().gang_port_lo = static_cast<int>(select.Int(18));
      workers.back().gang_port_hi = static_cast<int>(select.Int(19));
      workers.back().drain_requeue = select.Int(20) != 0;
    }
    if (!select.IsNull(5)) {
      DeviceRecord device{static_cast<int>(select.Int(5)), select.Text(6), select.Int(7),
                          select.Text(8), std::nullopt};
      device.reading = ReadingAt(select, 9, 7, 10, 11);
      workers.back().devices.push_back(std::move(device));
    }
  }
}

namespace {

// Whether `indices` are distinct and non-negative (and some).
bool DistinctIndices(const std::vector<int>& indices) {
  std::set<int> distinct(indices.begin(), indices.end());
  return !indices.empty() && distinct.size() == indices.size() && *distinct.begin() >= 0;
}

// Assign and AssignGang in the writer's transaction: QUEUED -> ASSIGNED on the first part's
// agent, its assignments row, and (a gang) every part's gang_members row.
Status AssignParts(Connection& db, int64_t job_id, const std::vector<GangMemberRecord>& parts, bool gang,
                   int64_t lease_expires_ms, const std::string& plan, int64_t now_ms) {
  int64_t attempt = 0;
  size_t devices = 0;
  for (const GangMemberRecord& part : parts) devices += part.device_indices.size();
  {  // scoped: the read must be finished before the same connection updates jobs
    FUJI_ASSIGN_OR_RETURN(Statement job, db.Prepare("SELECT state, devices, attempts FROM jobs WHERE id = ?"));
    FUJI_ASSIGN_OR_RETURN(bool found, job.BindInt(1, job_id).Step());
    if (!found) return NotFound("job " + std::to_string(job_id) + " not found");
    if (std::string state = job.Text(0); state != JobStateName(JobState::kQueued)) {
      return FailedPrecondition("job " + std::to_string(job_id) + " is " + state + ", not QUEUED");
    }
    if (job.Int(1) != static_cast<int64_t>(devices)) {
      return InvalidArgument("job " + std::to_string(job_id) + " needs " + std::to_string(job.Int(1)) +
                             " devices, got " + std::to_string(devices));
    }
    attempt = job.Int(2);
  }
  std::vector<std::string> indices_json;
  for (const GangMemberRecord& part : parts) {
    indices_json.push_back(nlohmann::json(part.device_indices).dump());
    FUJI_RETURN_IF_ERROR(CheckWorkerDevices(db, part.worker_id, indices_json.back(), part.device_indices.size()));
  }
  const GangMemberRecord& first = parts.front();
  FUJI_ASSIGN_OR_RETURN(
      Statement update,
      db.Prepare("UPDATE jobs SET state = 'ASSIGNED', worker_id = ?, reason = '', "
                 "updated_at_ms = ?, plan = COALESCE(NULLIF(?, ''), plan), lease_epoch = lease_epoch + 1 "
                 "WHERE id = ? AND state = 'QUEUED'"));
  FUJI_RETURN_IF_ERROR(
      update.BindText(1, first.worker_id).BindInt(2, now_ms).BindText(3, plan).BindInt(4, job_id).Run());
  // An attempt handed back unstarted (ASSIGNED -> QUEUED) or preempted (RUNNING -> QUEUED) is
  // placed again: its row is reused.
  FUJI_ASSIGN_OR_RETURN(
      Statement insert,
      db.Prepare("INSERT INTO assignments (job_id, attempt, worker_id, device_indices, "
                 "assigned_at_ms, lease_expires_ms) VALUES (?, ?, ?, ?, ?, ?) "
                 "ON CONFLICT (job_id, attempt) DO UPDATE SET worker_id = excluded.worker_id, "
                 "device_indices = excluded.device_indices, "
                 "assigned_at_ms = excluded.assigned_at_ms, "
                 "lease_expires_ms = excluded.lease_expires_ms, released_at_ms = NULL"));
  FUJI_RETURN_IF_ERROR(insert.BindInt(1, job_id)
                           .BindInt(2, attempt)
                           .BindText(3, first.worker_id)
                           .BindText(4, indices_json.front())
                           .BindInt(5, now_ms)
                           .BindInt(6, lease_expires_ms)
                           .Run());
  // The attempt's earlier placement (handed back unstarted) leaves no parts behind.
  FUJI_ASSIGN_OR_RETURN(Statement clear, db.Prepare("DELETE FROM gang_members WHERE job_id = ? AND attempt = ?"));
  FUJI_RETURN_IF_ERROR(clear.BindInt(1, job_id).BindInt(2, attempt).Run());
  std::string message = "assigned to " + first.worker_id + " devices " + indices_json.front();
  if (gang) {
    message = "assigned to a gang of " + std::to_string(parts.size()) + " agents:";
    for (size_t i = 0; i < parts.size(); ++i) {
      const GangMemberRecord& part = parts[i];
      FUJI_ASSIGN_OR_RETURN(
          Statement member,
          db.Prepare("INSERT INTO gang_members (job_id, attempt, worker_id, advertise_addr, first_rank, "
                     "device_indices, port, lease_expires_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"));
      FUJI_RETURN_IF_ERROR(member.BindInt(1, job_id)
                               .BindInt(2, attempt)
                               .BindText(3, part.worker_id)
                               .BindText(4, part.advertise_addr)
                               .BindInt(5, part.first_rank)
                               .BindText(6, indices_json[i])
                               .BindInt(7, part.port)
                               .BindInt(8, lease_expires_ms)
                               .Run());
      message += (i == 0 ? " " : ", ") + part.worker_id + " devices " + indices_json[i] + " (ranks " +
                 std::to_string(part.first_rank) + "-" +
                 std::to_string(part.first_rank + static_cast<int>(part.device_indices.size()) - 1) + ")";
    }
  }
  if (!plan.empty()) {
    const nlohmann::json j = nlohmann::json::parse(plan, nullptr, /*allow_exceptions=*/false);
    if (j.contains("label") && j["label"].is_string()) message += " with " + j["label"].get<std::string>();
  }
  return InsertEvent(db, job_id, JobState::kQueued, JobState::kAssigned, message, now_ms);
}

}  // namespace

Status JobStore::Assign(int64_t job_id, const std::string& worker_id,
                        const std::vector<int>& device_indices, int64_t lease_expires_ms,
                        const std::string& plan) {
  if (!DistinctIndices(device_indices)) {
    return InvalidArgument("an assignment needs distinct, non-negative device indices");
  }
  if (!plan.empty()) FUJI_RETURN_IF_ERROR(ValidateJsonObject("job plan", plan, kMaxJsonBytes));
  GangMemberRecord part;
  part.worker_id = worker_id;
  part.device_indices = device_indices;
  return writer_->Run([&](Connection& db) -> Status {
    return AssignParts(db, job_id, {part}, /*gang=*/false, lease_expires_ms, plan, clock_->NowMs());
  });
}

Status JobStore::AssignGang(int64_t job_id, const std::vector<GangMemberRecord>& members,
                            int64_t lease_expires_ms, const std::string& plan) {
  if (members.size() < 2 || members.size() > static_cast<size_t>(kMaxGangMembers)) {
    return InvalidArgument("a gang needs 2 to " + std::to_string(kMaxGangMembers) + " agents, got " +
                           std::to_string(members.size()));
  }
  std::set<std::string> workers;
  int next_rank = 0;
  for (const GangMemberRecord& member : members) {
    if (!DistinctIndices(member.device_indices)) {
      return InvalidArgument("a gang member needs distinct, non-negative device indices");
    }
    if (member.first_rank != next_rank) {
      return InvalidArgument("gang member " + member.worker_id + " starts at rank " +
                             std::to_string(member.first_rank) + ", expected " + std::to_string(next_rank));
    }
    if (!workers.insert(member.worker_id).second) {
      return InvalidArgument("agent " + member.worker_id + " is twice in one gang");
    }
    if (member.advertise_addr.empty() || member.advertise_addr.size() > 255 || member.port < 0 ||
        member.port > 65535) {
      return InvalidArgument("gang member " + member.worker_id + " needs an advertise address and a port in 0-65535");
    }
    next_rank += static_cast<int>(member.device_indices.size());
  }
  if (!plan.empty()) FUJI_RETURN_IF_ERROR(ValidateJsonObject("job plan", plan, kMaxJsonBytes));
  return writer_->Run([&](Connection& db) -> Status {
    return AssignParts(db, job_id, members, /*gang=*/true, lease_expires_ms, plan, clock_->NowMs());
  });
}

Status JobStore::ReleaseGangMember(int64_t job_id, int attempt, const std::string& worker_id) {
  return writer_->Run([&](Connection& db) -> Status {
    FUJI_ASSIGN_OR_RETURN(Statement update,
                          db.Prepare("UPDATE gang_members SET released_at_ms = ? WHERE job_id = ? AND attempt = ? "
                                     "AND worker_id = ? AND released_at_ms IS NULL"));
    return update.BindInt(1, clock_->NowMs()).BindInt(2, job_id).BindInt(3, attempt).BindText(4, worker_id).Run();
  });
}

Result<std::vector<GangMemberRecord>> JobStore::ActiveGangMembers() {
  FUJI_ASSIGN_OR_RETURN(ReaderPool::Lease db, readers_->Acquire());
  FUJI_ASSIGN_OR_RETURN(Statement select,
                        db->Prepare(std::string("SELECT ") + kGangMemberColumns +
                                    " FROM gang_members WHERE released_at_ms IS NULL ORDER BY job_id, first_rank"));
  return CollectRows<GangMemberRecord>(select, ReadGangMember);
}

Result<int> JobStore::RenewLeases(const std::string& worker_id, int64_t lease_expires_ms) {
  int renewed = 0;
  FUJI_RETURN_IF_ERROR(writer_->Run([&](Connection& db) -> Status {
    FUJI_ASSIGN_OR_RETURN(Statement update,
                          db.Prepare("UPDATE assignments SET lease_expires_ms = ? "
                                     "WHERE worker_id = ? AND released_at_ms IS NULL"));
    FUJI_RETURN_IF_ERROR(update.BindInt(1, lease_expires_ms).BindText(2, worker_id).Run());
    renewed = db.Changes();
    FUJI_ASSIGN_OR_RETURN(Statement gang,
                          db.Prepare("UPDATE gang_members SET lease_expires_ms = ? "
                                     "WHERE worker_id = ? AND released_at_ms IS NULL"));
    return gang.BindInt(1, lease_expires_ms).BindText(2, worker_id).Run();
  }));
  return renewed;
}

Result<std::vector<Assignment>> JobStore::ExpiredAssignments(int64_t now_ms) {
  FUJI_ASSIGN_OR_RETURN(ReaderPool::Lease db, readers_->Acquire());
  FUJI_ASSIGN_OR_RETURN(Statement select,
                        db->Prepare(std::string("SELECT ") + kAssignmentColumns +
                                    " FROM assignments WHERE released_at_ms IS NULL "
                                    "AND lease_expires_ms <= ? ORDER BY lease_expires_ms"));
  select.BindInt(1, now_ms);
  return CollectRows<Assignment>(select, ReadAssignment);
}

Result<std::vector<Assignment>> JobStore::ActiveAssignments() {
  FUJI_ASSIGN_OR_RETURN(ReaderPool::Lease db, readers_->Acquire());
  FUJI_ASSIGN_OR_RETURN(Statement select,
                        db->Prepare(std::string("SELECT ") + kAssignmentColumns +
                                    " FROM assignments WHERE released_at_ms IS NULL "
                                    "ORDER BY job_id"));
  return CollectRows<Assignment>(select, ReadAssignment);
}

Result<std::map<std::string, std::vector<int64_t>>> JobStore::LiveJobsByWorker() {
  FUJI_ASSIGN_OR_RETURN(std::vector<Assignment> live, ActiveAssignments());
  FUJI_ASSIGN_OR_RETURN(std::vector<GangMemberRecord> gangs, ActiveGangMembers());
  std::map<std::string, std::vector<int64_t>> jobs;
  for (const Assignment& a : live) jobs[a.worker_id].push_back(a.job_id);
  // Rank 0's part is the assignments row; the other members run the job too.
  for (const GangMemberRecord& member : gangs) {
    if (member.first_rank > 0) jobs[member.worker_id].push_back(member.job_id);
  }
  return jobs;
}

}  // namespace fuji::store
