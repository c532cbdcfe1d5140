// Tests for SafetensorsWriter and SafetensorsFile: round trips, and every malformed header refused.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "lib/common/file_util.h"
#include "lib/format/safetensors.h"

namespace fuji::format {
namespace {

std::string ScratchDir() {
  const char* env = std::getenv("FUJI_BINARY_DIR");
  std::string dir = std::string(env != nullptr ? env : FUJI_BINARY_DIR) + "/test_scratch";
  ::mkdir(dir.c_str(), 0755);
  dir += "/safetensors";
  ::mkdir(dir.c_str(), 0755);
  return dir;
}

// A scratch path named after the current test, with no file left there by an earlier run.
std::string TestPath(const std::string& suffix) {
  const std::string path = ScratchDir() + "/" +
                           ::testing::UnitTest::GetInstance()->current_test_info()->name() +
                           suffix + ".safetensors";
  ::unlink(path.c_str());
  return path;
}

// Whether a writer's partial file of path ("<path>.partial-<hex>") is there.
bool HasPartial(const std::string& path) {
  const std::string dir = path.substr(0, path.rfind('/'));
  const std::string prefix = path.substr(path.rfind('/') + 1) + ".partial-";
  bool found = false;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d)) found |= std::string(e->d_name).rfind(prefix, 0) == 0;
    ::closedir(d);
  }
  return found;
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

// A file made of an 8-byte length, `header` and `data`.
std::string Craft(const std::string& header, const std::string& data = "") {
  const uint64_t n = header.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

std::vector<uint8_t> Iota(size_t n, uint8_t start = 0) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(start + i);
  return v;
}

