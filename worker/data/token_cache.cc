// Implements token_cache.h: fingerprinting a data set, tokenizing it once, validating cache files.
#include "worker/data/token_cache.h"

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>
#include <utility>
#include <vector>

#include "worker/data/hash.h"
#include "lib/text/vocab_files.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the token cache format is little-endian");

namespace fuji::data {
namespace {

namespace fs = std::filesystem;

constexpr size_t kFlushBytes = size_t{64} << 20;  // tokenize pending documents in ~64 MiB batches

template <typename T>
void Put(std::string* out, size_t offset, T value) {
  std::memcpy(out->data() + offset, &value, sizeof(T));
}
template <typename T>
T Get(const uint8_t* data, size_t offset) {
  T value;
  std::memcpy(&value, data + offset, sizeof(T));
  return value;
}

std::string Hex(uint64_t key) {
  char buffer[17];
  std::snprintf(buffer, sizeof(buffer), "%016" PRIx64, key);
  return buffer;
}

uint64_t HeaderHash(const uint8_t* header) {
  return HashBytes(std::string_view(reinterpret_cast<const char*>(header), 56), 0x68647268);
}

// Accumulates tokens in the cache-file layout, header first.
class CacheBuilder {
 public:
  CacheBuilder(const text::BpeTokenizer& tokenizer, int num_threads)
      : tokenizer_(tokenizer), num_threads_(num_threads) {
    header_.vocab_size = static_cast<uint32_t>(tokenizer.vocab_size());
    header_.bytes_per_token = header_.vocab_size <= 65536 ? 2 : 4;
    bytes_.assign(TokenCacheHeader::kSize, '\0');
  }

  Status Add(Document document) {
    pending_bytes_ += document.text.size();
    pending_.push_back(std::move(document));
    return pending_bytes_ >= kFlushBytes ? Flush() : Status::Ok();
  }

  // Tokenizes the pending documents in parallel and appends them in order, each followed by EOS.
  Status Flush() {
    const size_t n = pending_.size();
    std::vector<Result<std::vector<int32_t>>> results(
        n, Result<std::vector<int32_t>>(std::vector<int32_t>()));
    std::atomic<size_t> next{0};
    auto work = [&] {
      for (size_t i = next++; i < n; i = next++) results[i] = tokenizer_.Encode(pending_[i].text);
    };
    const size_t threads = std::min<size_t>(static_cast<size_t>(num_threads_), n);
    std::vector<std::thread> pool;
    for (size_t t = 1; t < threads; ++t) pool.emplace_back(work);
    work();
    for (std::thread& t : pool) t.join();
    for (size_t i = 0; i < n; ++i) {
      if (!results[i].ok()) return results[i].status().WithContext(pending_[i].source);
      for (int32_t id : results[i].value()) Append(id);
      Append(text::BpeTokenizer::kEndOfText);
      ++header_.num_documents;
    }
    pending_.clear();
    pending_bytes_ = 0;
    return Status::Ok();
  }

  // The finished file contents.
  std::string Finish(uint64_t key) {
    header_.key = key;
    header_.payload_hash = HashBytes(std::string_view(bytes_).substr(TokenCacheHeader::kSize));
    std::memcpy(bytes_.data(), TokenCacheHeader::kMagic, 8);
    Put<uint32_t>(&bytes_, 8, TokenCacheHeader::kVersion);
    Put<uint32_t>(&bytes_, 12, header_.bytes_per_token);
    Put<uint32_t>(&bytes_, 16, header_.vocab_size);
    Put<uint32_t>(&bytes_, 20, 0);
    Put<uint64_t>(&bytes_, 24, header_.num_documents);
    Put<uint64_t>(&bytes_, 32, header_.num_tokens);
    Put<uint64_t>(&bytes_, 40, header_.key);
    Put<uint64_t>(&bytes_, 48, header_.payload_hash);
    Put<uint64_t>(&bytes_, 56, HeaderHash(reinterpret_cast<const uint8_t*>(bytes_.data())));
    return std::move(bytes_);
  }

 private:
  void Append(int32_t id) {
    if (header_.bytes_per_token == 2) {
      const uint16_t v = static_cast<uint16_t>(id);
      bytes_.append(reinterpret_cast<const char*>(&v), 2);
    } else {
      bytes_.append(reinterpret_cast<const char*>(&id), 4);
    }
    ++header_.num_tokens;
  }

