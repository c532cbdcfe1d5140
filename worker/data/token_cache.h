// The token cache: a data set tokenized once into a memory-mapped binary file keyed by content.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "lib/common/file_util.h"
#include "lib/common/status.h"
#include "worker/data/documents.h"
#include "lib/text/bpe_tokenizer.h"

namespace fuji::data {

// On-disk layout (little-endian), 64-byte header then the tokens:
//   0 "FUJITOK1"  8 u32 version (1)  12 u32 bytes per token (2 when vocab_size <= 65536, else 4)
//  16 u32 vocab_size  20 u32 zero  24 u64 documents  32 u64 tokens  40 u64 content key
//  48 u64 hash of the token bytes  56 u64 hash of header bytes [0, 56)
// Every document's tokens are followed by kEndOfText (50256). The file is named
// "<key as 16 hex digits>.tok" inside the cache directory and written atomically (a temp file of
// an unpredictable name, then a rename that replaces whatever was planted at the name), mode 0600;
// the directory is made 0700. The key is the content (DataSetKey), never a path or a time: only
// the same bytes tokenized the same way find a cache.
struct TokenCacheHeader {
  static constexpr char kMagic[9] = "FUJITOK1";
  // Part of every cache key: 2 since the pretokenizer classifies U+0085 and U+FEFF as tiktoken
  // does, so caches of text holding them are tokenized again.
  static constexpr uint32_t kVersion = 2;
  static constexpr size_t kSize = 64;
  uint32_t bytes_per_token = 2;
  uint32_t vocab_size = 0;
  uint64_t num_documents = 0;
  uint64_t num_tokens = 0;
  uint64_t key = 0;
  uint64_t payload_hash = 0;
};

struct TokenCacheOptions {
  DataLimits limits;
  int num_threads = 0;  // tokenizer threads; 0: hardware concurrency, at most 16
};

// Hash of the tokenizer files in dir (vocab.json + merges.txt, else encoder.json + vocab.bpe, the
// same choice as BpeTokenizer::LoadFromDir). NOT_FOUND when neither pair exists.
Result<uint64_t> TokenizerFingerprint(const std::string& tokenizer_dir);

// The cache key of a data set: every file's relative path, size and content hash, in order, and
// the tokenizer fingerprint. Reads every file once (bounded by limits).
Result<uint64_t> DataSetKey(const std::vector<DataFile>& files, uint64_t tokenizer_fingerprint,
                            const DataLimits& limits);

// A tokenized data set. Immutable after Open: all const methods are safe from many threads.
// Move-only (owns a memory map).
class TokenCache {
 public:
  // Lists and fingerprints data_path; reuses "<cache_dir>/<key>.tok" when it is present and valid,
  // otherwise tokenizes every document (in parallel, in batches of ~64 MiB of text), writes the
  // cache file and maps it. A cache file that fails any check (size, magic, version, header hash,
  // key, vocabulary, payload hash) is rebuilt, never trusted. cache_dir is created when missing.
  // Call it once before ranks start (e.g. in the launcher, which also refuses bad data there);
  // ranks then find the file and only map it. Concurrent Opens from different processes are safe
  // (each writes its own temp file and renames); from threads of one process they are not.
  // `tokenizer` must be the one loaded from tokenizer_dir. Errors: those of ListDataFiles and
  // ParseDataFile (invalid UTF-8, bad JSON line), I/O errors naming the path.
  static Result<TokenCache> Open(const std::string& data_path, const std::string& tokenizer_dir,
                                 const text::BpeTokenizer& tokenizer, const std::string& cache_dir,
                                 const TokenCacheOptions& options = TokenCacheOptions());

  // Validates and maps an existing cache file. DATA_LOSS with the reason when it is not valid;
  // expected_key 0 accepts any key.
  static Result<TokenCache> Load(const std::string& cache_file, uint64_t expected_key = 0);

  TokenCache(TokenCache&&) noexcept = default;
  TokenCache& operator=(TokenCache&&) noexcept = default;

  uint64_t num_tokens() const { return header_.num_tokens; }
  uint64_t num_documents() const { return header_.num_documents; }
  uint64_t key() const { return header_.key; }
  uint32_t vocab_size() const { return header_.vocab_size; }
  const std::string& path() const { return file_.path(); }
  // True when this Open tokenized (cache miss or invalid cache); false when it reused the file.
  bool tokenized() const { return tokenized_; }
  // Why the cache was rebuilt ("missing", or the DATA_LOSS message of the invalid file); "" when
  // it was reused.
  const std::string& rebuild_reason() const { return rebuild_reason_; }

  // Token i (i < num_tokens()).
  int32_t Token(uint64_t i) const {
    const uint8_t* p = file_.data() + TokenCacheHeader::kSize;
    return header_.bytes_per_token == 2 ? reinterpret_cast<const uint16_t*>(p)[i]
                                        : reinterpret_cast<const int32_t*>(p)[i];
  }
  // Copies tokens [begin, begin + count) into out; begin + count <= num_tokens().
  void CopyTokens(uint64_t begin, size_t count, int32_t* out) const;
  void CopyTokens(uint64_t begin, size_t count, int64_t* out) const;

 private:
  TokenCache() = default;
  MappedFile file_;
  TokenCacheHeader header_;
  bool tokenized_ = false;
  std::string rebuild_reason_;
};

}  // namespace fuji::data