TEST(SafetensorsWriterTest, RoundTripsShapesDtypesBytesAndMetadata) {
  const std::string path = TestPath("");
  const std::vector<TensorSpec> specs = {
      {"h.0.weight", DType::kF32, {2, 3}}, {"h.0.scale", DType::kBF16, {4}},
      {"empty", DType::kU8, {0, 5}},       {"step", DType::kI64, {}},
      {"mask", DType::kBool, {3}},
  };
  const std::vector<uint8_t> bytes = Iota(24 + 8 + 0 + 8 + 3);
  {
    auto writer = SafetensorsWriter::Create(path, specs, {{"format", "pt"}});
    ASSERT_TRUE(writer.ok()) << writer.status().ToString();
    ASSERT_TRUE(writer->Write(bytes.data(), bytes.size()).ok());
    ASSERT_FALSE(Exists(path));
    ASSERT_TRUE(writer->Finish().ok());
  }
  EXPECT_FALSE(HasPartial(path));

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(file->path(), path);
  EXPECT_EQ(file->metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(file->tensors().size(), specs.size());
  size_t offset = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorView& t = file->tensors()[i];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.name, specs[i].name);
    EXPECT_EQ(t.dtype, specs[i].dtype);
    EXPECT_EQ(t.shape, specs[i].shape);
    EXPECT_TRUE(t.contiguous());
    EXPECT_EQ(t.nbytes, static_cast<size_t>(t.numel()) * DTypeSize(t.dtype));
    EXPECT_EQ(std::memcmp(t.data, bytes.data() + offset, t.nbytes), 0);
    EXPECT_EQ(file->Find(t.name), &t);
    offset += t.nbytes;
  }
  EXPECT_EQ(file->Find("h.0.weight")->strides, (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(file->Find("missing"), nullptr);

  // As the reference implementation writes it: the header padded with spaces to 8 bytes.
  const std::string_view raw = file->file().view();
  uint64_t header_size = 0;
  std::memcpy(&header_size, raw.data(), 8);
  EXPECT_EQ(header_size % 8, 0u);
  EXPECT_EQ(raw.size(), 8 + header_size + bytes.size());
  EXPECT_EQ(raw.substr(8, header_size).find_last_not_of(' '),
            raw.substr(8, header_size).rfind('}'));
}

TEST(SafetensorsWriterTest, AcceptsChunksThatStraddleTensors) {
  const std::string path = TestPath("");
  const std::vector<uint8_t> bytes = Iota(4 * 5 + 2 * 7, 100);
  auto writer = SafetensorsWriter::Create(path, {{"a", DType::kF32, {5}}, {"b", DType::kF16, {7}}});
  ASSERT_TRUE(writer.ok()) << writer.status().ToString();
  size_t done = 0;
  for (size_t chunk : {1, 3, 17, 0, 13}) {
    ASSERT_TRUE(writer->Write(bytes.data() + done, chunk).ok());
    done += chunk;
  }
  ASSERT_EQ(done, bytes.size());
  SafetensorsWriter moved = std::move(writer).value();
  ASSERT_TRUE(moved.Finish().ok());

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(std::memcmp(file->Find("a")->data, bytes.data(), 20), 0);
  EXPECT_EQ(std::memcmp(file->Find("b")->data, bytes.data() + 20, 14), 0);
}

TEST(SafetensorsWriterTest, RefusesBadSpecs) {
  const std::string path = TestPath("");
  struct Case {
    std::vector<TensorSpec> specs;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{{"a", DType::kF32, {1}}, {"a", DType::kF32, {2}}}, "tensor 'a': named twice"},
      {{{"__metadata__", DType::kF32, {1}}}, "tensor '__metadata__': the name is reserved"},
      {{{"neg", DType::kF32, {2, -1}}}, "tensor 'neg': shape [2,-1]"},
      {{{"big", DType::kF32, {int64_t{1} << 40, int64_t{1} << 40}}}, "tensor 'big': shape"},
  };
  for (const Case& c : cases) {
    auto writer = SafetensorsWriter::Create(path, c.specs);
    ASSERT_FALSE(writer.ok());
    EXPECT_EQ(writer.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(writer.status().message().find(path + ": " + c.message), std::string::npos)
        << writer.status().message();
  }
  EXPECT_FALSE(HasPartial(path));
}

TEST(SafetensorsWriterTest, RefusesTooManyBytes) {
  const std::string path = TestPath("");
  auto writer =
      SafetensorsWriter::Create(path, {{"a", DType::kU8, {2}}, {"last", DType::kU8, {2}}});
  ASSERT_TRUE(writer.ok());
  const std::vector<uint8_t> bytes = Iota(5);
  Status s = writer->Write(bytes.data(), 5);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("'last'"), std::string::npos) << s.message();
  // Nothing was written, so the exact amount still completes the file.
  ASSERT_TRUE(writer->Write(bytes.data(), 4).ok());
  EXPECT_TRUE(writer->Finish().ok());
  EXPECT_EQ(writer->Write(bytes.data(), 0).code(), StatusCode::kFailedPrecondition);
}

TEST(SafetensorsWriterTest, RefusesTooFewBytesAndRemovesThePartialFile) {
  const std::string path = TestPath("");
  {
    auto writer = SafetensorsWriter::Create(path, {{"a", DType::kU8, {2}}, {"b", DType::kU8, {2}}});
    ASSERT_TRUE(writer.ok());
    EXPECT_TRUE(Exists(writer->partial_path()));
    EXPECT_TRUE(HasPartial(path));
    const uint8_t three[3] = {1, 2, 3};
    ASSERT_TRUE(writer->Write(three, 3).ok());
    Status s = writer->Finish();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("tensor 'b' is incomplete"), std::string::npos) << s.message();
  }
  EXPECT_FALSE(HasPartial(path));
  EXPECT_FALSE(Exists(path));
}

TEST(SafetensorsWriterTest, ALinkPlantedAtThePathIsReplacedAndItsTargetLeftAlone) {
  const std::string path = TestPath("");
  const std::string target = path + ".target";
  ASSERT_TRUE(WriteFileAtomically(target, "keep").ok());
  ASSERT_EQ(::symlink(target.c_str(), path.c_str()), 0);
  {
    auto writer = SafetensorsWriter::Create(path, {{"a", DType::kU8, {2}}});
    ASSERT_TRUE(writer.ok()) << writer.status().ToString();
    const uint8_t two[2] = {1, 2};
    ASSERT_TRUE(writer->Write(two, 2).ok());
    ASSERT_TRUE(writer->Finish().ok());
  }
  EXPECT_EQ(*ReadFile(target), "keep");
  struct stat st {};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);  // a checkpoint's file is its writer's
  ::unlink(target.c_str());

  auto shared = SafetensorsWriter::Create(path, {{"a", DType::kU8, {1}}}, {}, 0644);
  ASSERT_TRUE(shared.ok());
  const uint8_t one = 1;
  ASSERT_TRUE(shared->Write(&one, 1).ok());
  ASSERT_TRUE(shared->Finish().ok());
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
}

