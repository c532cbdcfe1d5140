// The restricted unpickler's stack machine: the opcodes torch.save emits for a state dict.
#include <cstdio>

#include "lib/format/unpickler.h"

namespace fuji::format {
namespace pickle {
namespace {

// Opcodes, named as in CPython's pickle.py.
enum Opcode : uint8_t {
  kMark = '(',
  kStop = '.',
  kBinBytes = 'B',
  kShortBinBytes = 'C',
  kBinFloat = 'G',
  kBinInt = 'J',
  kBinInt1 = 'K',
  kBinInt2 = 'M',
  kNone = 'N',
  kBinPersId = 'Q',
  kReduce = 'R',
  kBinUnicode = 'X',
  kEmptyList = ']',
  kAppend = 'a',
  kBuild = 'b',
  kGlobal = 'c',
  kDict = 'd',
  kAppends = 'e',
  kBinGet = 'h',
  kLongBinGet = 'j',
  kList = 'l',
  kBinPut = 'q',
  kLongBinPut = 'r',
  kSetItem = 's',
  kTuple = 't',
  kSetItems = 'u',
  kEmptyDict = '}',
  kEmptyTuple = ')',
  kProto = 0x80,
  kTuple1 = 0x85,
  kTuple2 = 0x86,
  kTuple3 = 0x87,
  kNewTrue = 0x88,
  kNewFalse = 0x89,
  kLong1 = 0x8a,
  kShortBinUnicode = 0x8c,
  kBinUnicode8 = 0x8d,
  kStackGlobal = 0x93,
  kMemoize = 0x94,
  kFrame = 0x95,
};

}  // namespace

Result<std::string_view> Unpickler::Take(uint64_t n) {
  if (n > in_.size() - pos_) {
    return Corrupt("needs " + std::to_string(n) + " bytes, " + std::to_string(in_.size() - pos_) +
                   " are left");
  }
  std::string_view bytes = in_.substr(pos_, n);
  pos_ += n;
  return bytes;
}

Result<std::string_view> Unpickler::TakeLine() {
  size_t newline = in_.find('\n', pos_);
  if (newline == std::string_view::npos) return Corrupt("GLOBAL without a newline");
  std::string_view line = in_.substr(pos_, newline - pos_);
  pos_ = newline + 1;
  return line;
}

// LONG1: a little-endian two's complement integer of up to 255 bytes; only 64 bits are supported.
Status Unpickler::PushLong1() {
  FUJI_ASSIGN_OR_RETURN(uint8_t n, TakeLe<uint8_t>());
  FUJI_ASSIGN_OR_RETURN(std::string_view bytes, Take(n));
  if (n > 8) return Unsupported("integer of " + std::to_string(n) + " bytes is over 64 bits");
  uint64_t bits = 0;
  std::memcpy(&bits, bytes.data(), n);
  if (n > 0 && n < 8 && (static_cast<uint8_t>(bytes[n - 1]) & 0x80) != 0) {
    bits |= ~uint64_t{0} << (8 * n);  // sign-extend
  }
  int64_t v;
  std::memcpy(&v, &bits, sizeof v);
  return Push({Kind::kInt, v});
}

Result<Value> Unpickler::Pop() {
  if (stack_.size() <= Floor()) return Corrupt("pop from an empty stack");
  Value v = stack_.back();
  stack_.pop_back();
  return v;
}

Result<std::vector<Value>> Unpickler::PopN(size_t n) {
  if (stack_.size() - Floor() < n) return Corrupt("needs " + std::to_string(n) + " stack values");
  std::vector<Value> items(stack_.end() - n, stack_.end());
  stack_.resize(stack_.size() - n);
  return items;
}

Result<std::vector<Value>> Unpickler::PopToMark() {
  if (marks_.empty()) return Corrupt("no MARK on the stack");
  const size_t mark = marks_.back();
  marks_.pop_back();
  std::vector<Value> items(stack_.begin() + mark, stack_.end());
  stack_.resize(mark);
  return items;
}

Result<std::string_view> Unpickler::PopString() {
  FUJI_ASSIGN_OR_RETURN(Value v, Pop());
  if (v.kind != Kind::kString) return Corrupt("expected a string on the stack");
  return strings_[v.i];
}

Status Unpickler::Memoize(uint64_t index) {
  if (stack_.size() <= Floor()) return Corrupt("memoizing an empty stack");
  memo_[index] = stack_.back();
  return Status::Ok();
}

Status Unpickler::PushMemo(uint64_t index) {
  auto it = memo_.find(index);
  if (it == memo_.end()) return Corrupt("memo entry " + std::to_string(index) + " was never set");
  return Push(it->second);
}

Status Unpickler::AddItems(const std::vector<Value>& flat) {
  if (flat.size() % 2 != 0) return Corrupt("odd number of values for a dict's keys and values");
  if (stack_.size() <= Floor() || stack_.back().kind != Kind::kDict) {
    return Corrupt("setting items on something other than a dict");
  }
  std::vector<Value>& dict = dicts_[stack_.back().i];
  dict.insert(dict.end(), flat.begin(), flat.end());
  return Status::Ok();
}

Status Unpickler::AppendItems(std::vector<Value> items) {
  if (stack_.size() <= Floor() || stack_.back().kind != Kind::kList) {
    return Corrupt("appending to something other than a list");
  }
  std::vector<Value>& list = sequences_[stack_.back().i];
  list.insert(list.end(), items.begin(), items.end());
  return Status::Ok();
}

bool Unpickler::ToInts(const Value& tuple, std::vector<int64_t>* out) const {
  if (tuple.kind != Kind::kTuple) return false;
  out->clear();
  for (const Value& v : sequences_[tuple.i]) {
    if (v.kind != Kind::kInt) return false;
    out->push_back(v.i);
  }
  return true;
}

Status Unpickler::Step() {
  op_offset_ = pos_;
  if (pos_ == in_.size()) return Corrupt("the pickle ends without STOP");
  FUJI_ASSIGN_OR_RETURN(uint8_t op, TakeLe<uint8_t>());
  switch (op) {
    case kProto: {
      FUJI_ASSIGN_OR_RETURN(uint8_t protocol, TakeLe<uint8_t>());
      if (protocol > 5) return Unsupported("pickle protocol " + std::to_string(protocol));
      return Status::Ok();
    }
    case kFrame: return Take(8).status();  // frames only batch reads
    case kGlobal: {
      FUJI_ASSIGN_OR_RETURN(std::string_view module, TakeLine());
      FUJI_ASSIGN_OR_RETURN(std::string_view name, TakeLine());
      return PushGlobal(module, name);
    }
    case kStackGlobal: {
      FUJI_ASSIGN_OR_RETURN(std::string_view name, PopString());
      FUJI_ASSIGN_OR_RETURN(std::string_view module, PopString());
      return PushGlobal(module, name);
    }
    case kBinPut: {
      FUJI_ASSIGN_OR_RETURN(uint8_t index, TakeLe<uint8_t>());
      return Memoize(index);
    }
    case kLongBinPut: {
      FUJI_ASSIGN_OR_RETURN(uint32_t index, TakeLe<uint32_t>());
      return Memoize(index);
    }
    case kMemoize: return Memoize(memo_.size());
    case kBinGet: {
      FUJI_ASSIGN_OR_RETURN(uint8_t index, TakeLe<uint8_t>());
      return PushMemo(index);
    }
    case kLongBinGet: {
      FUJI_ASSIGN_OR_RETURN(uint32_t index, TakeLe<uint32_t>());
      return PushMemo(index);
    }
    case kMark: marks_.push_back(stack_.size()); return Status::Ok();
    case kEmptyDict: return Push(NewDict());
    case kEmptyList: return Push(NewSequence(Kind::kList, {}));
    case kEmptyTuple: return Push(NewSequence(Kind::kTuple, {}));
    case kTuple1:
    case kTuple2:
    case kTuple3: {
      FUJI_ASSIGN_OR_RETURN(std::vector<Value> items, PopN(op - kTuple1 + 1));
      return Push(NewSequence(Kind::kTuple, std::move(items)));
    }
    case kTuple:
    case kList: {
      FUJI_ASSIGN_OR_RETURN(std::vector<Value> items, PopToMark());
      return Push(NewSequence(op == kTuple ? Kind::kTuple : Kind::kList, std::move(items)));
    }
    case kDict: {
      FUJI_ASSIGN_OR_RETURN(std::vector<Value> items, PopToMark());
      FUJI_RETURN_IF_ERROR(Push(NewDict()));
      return AddItems(items);
    }
    case kSetItem: {
      FUJI_ASSIGN_OR_RETURN(std::vector<Value> items, PopN(2));
      return AddItems(items);
    }
    case kSetItems: {
      FUJI_ASSIGN_OR_RETURN(std::vector<Value> items, PopToMark());
      return AddItems(items);
    }
    case kAppend: {
      FUJI_ASSIGN_OR_RETURN(std::vector<Value> items, PopN(1));
      return AppendItems(std::move(items));
    }
    case kAppends: {
      FUJI_ASSIGN_OR_RETURN(std::vector<Value> items, PopToMark());
      return AppendItems(std::move(items));
    }
    case kBinInt: {
      FUJI_ASSIGN_OR_RETURN(int32_t v, TakeLe<int32_t>());
      return Push({Kind::kInt, v});
    }
    case kBinInt1: {
      FUJI_ASSIGN_OR_RETURN(uint8_t v, TakeLe<uint8_t>());
      return Push({Kind::kInt, v});
    }
    case kBinInt2: {
      FUJI_ASSIGN_OR_RETURN(uint16_t v, TakeLe<uint16_t>());
      return Push({Kind::kInt, v});
    }
    case kLong1: return PushLong1();
    case kBinFloat: {
      FUJI_RETURN_IF_ERROR(Take(8).status());
      return Push({Kind::kFloat, 0});
    }
    case kNone: return Push({Kind::kNone, 0});
    case kNewTrue: return Push({Kind::kBool, 1});
    case kNewFalse: return Push({Kind::kBool, 0});
    case kShortBinUnicode:
    case kShortBinBytes: return PushString<uint8_t>();
    case kBinUnicode:
    case kBinBytes: return PushString<uint32_t>();
    case kBinUnicode8: return PushString<uint64_t>();
    case kBinPersId: {
      FUJI_ASSIGN_OR_RETURN(Value pid, Pop());
      FUJI_ASSIGN_OR_RETURN(Value storage, LoadStorage(pid));
      return Push(storage);
    }
    case kReduce: return Reduce();
    case kBuild: {
      // The state of an OrderedDict (its _metadata attribute) or a tensor is not needed.
      FUJI_RETURN_IF_ERROR(Pop().status());
      if (stack_.size() <= Floor() ||
          (stack_.back().kind != Kind::kDict && stack_.back().kind != Kind::kTensor)) {
        return Corrupt("BUILD on something other than a dict or a tensor");
      }
      return Status::Ok();
    }
    case kStop: stopped_ = true; return Status::Ok();
    default: {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02x", op);
      return Unsupported(std::string("pickle opcode ") + hex + " is not supported");
    }
  }
}

Result<std::vector<TensorView>> Unpickler::StateDict() {
  FUJI_ASSIGN_OR_RETURN(Value top, Pop());
  if (top.kind != Kind::kDict) return Unsupported("the pickled object is not a dict");
  const std::vector<Value>& items = dicts_[top.i];
  std::vector<TensorView> out;
  out.reserve(items.size() / 2);
  for (size_t k = 0; k < items.size(); k += 2) {
    if (items[k].kind != Kind::kString) return Unsupported("a state dict key is not a string");
    const std::string name(strings_[items[k].i]);
    if (items[k + 1].kind != Kind::kTensor) {
      return Unsupported("state dict entry '" + name + "' is not a tensor");
    }
    out.push_back(tensors_[items[k + 1].i]);
    out.back().name = name;
  }
  return out;
}

}  // namespace pickle

Result<std::vector<TensorView>> UnpickleStateDict(std::string_view pickle,
                                                  const StorageLookup& lookup) {
  return pickle::Unpickler(pickle, lookup).Run();
}

}  // namespace fuji::format
