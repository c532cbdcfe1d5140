// Tests for TorchZipFile and the restricted unpickler, on fixtures torch.save writes at test time.
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "lib/common/file_util.h"
#include "lib/format/torch_pickle.h"
#include "lib/format/torch_zip.h"

namespace fuji::format {
namespace {

// Debian's python3-torch; the python3 first on PATH may be another Python without torch.
constexpr char kPython[] = "/usr/bin/python3";

std::string ScratchDir() {
  const char* env = std::getenv("FUJI_BINARY_DIR");
  std::string dir = std::string(env != nullptr ? env : FUJI_BINARY_DIR) + "/test_scratch";
  ::mkdir(dir.c_str(), 0755);
  dir += "/torch_zip";
  ::mkdir(dir.c_str(), 0755);
  return dir;
}

class TorchZipTest : public ::testing::Test {
 protected:
  // Runs tests/data/make_torch_checkpoints.py once for the suite.
  static void SetUpTestSuite() {
    dir_ = new std::string(ScratchDir());
    const std::string probe = std::string(kPython) + " -c 'import torch' >/dev/null 2>&1";
    if (std::system(probe.c_str()) != 0) {
      skip_ = "needs torch in " + std::string(kPython) + " (Debian's python3-torch)";
      return;
    }
    const std::string log = *dir_ + "/make_torch_checkpoints.log";
    const std::string command = std::string(kPython) + " '" + FUJI_SOURCE_DIR +
                                "/tests/data/make_torch_checkpoints.py' '" + *dir_ + "' >'" + log +
                                "' 2>&1";
    if (std::system(command.c_str()) != 0) setup_error_ = "fixture script failed; see " + log;
  }
  static void TearDownTestSuite() { delete dir_; }

  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
  }

  static std::string Fixture(const std::string& name) { return *dir_ + "/" + name; }

  // A copy of `bytes` at a scratch path named after the current test.
  static std::string WriteScratch(const std::string& bytes, const std::string& suffix = "") {
    const std::string path = *dir_ + "/" +
                             ::testing::UnitTest::GetInstance()->current_test_info()->name() +
                             suffix + ".bin";
    EXPECT_TRUE(WriteFileAtomically(path, bytes).ok());
    return path;
  }

