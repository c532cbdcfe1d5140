// The Backup stream; see backup.h.
#include "daemon/server/backup.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mutex>
#include <string>
#include <thread>

#include "daemon/server/grpc_status.h"
#include "lib/common/file_util.h"
#include "lib/common/log.h"

namespace fuji::daemon {
namespace {

// Copies the database into a new private file beside it and returns a descriptor of the copy,
// which is already removed: nothing is left behind whatever becomes of the call.
Result<int> CopyDatabase(store::JobStore& store) {
  const std::string path = store.path() + ".backup-" + RandomHex64();
  FUJI_ASSIGN_OR_RETURN(int created, CreateExclusiveFile(path, 0600));
  ::close(created);
  Status copied = store.BackupTo(path);
  const int fd = copied.ok() ? ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC) : -1;
  const std::string open_error = fd < 0 ? ErrnoMessage() : "";
  ::unlink(path.c_str());
  ::unlink((path + "-journal").c_str());  // left only by a copy that failed midway
  if (!copied.ok()) return copied;
  if (fd < 0) return Internal("backup: cannot read the copy " + path + ": " + open_error);
  return fd;
}

class BackupStream final : public grpc::ServerWriteReactor<v1::BackupChunk> {
 public:
  explicit BackupStream(store::JobStore* store) : store_(store) {
    copier_ = std::thread([this] { Copy(); });
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!ok) return End(grpc::Status(grpc::StatusCode::CANCELLED, "backup ended"));
    WriteNext();
  }
  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
  }
  void OnDone() override {
    // Finish may have been called from the copier thread itself.
    if (copier_.get_id() == std::this_thread::get_id()) {
      copier_.detach();
    } else if (copier_.joinable()) {
      copier_.join();
    }
    if (fd_ >= 0) ::close(fd_);
    delete this;
  }

 private:
  void Copy() {
    Result<int> fd = CopyDatabase(*store_);
    std::lock_guard<std::mutex> lock(mu_);
    if (!fd.ok()) {
      log::Warn("backup: " + fd.status().ToString());
      return End(ToGrpcStatus(fd.status()));
    }
    fd_ = *fd;
    struct stat st {};
    if (::fstat(fd_, &st) != 0) return End(ToGrpcStatus(Internal("backup: cannot read the copy: " + ErrnoMessage())));
    total_ = st.st_size;
    WriteNext();
  }

  // Under mu_: sends the next chunk, or finishes after the last.
  void WriteNext() {
    if (cancelled_) return End(grpc::Status(grpc::StatusCode::CANCELLED, "backup cancelled"));
    chunk_.Clear();
    std::string* data = chunk_.mutable_data();
    data->resize(kBackupChunkBytes);
    size_t filled = 0;
    while (filled < data->size()) {
      const ssize_t n = ::read(fd_, data->data() + filled, data->size() - filled);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return End(ToGrpcStatus(Internal("backup: reading the copy: " + ErrnoMessage())));
      if (n == 0) break;
      filled += static_cast<size_t>(n);
    }
    data->resize(filled);
    sent_ += static_cast<int64_t>(filled);
    if (filled == 0) {
      if (sent_ != total_) return End(ToGrpcStatus(Internal("backup: the copy changed while it was sent")));
      return End(grpc::Status::OK);
    }
    chunk_.set_total_bytes(total_);
    StartWrite(&chunk_);
  }

  void End(const grpc::Status& status) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  store::JobStore* store_;
  std::mutex mu_;
  int fd_ = -1;             // the copy, already unlinked
  int64_t total_ = 0;       // its size
  int64_t sent_ = 0;
  v1::BackupChunk chunk_;   // the write in flight
  bool cancelled_ = false;  // guarded by mu_, as everything above
  bool finished_ = false;
  std::thread copier_;      // last: starts once everything above is ready
};

// A backup refused before it starts. Deletes itself in OnDone.
class Refused final : public grpc::ServerWriteReactor<v1::BackupChunk> {
 public:
  explicit Refused(const Status& status) { Finish(ToGrpcStatus(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerWriteReactor<v1::BackupChunk>* StartBackup(store::JobStore* store, const Status& refusal) {
  if (!refusal.ok()) return new Refused(refusal);
  return new BackupStream(store);
}

}  // namespace fuji::daemon
