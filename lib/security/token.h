// Credentials as text: "fuji_<kind>_<id>_<secret>" tokens for users, agents and join requests,
// their random secrets and salts, and the salted hashes that fujid stores in their place.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "lib/common/status.h"

namespace fuji::security {

// Who a token speaks for; the character is the token's second field.
enum class TokenKind : char { kUser = 'u', kAgent = 'a', kJoin = 'j' };

struct Token {
  TokenKind kind;
  int64_t id;          // the row of the user, agent or join token, positive
  std::string secret;  // 64 lowercase hex digits
};

// 32 random bytes (RAND_bytes) as 64 lowercase hex digits. Aborts when OpenSSL has no randomness.
std::string NewSecret();
// 16 random bytes as 32 lowercase hex digits.
std::string NewSalt();

// "fuji_<kind char>_<id>_<secret>", e.g. "fuji_u_12_3f…".
std::string FormatToken(const Token& t);

// The inverse of FormatToken, strict: anything else (another prefix or kind, an id that is not a
// positive decimal below 2^62, a secret that is not 64 hex digits, text longer than 128
// characters) is UNAUTHENTICATED "malformed token". The message never repeats the text.
Result<Token> ParseToken(std::string_view text);

// Lowercase hex of SHA-256(salt || secret).
std::string HashSecret(std::string_view salt, std::string_view secret);
// Whether HashSecret(salt, secret) is expected_hex, compared in constant time; false when the
// lengths differ.
bool HashMatches(std::string_view expected_hex, std::string_view salt, std::string_view secret);

}  // namespace fuji::security