  static std::string* dir_;
  static std::string skip_;
  static std::string setup_error_;
};

std::string* TorchZipTest::dir_ = nullptr;
std::string TorchZipTest::skip_;
std::string TorchZipTest::setup_error_;

// The tensor's elements in row-major order, gathered through its strides, as hex.
std::string GatherHex(const TensorView& t) {
  const size_t element = DTypeSize(t.dtype);
  std::string hex;
  std::vector<int64_t> index(t.shape.size(), 0);
  for (int64_t n = 0; n < t.numel(); ++n) {
    int64_t offset = 0;
    for (size_t d = 0; d < index.size(); ++d) offset += index[d] * t.strides[d];
    for (size_t b = 0; b < element; ++b) {
      char byte[3];
      std::snprintf(byte, sizeof byte, "%02x", t.data[offset * element + b]);
      hex += byte;
    }
    for (size_t d = index.size(); d-- > 0;) {
      if (++index[d] < t.shape[d]) break;
      index[d] = 0;
    }
  }
  return hex;
}

void ExpectMatchesPython(const TorchZipFile& file, const std::string& expected_json) {
  auto text = ReadFile(expected_json);
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  const nlohmann::json expected = nlohmann::json::parse(*text)["tensors"];
  ASSERT_EQ(file.tensors().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const TensorView& t = file.tensors()[i];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.name, expected[i]["name"]);
    EXPECT_EQ(DTypeName(t.dtype), expected[i]["dtype"].get<std::string>());
    EXPECT_EQ(t.shape, expected[i]["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(t.strides, expected[i]["strides"].get<std::vector<int64_t>>());
    EXPECT_EQ(GatherHex(t), expected[i]["hex"]);
    EXPECT_EQ(file.Find(t.name), &t);
  }
}

TEST_F(TorchZipTest, ReadsAStateDictAsTorchSavesIt) {
  auto file = TorchZipFile::Open(Fixture("gpt2.bin"));
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(file->path(), Fixture("gpt2.bin"));
  ExpectMatchesPython(*file, Fixture("expected.json"));

  const TensorView* mask = file->Find("h.0.attn.bias");
  ASSERT_NE(mask, nullptr);
  EXPECT_EQ(mask->dtype, DType::kU8);
  EXPECT_EQ(mask->shape, (std::vector<int64_t>{1, 1, 3, 3}));
  EXPECT_EQ(file->Find("ln_f.weight")->dtype, DType::kBF16);
  EXPECT_EQ(file->Find("ln_f.bias")->dtype, DType::kF16);
  EXPECT_EQ(file->Find("empty")->nbytes, 0u);
  EXPECT_EQ(file->Find("nope"), nullptr);
}

TEST_F(TorchZipTest, ViewsShareTheirStorageRecord) {
  auto file = TorchZipFile::Open(Fixture("gpt2.bin"));
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  const TensorView* a = file->Find("shared.a");
  const TensorView* b = file->Find("shared.b");
  const TensorView* t = file->Find("shared.t");
  EXPECT_TRUE(a->contiguous());
  EXPECT_TRUE(b->contiguous());
  EXPECT_FALSE(t->contiguous());
  EXPECT_EQ(b->data, a->data + 4 * sizeof(float));  // storage_offset 4
  EXPECT_EQ(t->data, a->data);
  EXPECT_EQ(t->nbytes, 12 * sizeof(float));
  EXPECT_EQ(file->Find("lm_head.weight")->data, file->Find("wte.weight")->data);
}

TEST_F(TorchZipTest, ReadsProtocol4Pickles) {
  auto file = TorchZipFile::Open(Fixture("gpt2_proto4.bin"));
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  ExpectMatchesPython(*file, Fixture("expected.json"));
}

TEST_F(TorchZipTest, ReadsZip64) {
  auto file = TorchZipFile::Open(Fixture("zip64.bin"));
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  ExpectMatchesPython(*file, Fixture("expected.json"));
}

void ExpectError(const Result<TorchZipFile>& file, StatusCode code, const std::string& path,
                 const std::string& message) {
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), code) << file.status().ToString();
  EXPECT_EQ(file.status().message().rfind(path + ": ", 0), 0u) << file.status().message();
  EXPECT_NE(file.status().message().find(message), std::string::npos) << file.status().message();
}

TEST_F(TorchZipTest, RefusesGlobalsOutsideTheAllowlist) {
  const std::string path = Fixture("malicious.bin");
  ExpectError(TorchZipFile::Open(path), StatusCode::kInvalidArgument, path,
              "refuses global 'posix.system'");
}

TEST_F(TorchZipTest, RefusesCompressedEntries) {
  const std::string path = Fixture("compressed.bin");
  ExpectError(TorchZipFile::Open(path), StatusCode::kInvalidArgument, path,
              "is compressed (method 8); only stored entries are supported");
}

TEST_F(TorchZipTest, RefusesTheLegacyFormat) {
  const std::string path = Fixture("legacy.bin");
  ExpectError(TorchZipFile::Open(path), StatusCode::kInvalidArgument, path,
              "legacy (pre-1.6, not zip) torch.save format is not supported");
}

TEST_F(TorchZipTest, RefusesAMissingStorageRecord) {
  const std::string path = Fixture("missing_record.bin");
  ExpectError(TorchZipFile::Open(path), StatusCode::kDataLoss, path,
              "storage record 'gpt2/data/0' is missing");
}

TEST_F(TorchZipTest, RefusesAStorageTooSmallForItsViews) {
  const std::string path = Fixture("small_storage.bin");
  ExpectError(TorchZipFile::Open(path), StatusCode::kDataLoss, path,
              "storage '4' of 24 F32 elements needs more than its record's 8 bytes");
}

TEST_F(TorchZipTest, RefusesEmptyAndMissingFiles) {
  const std::string empty = WriteScratch("");
  ExpectError(TorchZipFile::Open(empty), StatusCode::kDataLoss, empty, "too short for a zip");
  EXPECT_EQ(TorchZipFile::Open(Fixture("absent.bin")).status().code(), StatusCode::kNotFound);
}

