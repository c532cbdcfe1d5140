// A restricted unpickler for the data.pkl of a torch.save state dict. It never executes code.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/common/status.h"
#include "lib/format/tensor_view.h"

namespace fuji::format {

// The bytes of the storage record a persistent id names (the file "<prefix>/data/<key>").
using StorageLookup = std::function<Result<std::string_view>(const std::string& key)>;

// Interprets `pickle` (protocols 2 to 5, the opcodes a state dict uses) and returns the top-level
// dict's tensors in pickle order, as views into the records that `lookup` returns. Only the
// globals a state dict needs are resolved (OrderedDict, torch's tensor and parameter rebuilders,
// the typed storages); any other is refused with INVALID_ARGUMENT "refuses global 'module.name'".
// Values are kept in flat tables and referred to by index, so memory is linear in the pickle's
// size and nothing recurses. DATA_LOSS for malformed pickles; messages give the pickle offset but
// not the file, which the caller adds.
Result<std::vector<TensorView>> UnpickleStateDict(std::string_view pickle,
                                                  const StorageLookup& lookup);

}  // namespace fuji::format