TEST(SafetensorsFileTest, AllowsGapsAndOrdersByOffset) {
  const std::string path = TestPath("");
  const std::string header =
      R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[6,8]},)"
      R"("z":{"dtype":"I16","shape":[1],"data_offsets":[0,2]},"__metadata__":{"k":"v"}})";
  ASSERT_TRUE(WriteFileAtomically(path, Craft(header, "zzgapsaa")).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  ASSERT_EQ(file->tensors().size(), 2u);
  EXPECT_EQ(file->tensors()[0].name, "z");
  EXPECT_EQ(file->tensors()[1].name, "a");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(file->Find("a")->data), 2), "aa");
}

struct BadFile {
  std::string label;
  std::string bytes;
  StatusCode code;
  std::string message;  // expected after "<path>: "
};

std::string Entry(const std::string& body) {
  return R"({"t":)" + body + "}";
}

std::vector<BadFile> BadFiles() {
  const std::string ok_entry = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  std::string over_limit(8, '\0');
  const uint64_t huge = 100'000'001;
  std::memcpy(over_limit.data(), &huge, 8);
  return {
      {"empty", "", StatusCode::kDataLoss, "0 bytes is too short"},
      {"short", "abcde", StatusCode::kDataLoss, "5 bytes is too short"},
      {"header_past_end", Craft("{}").substr(0, 9), StatusCode::kDataLoss,
       "header length 2 runs past the end"},
      {"header_over_limit", over_limit + "{}", StatusCode::kDataLoss,
       "header length 100000001 is over the limit"},
      {"not_json", Craft("{\"t\": "), StatusCode::kDataLoss, "header is not valid JSON"},
      {"not_object", Craft("[1, 2]"), StatusCode::kDataLoss, "header is not a JSON object"},
      {"entry_not_object", Craft(Entry("3")), StatusCode::kDataLoss, "tensor 't': entry is not"},
      {"no_dtype", Craft(Entry(R"({"shape":[2],"data_offsets":[0,8]})"), std::string(8, 'x')),
       StatusCode::kDataLoss, "tensor 't': missing 'dtype'"},
      {"no_shape", Craft(Entry(R"({"dtype":"F32","data_offsets":[0,8]})"), std::string(8, 'x')),
       StatusCode::kDataLoss, "tensor 't': missing 'shape'"},
      {"no_offsets", Craft(Entry(R"({"dtype":"F32","shape":[2]})"), std::string(8, 'x')),
       StatusCode::kDataLoss, "tensor 't': missing 'data_offsets'"},
      {"dtype_type", Craft(Entry(R"({"dtype":4,"shape":[2],"data_offsets":[0,8]})")),
       StatusCode::kDataLoss, "tensor 't': 'dtype' is not a string"},
      {"shape_type", Craft(Entry(R"({"dtype":"F32","shape":2,"data_offsets":[0,8]})")),
       StatusCode::kDataLoss, "tensor 't': 'shape' is not an array"},
      {"shape_float", Craft(Entry(R"({"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})")),
       StatusCode::kDataLoss, "tensor 't': shape [2.0] has a dimension"},
      {"negative_dim", Craft(Entry(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})")),
       StatusCode::kDataLoss, "tensor 't': shape [-2] has a dimension that is not an integer >= 0"},
      {"shape_overflow",
       Craft(Entry(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]})")),
       StatusCode::kDataLoss, "tensor 't': shape [4294967296,4294967296] overflows"},
      {"offsets_length", Craft(Entry(R"({"dtype":"F32","shape":[2],"data_offsets":[0]})")),
       StatusCode::kDataLoss, "tensor 't': 'data_offsets' is not a [begin, end] array"},
      {"offsets_negative", Craft(Entry(R"({"dtype":"F32","shape":[2],"data_offsets":[-8,0]})")),
       StatusCode::kDataLoss, "tensor 't': 'data_offsets' [-8,0] are not integers >= 0"},
      {"offsets_reversed", Craft(Entry(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})")),
       StatusCode::kDataLoss, "tensor 't': 'data_offsets' [8,0] end before they begin"},
      {"unknown_dtype", Craft(Entry(R"({"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]})")),
       StatusCode::kInvalidArgument, "tensor 't': unknown dtype 'F8_E4M3'"},
      {"mis_sized", Craft(Entry(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})")),
       StatusCode::kDataLoss, "tensor 't': 'data_offsets' [0,8] span 8 bytes but F32 [3] needs 12"},
      {"past_data", Craft(Entry(ok_entry), "1234567"), StatusCode::kDataLoss,
       "tensor 't' ends at data offset 8, past the 7-byte data section"},
      {"overlap",
       Craft(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
             R"("b":{"dtype":"U8","shape":[4],"data_offsets":[3,7]}})",
             "1234567"),
       StatusCode::kDataLoss, "tensors 'a' and 'b' overlap"},
      {"duplicate", Craft(R"({"t":)" + ok_entry + R"(,"t":)" + ok_entry + "}", "12345678"),
       StatusCode::kDataLoss, "header has key 't' twice"},
      {"metadata_type", Craft(R"({"__metadata__":[]})"), StatusCode::kDataLoss,
       "__metadata__ is not an object"},
      {"metadata_value", Craft(R"({"__metadata__":{"k":1}})"), StatusCode::kDataLoss,
       "__metadata__ 'k' is not a string"},
      // Once a SIGSEGV in fuji-rank: a header nested 300,000 deep.
      {"deep", Craft(R"({"__metadata__":)" + std::string(300000, '[') + std::string(300000, ']') + "}"),
       StatusCode::kDataLoss, "header nests arrays and objects deeper than 64 levels"},
  };
}

