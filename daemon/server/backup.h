// AdminService::Backup's stream: a consistent copy of fujid's database, sent in chunks.
#pragma once

#include "daemon/store/job_store.h"
#include "fuji/v1/admin.grpc.pb.h"
#include "lib/common/status.h"

namespace fuji::daemon {

// The largest chunk of the copy one message carries.
inline constexpr size_t kBackupChunkBytes = size_t{1} << 20;

// The reactor of one Backup call. With `refusal` not OK it only finishes with it. Otherwise, on a
// thread of its own (a large database takes a while to copy), it copies the database with
// JobStore::BackupTo into a new private file beside it (mode 0600, O_EXCL|O_NOFOLLOW, a random
// name), opens it and removes it at once, then streams it in chunks of kBackupChunkBytes. Deletes
// itself when the call is done. store is not owned and must outlive the gRPC server.
grpc::ServerWriteReactor<v1::BackupChunk>* StartBackup(store::JobStore* store, const Status& refusal);

}  // namespace fuji::daemon
