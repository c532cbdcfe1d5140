// TensorIndex: name lookup over a checkpoint's tensors, shared by the safetensors and zip readers.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "lib/format/tensor_view.h"

namespace fuji::format {

// Keys are views of TensorView::name inside the indexed vector: they stay valid when the vector
// is moved (its buffer moves with it), so an owner holding both may be moved but must not copy.
class TensorIndex {
 public:
  // Indexes `tensors`; returns the first name that occurs twice, if any.
  std::optional<std::string_view> Build(const std::vector<TensorView>& tensors) {
    index_.clear();
    index_.reserve(tensors.size());
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (!index_.emplace(tensors[i].name, i).second) return tensors[i].name;
    }
    return std::nullopt;
  }

  const TensorView* Find(const std::vector<TensorView>& tensors, std::string_view name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &tensors[it->second];
  }

 private:
  std::unordered_map<std::string_view, size_t> index_;
};

}  // namespace fuji::format