TEST(SafetensorsFileTest, RefusesMalformedFilesWithClearMessages) {
  for (const BadFile& bad : BadFiles()) {
    SCOPED_TRACE(bad.label);
    const std::string path = TestPath("_" + bad.label);
    ASSERT_TRUE(WriteFileAtomically(path, bad.bytes).ok());
    auto file = SafetensorsFile::Open(path);
    ASSERT_FALSE(file.ok());
    EXPECT_EQ(file.status().code(), bad.code) << file.status().ToString();
    EXPECT_EQ(file.status().message().rfind(path + ": " + bad.message, 0), 0u)
        << file.status().message();
  }
}

TEST(SafetensorsFileTest, MissingFileIsNotFound) {
  EXPECT_EQ(SafetensorsFile::Open(TestPath("_absent")).status().code(), StatusCode::kNotFound);
}

TEST(SafetensorsFileTest, EveryTruncationIsRefused) {
  const std::string path = TestPath("");
  {
    auto writer =
        SafetensorsWriter::Create(path, {{"a", DType::kF16, {3}}, {"b", DType::kU8, {5}}});
    ASSERT_TRUE(writer.ok());
    const std::vector<uint8_t> bytes = Iota(11);
    ASSERT_TRUE(writer->Write(bytes.data(), bytes.size()).ok());
    ASSERT_TRUE(writer->Finish().ok());
  }
  auto full = ReadFile(path);
  ASSERT_TRUE(full.ok());
  const std::string cut = TestPath("_cut");
  for (size_t n = 0; n < full->size(); ++n) {
    ASSERT_TRUE(WriteFileAtomically(cut, full->substr(0, n)).ok());
    auto file = SafetensorsFile::Open(cut);
    ASSERT_FALSE(file.ok()) << n;
    EXPECT_EQ(file.status().code(), StatusCode::kDataLoss) << file.status().ToString();
  }
}

}  // namespace
}  // namespace fuji::format