  const text::BpeTokenizer& tokenizer_;
  int num_threads_;
  TokenCacheHeader header_;
  std::string bytes_;
  std::vector<Document> pending_;
  size_t pending_bytes_ = 0;
};

}  // namespace

Result<uint64_t> TokenizerFingerprint(const std::string& tokenizer_dir) {
  FUJI_ASSIGN_OR_RETURN(const text::TokenizerFiles files, text::FindTokenizerFiles(tokenizer_dir));
  Hasher hasher(0x746f6b);
  for (const std::string& path : {files.vocab, files.merges}) {
    FUJI_ASSIGN_OR_RETURN(std::string contents, ReadFile(path));
    hasher.Update(contents);
  }
  return hasher.Digest();
}

Result<uint64_t> DataSetKey(const std::vector<DataFile>& files, uint64_t tokenizer_fingerprint,
                            const DataLimits& limits) {
  Hasher hasher(TokenCacheHeader::kVersion);
  hasher.UpdateU64(tokenizer_fingerprint);
  hasher.UpdateU64(files.size());
  for (const DataFile& file : files) {
    FUJI_ASSIGN_OR_RETURN(std::string contents, ReadFile(file.path, limits.max_file_bytes));
    hasher.Update(file.relative_path);
    hasher.UpdateU64(static_cast<uint64_t>(file.kind));
    hasher.UpdateU64(contents.size());
    hasher.UpdateU64(HashBytes(contents));
  }
  const uint64_t key = hasher.Digest();
  return key == 0 ? 1 : key;  // 0 means "any key" to Load
}

Result<TokenCache> TokenCache::Load(const std::string& cache_file, uint64_t expected_key) {
  FUJI_ASSIGN_OR_RETURN(MappedFile file, MappedFile::Open(cache_file));
  const uint8_t* d = file.data();
  const auto bad = [&](const std::string& why) { return DataLoss(cache_file + ": " + why); };
  if (file.size() < TokenCacheHeader::kSize) return bad("truncated header");
  if (std::memcmp(d, TokenCacheHeader::kMagic, 8) != 0) return bad("not a token cache (magic)");
  if (Get<uint32_t>(d, 8) != TokenCacheHeader::kVersion) return bad("unsupported version");
  if (Get<uint64_t>(d, 56) != HeaderHash(d)) return bad("header checksum mismatch");
  TokenCacheHeader header;
  header.bytes_per_token = Get<uint32_t>(d, 12);
  header.vocab_size = Get<uint32_t>(d, 16);
  header.num_documents = Get<uint64_t>(d, 24);
  header.num_tokens = Get<uint64_t>(d, 32);
  header.key = Get<uint64_t>(d, 40);
  header.payload_hash = Get<uint64_t>(d, 48);
  if (header.bytes_per_token != 2 && header.bytes_per_token != 4) return bad("bad token width");
  if (header.num_tokens > (file.size() - TokenCacheHeader::kSize) / header.bytes_per_token ||
      file.size() != TokenCacheHeader::kSize + header.num_tokens * header.bytes_per_token) {
    return bad("size " + std::to_string(file.size()) + " does not match " +
               std::to_string(header.num_tokens) + " tokens (truncated?)");
  }
  if (expected_key != 0 && header.key != expected_key) return bad("content key mismatch");
  if (HashBytes(file.view().substr(TokenCacheHeader::kSize)) != header.payload_hash) {
    return bad("token checksum mismatch");
  }
  TokenCache cache;
  cache.file_ = std::move(file);
  cache.header_ = header;
  return cache;
}

Result<TokenCache> TokenCache::Open(const std::string& data_path, const std::string& tokenizer_dir,
                                    const text::BpeTokenizer& tokenizer,
                                    const std::string& cache_dir,
                                    const TokenCacheOptions& options) {
  FUJI_ASSIGN_OR_RETURN(std::vector<DataFile> files, ListDataFiles(data_path, options.limits));
  FUJI_ASSIGN_OR_RETURN(uint64_t fingerprint, TokenizerFingerprint(tokenizer_dir));
  FUJI_ASSIGN_OR_RETURN(uint64_t key, DataSetKey(files, fingerprint, options.limits));
  const std::string cache_file = (fs::path(cache_dir) / (Hex(key) + ".tok")).string();

  std::string reason = "missing";
  std::error_code error;
  if (fs::exists(cache_file, error)) {
    Result<TokenCache> cached = Load(cache_file, key);
    if (cached.ok() && cached->vocab_size() == static_cast<uint32_t>(tokenizer.vocab_size())) {
      return std::move(cached).value();
    }
    reason = cached.ok() ? cache_file + ": vocabulary size mismatch" : cached.status().message();
  }

  int threads = options.num_threads;
  if (threads <= 0) {
    threads = std::clamp(static_cast<int>(std::thread::hardware_concurrency()), 1, 16);
  }
  CacheBuilder builder(tokenizer, threads);
  for (const DataFile& file : files) {
    FUJI_ASSIGN_OR_RETURN(std::string contents, ReadFile(file.path, options.limits.max_file_bytes));
    FUJI_ASSIGN_OR_RETURN(std::vector<Document> documents, ParseDataFile(file, contents));
    for (Document& document : documents) FUJI_RETURN_IF_ERROR(builder.Add(std::move(document)));
  }
  FUJI_RETURN_IF_ERROR(builder.Flush());
  if (Status made = MakeDirectories(cache_dir); !made.ok()) {
    return Unavailable(cache_dir + ": cannot create cache directory: " + made.message());
  }
  FUJI_RETURN_IF_ERROR(WriteFileAtomically(cache_file, builder.Finish(key), 0600));
  FUJI_ASSIGN_OR_RETURN(TokenCache cache, Load(cache_file, key));
  cache.tokenized_ = true;
  cache.rebuild_reason_ = reason;
  return cache;
}

void TokenCache::CopyTokens(uint64_t begin, size_t count, int32_t* out) const {
  for (size_t i = 0; i < count; ++i) out[i] = Token(begin + i);
}

void TokenCache::CopyTokens(uint64_t begin, size_t count, int64_t* out) const {
  for (size_t i = 0; i < count; ++i) out[i] = Token(begin + i);
}

}  // namespace fuji::data
