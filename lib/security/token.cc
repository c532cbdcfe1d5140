#include "lib/security/token.h"

#include <cstdlib>
#include <memory>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>


namespace fuji::security {
namespace {

constexpr std::string_view kPrefix = "fuji_";
constexpr size_t kSecretHexDigits = 64;
constexpr size_t kMaxTokenChars = 128;
constexpr int64_t kMaxId = int64_t{1} << 62;  // exclusive

std::string Hex(const unsigned char* bytes, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(kDigits[bytes[i] >> 4]);
    out.push_back(kDigits[bytes[i] & 0xf]);
  }
  return out;
}

std::string RandomHex(size_t n_bytes) {
  unsigned char bytes[64];
  if (n_bytes > sizeof(bytes) || RAND_bytes(bytes, static_cast<int>(n_bytes)) != 1) {
    // A credential must never be predictable; there is no sensible way to go on without one.
    std::abort();
  }
  std::string hex = Hex(bytes, n_bytes);
  OPENSSL_cleanse(bytes, sizeof(bytes));
  return hex;
}

bool IsLowerHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

}  // namespace

std::string NewSecret() { return RandomHex(32); }

std::string NewSalt() { return RandomHex(16); }

std::string FormatToken(const Token& t) {
  std::string out(kPrefix);
  out.push_back(static_cast<char>(t.kind));
  out.push_back('_');
  out += std::to_string(t.id);
  out.push_back('_');
  out += t.secret;
  return out;
}

Result<Token> ParseToken(std::string_view text) {
  const Status malformed = Unauthenticated("malformed token");
  if (text.size() > kMaxTokenChars || text.substr(0, kPrefix.size()) != kPrefix) return malformed;
  text.remove_prefix(kPrefix.size());
  // "<kind>_<id>_<secret>"
  if (text.size() < 2 || text[1] != '_') return malformed;
  Token token{};
  switch (text[0]) {
    case static_cast<char>(TokenKind::kUser): token.kind = TokenKind::kUser; break;
    case static_cast<char>(TokenKind::kAgent): token.kind = TokenKind::kAgent; break;
    case static_cast<char>(TokenKind::kJoin): token.kind = TokenKind::kJoin; break;
    default: return malformed;
  }
  text.remove_prefix(2);
  const size_t sep = text.find('_');
  if (sep == std::string_view::npos || sep == 0) return malformed;
  const std::string_view id_text = text.substr(0, sep);
  if (id_text[0] == '0') return malformed;  // no leading zeros: one spelling per id
  int64_t id = 0;
  for (char c : id_text) {
    if (c < '0' || c > '9') return malformed;
    id = id * 10 + (c - '0');
    if (id >= kMaxId) return malformed;
  }
  const std::string_view secret = text.substr(sep + 1);
  if (secret.size() != kSecretHexDigits) return malformed;
  for (char c : secret) {
    if (!IsLowerHex(c)) return malformed;
  }
  token.id = id;
  token.secret = std::string(secret);
  return token;
}

std::string HashSecret(std::string_view salt, std::string_view secret) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), salt.data(), salt.size()) != 1 ||
      EVP_DigestUpdate(ctx.get(), secret.data(), secret.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), digest, &digest_len) != 1) {
    // SHA-256 fails only when the library itself is broken; no credential can be checked then.
    std::abort();
  }
  return Hex(digest, digest_len);
}

bool HashMatches(std::string_view expected_hex, std::string_view salt, std::string_view secret) {
  const std::string actual = HashSecret(salt, secret);
  if (expected_hex.size() != actual.size()) return false;
  return CRYPTO_memcmp(expected_hex.data(), actual.data(), actual.size()) == 0;
}

}  // namespace fuji::security
