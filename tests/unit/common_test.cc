// Tests of lib/common: Status, file utilities, JSON lines.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <thread>
#include <vector>
#include <nlohmann/json.hpp>

#include "lib/common/file_util.h"
#include "lib/common/json_bounds.h"
#include "lib/common/json_lines.h"
#include "lib/common/limits.h"
#include "lib/common/proc_stats.h"
#include "lib/common/status.h"

namespace fuji {
namespace {

std::string Scratch(const std::string& name) {
  return std::string(FUJI_BINARY_DIR) + "/common_test_" + std::to_string(::getpid()) + "_" + name;
}

Result<int> Half(int x) {
  if (x % 2 != 0) return InvalidArgument(std::to_string(x) + " is odd");
  return x / 2;
}

Status Quarter(int x, int* out) {
  FUJI_ASSIGN_OR_RETURN(int h, Half(x));
  FUJI_ASSIGN_OR_RETURN(*out, Half(h));
  return Status::Ok();
}

TEST(StatusTest, PropagatesErrorsAndContext) {
  int out = 0;
  EXPECT_TRUE(Quarter(8, &out).ok());
  EXPECT_EQ(out, 2);
  Status s = Quarter(6, &out);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "3 is odd");
  EXPECT_EQ(s.WithContext("quarter").ToString(), "INVALID_ARGUMENT: quarter: 3 is odd");
  EXPECT_EQ(StatusCodeFromName("NOT_FOUND"), StatusCode::kNotFound);
  EXPECT_EQ(StatusCodeFromName("nonsense"), StatusCode::kInternal);
}

TEST(FileUtilTest, AtomicWriteReadAndMap) {
  const std::string path = Scratch("file");
  ASSERT_TRUE(WriteFileAtomically(path, "hello").ok());
  auto text = ReadFile(path);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "hello");
  EXPECT_EQ(ReadFile(path, 3).status().code(), StatusCode::kResourceExhausted);
  auto map = MappedFile::Open(path);
  ASSERT_TRUE(map.ok());
  EXPECT_EQ(map->view(), "hello");
  EXPECT_EQ(MappedFile::Open(path + ".missing").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(ReadFile("/").status().code(), StatusCode::kInvalidArgument);
  ::unlink(path.c_str());
}

TEST(FileUtilTest, PathQuestionsAndMakeDirectories) {
  const std::string dir = Scratch("dirs");
  EXPECT_FALSE(IsDirectory(dir));
  // Every rank of a gang makes the same step directory at once: all succeed.
  std::vector<std::thread> makers;
  std::vector<Status> made(4);
  for (size_t i = 0; i < made.size(); ++i) makers.emplace_back([&, i] { made[i] = MakeDirectories(dir + "/a/b/c"); });
  for (std::thread& t : makers) t.join();
  for (const Status& s : made) EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(IsDirectory(dir + "/a/b/c"));
  EXPECT_FALSE(IsRegularFile(dir + "/a/b/c"));
  ASSERT_TRUE(WriteFileAtomically(dir + "/a/file", "x").ok());
  EXPECT_TRUE(IsRegularFile(dir + "/a/file"));
  EXPECT_FALSE(IsDirectory(dir + "/a/file"));
  const Status under_file = MakeDirectories(dir + "/a/file/d");
  EXPECT_EQ(under_file.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(under_file.message().find(dir + "/a/file/d: cannot create directory"), std::string::npos) << under_file.message();
  EXPECT_EQ(MakeDirectories(dir + "/a/file").code(), StatusCode::kInvalidArgument);  // a file already
  EXPECT_EQ(MakeDirectories("").code(), StatusCode::kInvalidArgument);

  char cwd[4096];
  ASSERT_NE(::getcwd(cwd, sizeof cwd), nullptr);
  EXPECT_EQ(AbsolutePath("x/./y/../z"), std::string(cwd) + "/x/z");
  EXPECT_EQ(AbsolutePath("/a//b/"), "/a/b/");
  EXPECT_EQ(AbsolutePath(""), "");
  EXPECT_EQ(std::system(("rm -rf '" + dir + "'").c_str()), 0);
}

TEST(FileUtilTest, MakeDirectoriesIsPrivateUnlessToldOtherwise) {
  const std::string dir = Scratch("modes");
  ASSERT_TRUE(MakeDirectories(dir + "/private").ok());
  ASSERT_TRUE(MakeDirectories(dir + "/shared", 0755).ok());
  struct stat st {};
  ASSERT_EQ(::stat((dir + "/private").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((dir + "/shared").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777 & ~0022u, 0755u & ~0022u);  // 0755 under a umask of at most 022
  EXPECT_EQ(std::system(("rm -rf '" + dir + "'").c_str()), 0);
}

TEST(FileUtilTest, PlantedLinksAreNeverWrittenThrough) {
  const std::string dir = Scratch("links");
  ASSERT_TRUE(MakeDirectories(dir).ok());
  const std::string target = dir + "/target";
  ASSERT_TRUE(WriteFileAtomically(target, "keep").ok());

  // CreateExclusiveFile refuses whatever is at its name: a link to a file, a dangling link.
  ASSERT_EQ(::symlink(target.c_str(), (dir + "/probe").c_str()), 0);
  EXPECT_EQ(CreateExclusiveFile(dir + "/probe").status().code(), StatusCode::kAlreadyExists);
  ASSERT_EQ(::symlink((dir + "/nothing").c_str(), (dir + "/dangling").c_str()), 0);
  EXPECT_FALSE(CreateExclusiveFile(dir + "/dangling").ok());
  EXPECT_FALSE(IsRegularFile(dir + "/nothing"));

  // WriteFileAtomically replaces a link at its path; the target stays as it was.
  ASSERT_EQ(::symlink(target.c_str(), (dir + "/out").c_str()), 0);
  ASSERT_TRUE(WriteFileAtomically(dir + "/out", "new", 0600).ok());
  EXPECT_EQ(*ReadFile(target), "keep");
  struct stat st {};
  ASSERT_EQ(::lstat((dir + "/out").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(*ReadFile(dir + "/out"), "new");

  // Names no one can guess.
  EXPECT_EQ(RandomHex64().size(), 16u);
  EXPECT_NE(RandomHex64(), RandomHex64());
  EXPECT_EQ(std::system(("rm -rf '" + dir + "'").c_str()), 0);
}

TEST(JsonLinesTest, RoundTripsAndTimesOut) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  JsonLineWriter writer(fds[1]);
  LineReader reader(fds[0], 64);
  auto none = reader.ReadLine(10);
  EXPECT_EQ(none.status().code(), StatusCode::kUnavailable);
  ASSERT_TRUE(writer.Write({{"event", "x"}, {"n", 1}}).ok());
  auto line = reader.ReadLine(1000);
  ASSERT_TRUE(line.ok() && line->has_value());
  auto j = ParseJsonObject(**line);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ((*j)["n"], 1);
  EXPECT_FALSE(ParseJsonObject("[1]").ok());
  EXPECT_FALSE(ParseJsonObject("{").ok());
  // A line over the limit is refused rather than buffered without end.
  const std::string big(100, 'a');
  ASSERT_EQ(::write(fds[1], big.data(), big.size()), static_cast<ssize_t>(big.size()));
  EXPECT_EQ(reader.ReadLine(1000).status().code(), StatusCode::kResourceExhausted);
  ::close(fds[1]);
  ::close(fds[0]);
}

TEST(JsonLinesTest, ACutReaderReturnsLongLinesCutAndReadsOn) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  LineReader reader(fds[0], 64, LineReader::Overlong::kCut);
  std::thread writer([fd = fds[1]] {
    // 1 MiB with no newline (more than a pipe holds: the writer blocks unless it is read), then
    // lines that must come through whole.
    const std::string big(1 << 20, 'x');
    for (size_t done = 0; done < big.size();) {
      const ssize_t n = ::write(fd, big.data() + done, big.size() - done);
      if (n <= 0) return;
      done += static_cast<size_t>(n);
    }
    const std::string rest = "y\nshort\n";
    if (::write(fd, rest.data(), rest.size()) < 0) return;
    ::close(fd);
  });
  auto cut = reader.ReadLine(5000);
  ASSERT_TRUE(cut.ok() && cut->has_value()) << cut.status().ToString();
  EXPECT_EQ((*cut)->size(), 64u);
  EXPECT_NE((*cut)->find("[cut: line longer than"), std::string::npos) << **cut;
  auto next = reader.ReadLine(5000);
  ASSERT_TRUE(next.ok() && next->has_value()) << next.status().ToString();
  EXPECT_EQ(**next, "short");
  writer.join();
  EXPECT_FALSE(reader.ReadLine(5000)->has_value());
  ::close(fds[0]);
}

// A line over the limit that arrives whole, newline and all, in one read is cut (or refused) as
// one that arrives in pieces.
TEST(JsonLinesTest, ALongLineReadWithItsNewlineIsCutOrRefused) {
  for (const auto overlong : {LineReader::Overlong::kCut, LineReader::Overlong::kFail}) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const std::string input = std::string(100, 'a') + "\nshort\n";
    ASSERT_EQ(::write(fds[1], input.data(), input.size()), static_cast<ssize_t>(input.size()));
    ::close(fds[1]);
    LineReader reader(fds[0], 64, overlong);
    auto first = reader.ReadLine(1000);
    if (overlong == LineReader::Overlong::kFail) {
      EXPECT_EQ(first.status().code(), StatusCode::kResourceExhausted);
    } else {
      ASSERT_TRUE(first.ok() && first->has_value()) << first.status().ToString();
      EXPECT_EQ((*first)->size(), 64u);
      EXPECT_NE((*first)->find("[cut: line longer than"), std::string::npos) << **first;
      auto next = reader.ReadLine(1000);
      ASSERT_TRUE(next.ok() && next->has_value());
      EXPECT_EQ(**next, "short");
    }
    ::close(fds[0]);
  }
}

// Fields of a JSON object another process wrote: the value when its type is the one asked for and
// it fits, else the fallback; never an exception.
TEST(JsonLinesTest, FieldReadsNeverThrowNorOverflow) {
  const auto e = nlohmann::json::parse(
      R"({"i":7,"big":18446744073709551615,"f":1e300,"s":"x","n":null,"o":{"a":1}})");
  EXPECT_EQ(IntField(e, "i"), 7);
  EXPECT_EQ(IntField(e, "big", -1), -1);
  EXPECT_EQ(IntField(e, "f", -1), -1);
  EXPECT_EQ(IntField(e, "s", -1), -1);
  EXPECT_EQ(IntField(nlohmann::json(3), "i", -1), -1);
  EXPECT_EQ(NumberField(e, "f"), 1e300);
  EXPECT_EQ(NumberField(e, "i"), 7.0);
  EXPECT_EQ(NumberField(e, "s", 2.5), 2.5);
  EXPECT_EQ(StringField(e, "s"), "x");
  EXPECT_EQ(StringField(e, "i", "none"), "none");
  EXPECT_EQ(StringField(nlohmann::json::array(), "s", "none"), "none");
  EXPECT_EQ(JsonField(e, "o", nullptr), nlohmann::json({{"a", 1}}));
  EXPECT_EQ(JsonField(e, "missing", 5), 5);
}

TEST(LimitsTest, CutLineKeepsShortLinesAndCutsAtACharacter) {
  EXPECT_EQ(limits::CutLine("short", 64), "short");
  const std::string fuji = "富士山";  // 3 bytes a character
  std::string line;
  for (int i = 0; i < 40; ++i) line += fuji;
  const std::string cut = limits::CutLine(line, 64);
  EXPECT_LE(cut.size(), 64u);
  const std::string marker = limits::kCutMarker;
  ASSERT_GE(cut.size(), marker.size());
  EXPECT_EQ(cut.substr(cut.size() - marker.size()), marker);
  EXPECT_EQ((cut.size() - marker.size()) % 3, 0u) << "a character cut in half";
  EXPECT_EQ(limits::CutLine(std::string(limits::kMaxLogLineBytes + 1, 'a')).size(), limits::kMaxLogLineBytes);
}

TEST(JsonLinesTest, FinalUnterminatedLineThenEof) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  ASSERT_EQ(::write(fds[1], "a\nb", 3), 3);
  ::close(fds[1]);
  LineReader reader(fds[0]);
  EXPECT_EQ(**reader.ReadLine(), "a");
  EXPECT_EQ(**reader.ReadLine(), "b");
  EXPECT_FALSE(reader.ReadLine()->has_value());
  ::close(fds[0]);
}

TEST(ProcStatsTest, ReadsThisProcess) {
  EXPECT_GE(UsableCores(), 1);
  EXPECT_GT(PeakRssBytes(), 0);
  EXPECT_GT(RssBytes(::getpid()), 0);
  const HostMemory m = ReadHostMemory();
  EXPECT_GT(m.total_bytes, 0);
  EXPECT_LE(m.available_bytes, m.total_bytes);
}

// Nesting `depth` arrays around a number.
std::string Nested(int depth) { return std::string(depth, '[') + "1" + std::string(depth, ']'); }

TEST(JsonBoundsTest, SixtyFourLevelsPassAndSixtyFiveAreRefused) {
  EXPECT_TRUE(CheckJsonDepth(Nested(64), "x").ok());
  const Status deep = CheckJsonDepth(Nested(65), "spec_json");
  EXPECT_EQ(deep.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(deep.message(), "spec_json nests arrays and objects deeper than 64 levels");
  // Objects count as arrays do, and a level closed makes room for another.
  std::string mixed;
  for (int i = 0; i < 32; ++i) mixed += "{\"a\":[";
  mixed += "1";
  for (int i = 0; i < 32; ++i) mixed += "]}";
  EXPECT_TRUE(CheckJsonDepth(mixed + "," + mixed, "x").ok());
  EXPECT_FALSE(CheckJsonDepth("{\"b\":" + mixed + "}", "x").ok());
  EXPECT_TRUE(CheckJsonDepth(Nested(3), "x", 3).ok());
  EXPECT_FALSE(CheckJsonDepth(Nested(4), "x", 3).ok());
}

TEST(JsonBoundsTest, BracketsInsideStringsDoNotCount) {
  const std::string brackets(1000, '[');
  EXPECT_TRUE(CheckJsonDepth("{\"prompt\": \"" + brackets + "\"}", "x").ok());
  // An escaped quote does not end the string; an escaped backslash before a quote does.
  EXPECT_TRUE(CheckJsonDepth("[\"\\\"" + brackets + "\"]", "x").ok());
  EXPECT_FALSE(CheckJsonDepth("[\"\\\\\"" + brackets + "]", "x").ok());
}

TEST(JsonBoundsTest, AHugeDepthIsRefusedWithoutParsingOrEchoing) {
  const std::string deep = Nested(400000);
  const Status s = CheckJsonDepth(deep, "spec_json");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_LT(s.message().size(), 100u);
  EXPECT_TRUE(ParseJsonBounded(deep).is_discarded());
  EXPECT_TRUE(ParseJsonBounded("{\"a\": [1, {\"b\": 2}]}")["a"][1]["b"] == 2);
  EXPECT_TRUE(ParseJsonBounded("{not json").is_discarded());
  // A JSON line from another process is held to the same bound.
  Result<nlohmann::json> line = ParseJsonObject("{\"e\": " + Nested(100) + "}");
  EXPECT_EQ(line.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(ParseJsonObject("{\"e\": " + Nested(10) + "}").ok());
}

}  // namespace
}  // namespace fuji