TEST_F(TorchZipTest, RefusesACorruptEndRecord) {
  auto bytes = ReadFile(Fixture("gpt2.bin"));
  ASSERT_TRUE(bytes.ok());
  const size_t end = bytes->size() - 22;  // torch writes no zip comment
  ASSERT_EQ(bytes->substr(end, 4), "PK\x05\x06");

  std::string bad_signature = *bytes;
  bad_signature[end] = 'X';
  const std::string a = WriteScratch(bad_signature, "_signature");
  ExpectError(TorchZipFile::Open(a), StatusCode::kDataLoss, a, "no zip end of central directory");

  // torch always writes the zip64 end record (56 bytes) and locator (20) before the end record.
  const size_t record = end - 20 - 56;
  ASSERT_EQ(bytes->substr(record, 4), "PK\x06\x06");
  std::string bad_locator = *bytes;
  bad_locator[end - 20 + 8] ^= 1;
  const std::string b = WriteScratch(bad_locator, "_locator");
  ExpectError(TorchZipFile::Open(b), StatusCode::kDataLoss, b, "locator points at no record");

  std::string bad_offset = *bytes;
  const uint64_t far = uint64_t{1} << 40;
  std::memcpy(&bad_offset[record + 48], &far, 8);
  const std::string c = WriteScratch(bad_offset, "_offset");
  ExpectError(TorchZipFile::Open(c), StatusCode::kDataLoss, c,
              "bytes at 1099511627776) runs past the end");
}

TEST_F(TorchZipTest, EveryTruncationIsRefused) {
  auto bytes = ReadFile(Fixture("zip64.bin"));
  ASSERT_TRUE(bytes.ok());
  for (size_t n = 0; n < bytes->size(); ++n) {
    auto file = TorchZipFile::Open(WriteScratch(bytes->substr(0, n)));
    ASSERT_FALSE(file.ok()) << n;
    EXPECT_EQ(file.status().code(), StatusCode::kDataLoss) << file.status().ToString();
  }
}

// Flips each byte in turn: the reader must refuse the file or return readable views, never crash.
TEST_F(TorchZipTest, EveryCorruptedByteIsHandled) {
  auto bytes = ReadFile(Fixture("gpt2.bin"));
  ASSERT_TRUE(bytes.ok());
  for (size_t i = 0; i < bytes->size(); ++i) {
    std::string corrupt = *bytes;
    corrupt[i] = static_cast<char>(~corrupt[i]);
    auto file = TorchZipFile::Open(WriteScratch(corrupt));
    if (!file.ok()) continue;
    // A view outside the map would fault here or exceed the file's size.
    for (const TensorView& t : file->tensors()) {
      EXPECT_LE(t.nbytes, corrupt.size()) << i << " " << t.name;
      unsigned sum = 0;
      for (size_t b = 0; b < t.nbytes; ++b) sum += t.data[b];
      (void)sum;
    }
  }
}

// Pickles crafted byte by byte exercise the unpickler's limits without a zip around them.
Result<std::vector<TensorView>> Unpickle(const std::string& pickle) {
  static const std::string storage(64, '\0');
  return UnpickleStateDict(pickle, [](const std::string&) -> Result<std::string_view> {
    return std::string_view(storage);
  });
}

void ExpectUnpickleError(const std::string& pickle, StatusCode code, const std::string& message) {
  auto result = Unpickle(pickle);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), code) << result.status().ToString();
  EXPECT_NE(result.status().message().find(message), std::string::npos)
      << result.status().message();
}

// Pickle pieces. Binary literals are concatenated from short ones, since a hex escape runs on
// through any following hex digit.
constexpr char kHeader[] = "\x80\x02";       // PROTO 2
std::string Unicode(const std::string& s) {  // BINUNICODE
  const uint32_t n = static_cast<uint32_t>(s.size());
  return "X" + std::string(reinterpret_cast<const char*>(&n), 4) + s;
}
std::string Int(uint8_t v) {
  return "K" + std::string(1, static_cast<char>(v));
}  // BININT1

// {'w': a 1-D F32 tensor of `size` elements at `offset` in a storage of `storage_elements`}.
std::string OneTensorPickle(uint8_t storage_elements, const std::string& offset, uint8_t size) {
  return std::string(kHeader) + "}" + Unicode("w") + "ctorch._utils\n_rebuild_tensor_v2\n" + "((" +
         Unicode("storage") + "ctorch\nFloatStorage\n" + Unicode("0") + Unicode("cpu") +
         Int(storage_elements) + "tQ" + offset + Int(size) + "\x85" + Int(1) + "\x85" +
         "\x89"
         "NtR"
         "s.";
}

TEST(UnpickleStateDictTest, ChecksTensorViewsAgainstTheirStorage) {
  auto ok = Unpickle(OneTensorPickle(16, Int(4), 12));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  ASSERT_EQ(ok->size(), 1u);
  EXPECT_EQ((*ok)[0].name, "w");
  EXPECT_EQ((*ok)[0].shape, (std::vector<int64_t>{12}));
  EXPECT_EQ((*ok)[0].nbytes, 48u);
  ExpectUnpickleError(OneTensorPickle(16, Int(5), 12), StatusCode::kDataLoss,
                      "tensor view [5, 17) runs past its storage of 16 elements");
  ExpectUnpickleError(OneTensorPickle(17, Int(0), 1), StatusCode::kDataLoss,
                      "storage '0' of 17 F32 elements needs more than its record's 64 bytes");
}

TEST(UnpickleStateDictTest, RefusesMalformedPickles) {
  const std::string h = kHeader;
  ExpectUnpickleError("", StatusCode::kDataLoss, "offset 0: the pickle ends without STOP");
  ExpectUnpickleError(h + "}", StatusCode::kDataLoss, "offset 3: the pickle ends without STOP");
  ExpectUnpickleError("\x80\x06}.", StatusCode::kInvalidArgument, "pickle protocol 6");
  ExpectUnpickleError(h + "s.", StatusCode::kDataLoss, "offset 2: needs 2 stack values");
  ExpectUnpickleError(h + "h\x05.", StatusCode::kDataLoss, "memo entry 5 was never set");
  ExpectUnpickleError(h + "X\xff\xff\xff\xff", StatusCode::kDataLoss, "needs 4294967295 bytes");
  ExpectUnpickleError(h + "}(.", StatusCode::kDataLoss, "pop from an empty stack");
  ExpectUnpickleError(h + "I1\n.", StatusCode::kInvalidArgument, "pickle opcode 0x49");
  ExpectUnpickleError(h + "\x8c\x08"
                          "builtins"
                          "\x8c\x04"
                          "eval"
                          "\x93.",
                      StatusCode::kInvalidArgument, "refuses global 'builtins.eval'");
  ExpectUnpickleError(h + "}" + Unicode("k") + Int(1) + "s.", StatusCode::kInvalidArgument,
                      "state dict entry 'k' is not a tensor");
  ExpectUnpickleError(h + "].", StatusCode::kInvalidArgument, "not a dict");
}

TEST(UnpickleStateDictTest, SurvivesDeepNestingAndCycles) {
  // 100000 lists each appended into the one below: no recursion, so no stack overflow.
  const std::string deep = kHeader + std::string(100000, ']') + std::string(99999, 'a') + ".";
  ExpectUnpickleError(deep, StatusCode::kInvalidArgument, "not a dict");
  // A list that contains itself: values are table indices, so there is nothing to leak.
  ExpectUnpickleError(kHeader + std::string("]q") + '\0' + "h" + '\0' + "a.",
                      StatusCode::kInvalidArgument, "not a dict");
}

TEST(UnpickleStateDictTest, ReadsSignedLong1) {
  // LONG1 0xff is -1: a negative storage offset is refused rather than used.
  ExpectUnpickleError(OneTensorPickle(16, "\x8a\x01\xff", 1), StatusCode::kDataLoss,
                      "_rebuild_tensor_v2 needs");
  auto ok = Unpickle(OneTensorPickle(16, std::string("\x8a\x02\x0f\x00", 4), 1));  // LONG1 15
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
}

}  // namespace
}  // namespace fuji::format
