// lib/security: tokens (format, strict parsing, salted hashes) and the automatic PKI (file modes,
// CA reuse, what the server certificate says, refusals, planted links), down to a real TLS
// handshake through gRPC against the issued certificate.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "fuji/v1/jobs.grpc.pb.h"
#include "lib/common/file_util.h"
#include "lib/security/pki.h"
#include "lib/security/token.h"

namespace fuji::security {
namespace {

// ---------------------------------------------------------------- tokens

bool IsLowerHex(const std::string& s) {
  return s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

TEST(TokenTest, NewSecretAndSaltAreFreshHex) {
  const std::string a = NewSecret(), b = NewSecret();
  EXPECT_EQ(a.size(), 64u);
  EXPECT_TRUE(IsLowerHex(a));
  EXPECT_NE(a, b);
  const std::string s1 = NewSalt(), s2 = NewSalt();
  EXPECT_EQ(s1.size(), 32u);
  EXPECT_TRUE(IsLowerHex(s1));
  EXPECT_NE(s1, s2);
}

TEST(TokenTest, FormatAndParseRoundTrip) {
  const std::string secret = NewSecret();
  EXPECT_EQ(FormatToken({TokenKind::kUser, 12, secret}), "fuji_u_12_" + secret);
  for (TokenKind kind : {TokenKind::kUser, TokenKind::kAgent, TokenKind::kJoin}) {
    for (int64_t id : {int64_t{1}, int64_t{12}, int64_t{987654321}, (int64_t{1} << 62) - 1}) {
      const std::string text = FormatToken({kind, id, secret});
      Result<Token> parsed = ParseToken(text);
      ASSERT_TRUE(parsed.ok()) << text << ": " << parsed.status().ToString();
      EXPECT_EQ(parsed->kind, kind);
      EXPECT_EQ(parsed->id, id);
      EXPECT_EQ(parsed->secret, secret);
      EXPECT_EQ(FormatToken(*parsed), text);
    }
  }
  EXPECT_EQ(FormatToken({TokenKind::kAgent, 3, secret}).substr(0, 9), "fuji_a_3_");
  EXPECT_EQ(FormatToken({TokenKind::kJoin, 3, secret}).substr(0, 9), "fuji_j_3_");
}

TEST(TokenTest, RejectsEveryMalformedForm) {
  const std::string s = NewSecret();
  std::string upper = s;
  upper[0] = 'A';
  std::string non_hex = s;
  non_hex[10] = 'g';
  const std::vector<std::string> bad = {
      "",
      "fuji",
      "fuji_",
      "fuji_u",
      "fuji_u_",
      "fuji_u_12",
      "fuji_u_12_",
      "fuji_u__" + s,
      "fuji_x_12_" + s,
      "fuji_U_12_" + s,
      "fuji_uu_12_" + s,
      "fuji_u12_" + s,
      "Fuji_u_12_" + s,
      "fuj_u_12_" + s,
      "xfuji_u_12_" + s,
      " fuji_u_12_" + s,
      "fuji_u_12_" + s + " ",
      "fuji_u_12_" + s + "_",
      "fuji_u_12_" + s + "0",
      "fuji_u_12_" + s.substr(1),
      "fuji_u_12_" + upper,
      "fuji_u_12_" + non_hex,
      "fuji_u_12-" + s,
      "fuji_u_0_" + s,
      "fuji_u_012_" + s,
      "fuji_u_-1_" + s,
      "fuji_u_+1_" + s,
      "fuji_u_1a_" + s,
      "fuji_u_ 1_" + s,
      "fuji_u_4611686018427387904_" + s,  // 2^62
      "fuji_u_9223372036854775807_" + s,
      "fuji_u_99999999999999999999999_" + s,
      "fuji_u_12_" + s + std::string(200, 'a'),
      std::string("fuji_u_12_") + s.substr(0, 32) + std::string(1, '\0') + s.substr(33),
      std::string(129, 'a'),
  };
  for (const std::string& text : bad) {
    Result<Token> parsed = ParseToken(text);
    ASSERT_FALSE(parsed.ok()) << "accepted: " << text;
    EXPECT_EQ(parsed.status().code(), StatusCode::kUnauthenticated) << text;
    EXPECT_EQ(parsed.status().message(), "malformed token") << text;
  }
}

TEST(TokenTest, HashSecretIsSha256OfSaltThenSecret) {
  // SHA-256("abc")
  EXPECT_EQ(HashSecret("a", "bc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(HashSecret("", "abc"), HashSecret("ab", "c"));
}

TEST(TokenTest, HashMatches) {
  const std::string salt = NewSalt(), secret = NewSecret();
  const std::string hash = HashSecret(salt, secret);
  EXPECT_EQ(hash.size(), 64u);
  EXPECT_TRUE(IsLowerHex(hash));
  EXPECT_TRUE(HashMatches(hash, salt, secret));
  EXPECT_FALSE(HashMatches(hash, salt, NewSecret()));
  EXPECT_FALSE(HashMatches(hash, NewSalt(), secret));
  EXPECT_FALSE(HashMatches(hash.substr(0, 63), salt, secret));
  EXPECT_FALSE(HashMatches(hash + "0", salt, secret));
  EXPECT_FALSE(HashMatches("", salt, secret));
  std::string flipped = hash;
  flipped[63] = flipped[63] == '0' ? '1' : '0';
  EXPECT_FALSE(HashMatches(flipped, salt, secret));
}

// ---------------------------------------------------------------- PKI helpers

struct OpenSslFree {
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509_STORE* p) const { X509_STORE_free(p); }
  void operator()(X509_STORE_CTX* p) const { X509_STORE_CTX_free(p); }
};
template <typename T>
using Owned = std::unique_ptr<T, OpenSslFree>;

// A fresh 0700 directory, removed with everything in it at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = ::testing::TempDir() + "/fuji_security_XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string Read(const std::string& path) {
  Result<std::string> text = ReadFile(path);
  EXPECT_TRUE(text.ok()) << text.status().ToString();
  return text.ok() ? *text : std::string();
}

void Write(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

unsigned ModeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

Owned<X509> LoadCert(const std::string& path) {
  const std::string pem = Read(path);
  Owned<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  return Owned<X509>(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

Owned<EVP_PKEY> LoadKey(const std::string& path) {
  const std::string pem = Read(path);
  Owned<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  return Owned<EVP_PKEY>(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
}

// Whether `cert` chains to `ca` for a TLS server.
bool Verifies(X509* cert, X509* ca) {
  Owned<X509_STORE> store(X509_STORE_new());
  Owned<X509_STORE_CTX> ctx(X509_STORE_CTX_new());
  if (!store || !ctx || X509_STORE_add_cert(store.get(), ca) != 1 ||
      X509_STORE_CTX_init(ctx.get(), store.get(), cert, nullptr) != 1 ||
      X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_SERVER) != 1) {
    return false;
  }
  return X509_verify_cert(ctx.get()) == 1;
}

std::string CommonName(X509* cert) {
  char buf[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof buf);
  return buf;
}

std::string SerialHex(X509* cert) {
  BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr);
  char* hex = BN_bn2hex(bn);
  std::string out = hex;
  OPENSSL_free(hex);
  BN_free(bn);
  return out;
}

// Seconds from a certificate's notBefore to its notAfter.
long ValiditySeconds(X509* cert) {
  int days = 0, seconds = 0;
  ASN1_TIME_diff(&days, &seconds, X509_get0_notBefore(cert), X509_get0_notAfter(cert));
  return days * 86400L + seconds;
}

const std::vector<std::string> kSans = {"fujid.example", "localhost", "127.0.0.1", "::1", "10.20.30.40"};

// ---------------------------------------------------------------- PKI

TEST(PkiTest, CreatesTheCaAndServerFilesWithTheirModes) {
  TempDir dir;
  Result<TlsFiles> files = EnsureClusterPki(dir.path(), kSans);
  ASSERT_TRUE(files.ok()) << files.status().ToString();
  EXPECT_EQ(files->ca_cert, dir / "ca.crt");
  EXPECT_EQ(files->server_cert, dir / "server.crt");
  EXPECT_EQ(files->server_key, dir / "server.key");
  EXPECT_EQ(ModeOf(dir / "ca.crt"), 0644u);
  EXPECT_EQ(ModeOf(dir / "ca.key"), 0600u);
  EXPECT_EQ(ModeOf(dir / "server.crt"), 0644u);
  EXPECT_EQ(ModeOf(dir / "server.key"), 0600u);
  std::set<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    names.insert(entry.path().filename().string());
  }
  EXPECT_EQ(names, (std::set<std::string>{"ca.crt", "ca.key", "server.crt", "server.key"}));
}

TEST(PkiTest, TheCaIsAP256CaForTenYears) {
  TempDir dir;
  ASSERT_TRUE(EnsureClusterPki(dir.path(), kSans).ok());
  Owned<X509> ca = LoadCert(dir / "ca.crt");
  Owned<EVP_PKEY> ca_key = LoadKey(dir / "ca.key");
  ASSERT_TRUE(ca && ca_key);
  EXPECT_EQ(X509_check_private_key(ca.get(), ca_key.get()), 1);
  EXPECT_TRUE(EVP_PKEY_is_a(ca_key.get(), "EC"));
  EXPECT_EQ(EVP_PKEY_get_bits(ca_key.get()), 256);
  EXPECT_EQ(X509_check_ca(ca.get()), 1);
  // basicConstraints CA:TRUE, marked critical.
  const int bc = X509_get_ext_by_NID(ca.get(), NID_basic_constraints, -1);
  ASSERT_GE(bc, 0);
  EXPECT_EQ(X509_EXTENSION_get_critical(X509_get_ext(ca.get(), bc)), 1);
  EXPECT_EQ(X509_get_key_usage(ca.get()), static_cast<uint32_t>(KU_KEY_CERT_SIGN | KU_CRL_SIGN));
  const std::string cn = CommonName(ca.get());
  ASSERT_EQ(cn.size(), std::string("fuji cluster CA ").size() + 16) << cn;
  EXPECT_EQ(cn.substr(0, 16), "fuji cluster CA ");
  EXPECT_TRUE(IsLowerHex(cn.substr(16))) << cn;
  EXPECT_NEAR(ValiditySeconds(ca.get()), 3650 * 86400L + 3600, 2);
}

TEST(PkiTest, SecondCallReusesTheCaAndIssuesANewServerCertificate) {
  TempDir dir;
  ASSERT_TRUE(EnsureClusterPki(dir.path(), kSans).ok());
  const std::string ca_pem = Read(dir / "ca.crt"), ca_key = Read(dir / "ca.key");
  const std::string cert_pem = Read(dir / "server.crt"), key_pem = Read(dir / "server.key");
  Owned<X509> first = LoadCert(dir / "server.crt");
  ASSERT_TRUE(EnsureClusterPki(dir.path(), {"other.example"}).ok());
  EXPECT_EQ(Read(dir / "ca.crt"), ca_pem);
  EXPECT_EQ(Read(dir / "ca.key"), ca_key);
  EXPECT_NE(Read(dir / "server.crt"), cert_pem);
  EXPECT_NE(Read(dir / "server.key"), key_pem);
  Owned<X509> second = LoadCert(dir / "server.crt");
  Owned<X509> ca = LoadCert(dir / "ca.crt");
  ASSERT_TRUE(first && second && ca);
  EXPECT_NE(SerialHex(first.get()), SerialHex(second.get()));
  EXPECT_TRUE(Verifies(second.get(), ca.get()));
  EXPECT_EQ(X509_check_host(second.get(), "other.example", 0, 0, nullptr), 1);
  EXPECT_NE(X509_check_host(second.get(), "fujid.example", 0, 0, nullptr), 1);
}

TEST(PkiTest, ServerCertificateVerifiesForEachSanAndNoOtherName) {
  TempDir dir;
  ASSERT_TRUE(EnsureClusterPki(dir.path(), kSans).ok());
  Owned<X509> ca = LoadCert(dir / "ca.crt");
  Owned<X509> cert = LoadCert(dir / "server.crt");
  Owned<EVP_PKEY> key = LoadKey(dir / "server.key");
  ASSERT_TRUE(ca && cert && key);
  EXPECT_TRUE(Verifies(cert.get(), ca.get()));
  EXPECT_EQ(X509_check_private_key(cert.get(), key.get()), 1);
  EXPECT_TRUE(EVP_PKEY_is_a(key.get(), "EC"));
  EXPECT_EQ(EVP_PKEY_get_bits(key.get()), 256);
  EXPECT_EQ(CommonName(cert.get()), "fujid");
  EXPECT_EQ(X509_check_ca(cert.get()), 0);
  EXPECT_NE(X509_get_extended_key_usage(cert.get()) & XKU_SSL_SERVER, 0u);
  EXPECT_EQ(X509_get_key_usage(cert.get()), static_cast<uint32_t>(KU_DIGITAL_SIGNATURE));
  EXPECT_NE(X509_get0_subject_key_id(cert.get()), nullptr);
  ASSERT_NE(X509_get0_authority_key_id(cert.get()), nullptr);
  EXPECT_EQ(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(cert.get()),
                                  X509_get0_subject_key_id(ca.get())),
            0);
  EXPECT_EQ(X509_cmp_current_time(X509_get0_notBefore(cert.get())), -1);
  EXPECT_NEAR(ValiditySeconds(cert.get()), 365 * 86400L + 3600, 2);
  EXPECT_GE(BN_num_bits(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert.get()), nullptr)), 0);

  EXPECT_EQ(X509_check_host(cert.get(), "fujid.example", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(cert.get(), "localhost", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "127.0.0.1", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "::1", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "10.20.30.40", 0), 1);
  EXPECT_NE(X509_check_host(cert.get(), "other.example", 0, 0, nullptr), 1);
  EXPECT_NE(X509_check_host(cert.get(), "fujid", 0, 0, nullptr), 1);  // the CN is not a name
  EXPECT_NE(X509_check_ip_asc(cert.get(), "10.20.30.41", 0), 1);
  EXPECT_NE(X509_check_ip_asc(cert.get(), "::2", 0), 1);
  // An IP literal is an IP SAN, not a DNS one.
  EXPECT_NE(X509_check_host(cert.get(), "127.0.0.1", 0, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT,
                            nullptr),
            1);

  TempDir other;
  ASSERT_TRUE(EnsureClusterPki(other.path(), kSans).ok());
  Owned<X509> other_ca = LoadCert(other / "ca.crt");
  EXPECT_FALSE(Verifies(cert.get(), other_ca.get()));
}

TEST(PkiTest, APlantedLinkAtAServerFileIsReplacedNotFollowed) {
  TempDir dir, outside;
  ASSERT_TRUE(EnsureClusterPki(dir.path(), kSans).ok());
  const std::string target_key = outside / "precious.key";
  const std::string target_cert = outside / "precious.crt";
  Write(target_key, "do not overwrite (key)");
  Write(target_cert, "do not overwrite (cert)");
  ASSERT_EQ(::unlink((dir / "server.key").c_str()), 0);
  ASSERT_EQ(::unlink((dir / "server.crt").c_str()), 0);
  ASSERT_EQ(::symlink(target_key.c_str(), (dir / "server.key").c_str()), 0);
  ASSERT_EQ(::symlink(target_cert.c_str(), (dir / "server.crt").c_str()), 0);
  ASSERT_TRUE(EnsureClusterPki(dir.path(), kSans).ok());
  EXPECT_EQ(Read(target_key), "do not overwrite (key)");
  EXPECT_EQ(Read(target_cert), "do not overwrite (cert)");
  struct stat st {};
  ASSERT_EQ(::lstat((dir / "server.key").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  Owned<X509> cert = LoadCert(dir / "server.crt");
  Owned<X509> ca = LoadCert(dir / "ca.crt");
  ASSERT_TRUE(cert && ca);
  EXPECT_TRUE(Verifies(cert.get(), ca.get()));
}

TEST(PkiTest, APlantedLinkAtCaKeyIsNeitherFollowedNorTrusted) {
  // ca.key present without ca.crt: nothing is created and the link's target is left alone.
  TempDir dir, outside;
  const std::string target = outside / "precious";
  Write(target, "do not overwrite");
  ASSERT_EQ(::symlink(target.c_str(), (dir / "ca.key").c_str()), 0);
  Result<TlsFiles> files = EnsureClusterPki(dir.path(), kSans);
  ASSERT_FALSE(files.ok());
  EXPECT_EQ(files.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(files.status().message().find("ca.crt"), std::string::npos) << files.status().message();
  EXPECT_EQ(Read(target), "do not overwrite");
  EXPECT_FALSE(std::filesystem::exists(dir / "ca.crt"));
  EXPECT_FALSE(std::filesystem::exists(dir / "server.key"));

  // A dangling link: its target is not created either.
  TempDir dir2;
  const std::string absent = outside / "absent";
  ASSERT_EQ(::symlink(absent.c_str(), (dir2 / "ca.key").c_str()), 0);
  EXPECT_FALSE(EnsureClusterPki(dir2.path(), kSans).ok());
  EXPECT_FALSE(std::filesystem::exists(absent));
}

TEST(PkiTest, ACaKeyThatDoesNotMatchItsCertificateIsRefused) {
  TempDir dir, other;
  ASSERT_TRUE(EnsureClusterPki(dir.path(), kSans).ok());
  ASSERT_TRUE(EnsureClusterPki(other.path(), kSans).ok());
  const std::string other_key = Read(other / "ca.key");
  ASSERT_TRUE(WriteFileAtomically(dir / "ca.key", other_key, 0600).ok());
  const std::string server_before = Read(dir / "server.crt");
  Result<TlsFiles> files = EnsureClusterPki(dir.path(), kSans);
  ASSERT_FALSE(files.ok());
  EXPECT_EQ(files.status().code(), StatusCode::kFailedPrecondition);
  const std::string& message = files.status().message();
  EXPECT_NE(message.find(dir / "ca.key"), std::string::npos) << message;
  EXPECT_NE(message.find("does not match"), std::string::npos) << message;
  EXPECT_EQ(message.find("PRIVATE KEY"), std::string::npos) << message;
  EXPECT_EQ(Read(dir / "server.crt"), server_before);  // nothing issued
}

TEST(PkiTest, CorruptOrMissingCaFilesAreRefusedByName) {
  {
    TempDir dir;
    ASSERT_TRUE(EnsureClusterPki(dir.path(), kSans).ok());
    Write(dir / "ca.crt", "not a certificate\n");
    Result<TlsFiles> files = EnsureClusterPki(dir.path(), kSans);
    ASSERT_FALSE(files.ok());
    EXPECT_EQ(files.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(files.status().message().find(dir / "ca.crt"), std::string::npos)
        << files.status().message();
  }
  {
    TempDir dir;
    ASSERT_TRUE(EnsureClusterPki(dir.path(), kSans).ok());
    Write(dir / "ca.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    Result<TlsFiles> files = EnsureClusterPki(dir.path(), kSans);
    ASSERT_FALSE(files.ok());
    EXPECT_EQ(files.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(files.status().message().find(dir / "ca.key"), std::string::npos)
        << files.status().message();
  }
  {
    TempDir dir;
    ASSERT_TRUE(EnsureClusterPki(dir.path(), kSans).ok());
    ASSERT_EQ(::unlink((dir / "ca.key").c_str()), 0);
    Result<TlsFiles> files = EnsureClusterPki(dir.path(), kSans);
    ASSERT_FALSE(files.ok());
    EXPECT_EQ(files.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(files.status().message().find(dir / "ca.key"), std::string::npos)
        << files.status().message();
  }
  {
    TempDir dir;
    ASSERT_TRUE(EnsureClusterPki(dir.path(), kSans).ok());
    ASSERT_EQ(::chmod((dir / "ca.key").c_str(), 0), 0);
    if (::geteuid() != 0) {  // root reads it anyway
      Result<TlsFiles> files = EnsureClusterPki(dir.path(), kSans);
      ASSERT_FALSE(files.ok());
      EXPECT_EQ(files.status().code(), StatusCode::kFailedPrecondition);
      EXPECT_NE(files.status().message().find(dir / "ca.key"), std::string::npos)
          << files.status().message();
    }
  }
}

TEST(PkiTest, RefusesADirectoryOthersMayWriteOrNoDirectory) {
  TempDir dir;
  for (mode_t mode : {0777, 0770, 0757, 0722}) {
    ASSERT_EQ(::chmod(dir.path().c_str(), mode), 0);
    Result<TlsFiles> files = EnsureClusterPki(dir.path(), kSans);
    ASSERT_FALSE(files.ok()) << std::oct << mode;
    EXPECT_EQ(files.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(files.status().message().find(dir.path()), std::string::npos);
  }
  ASSERT_EQ(::chmod(dir.path().c_str(), 0755), 0);
  EXPECT_FALSE(std::filesystem::exists(dir / "ca.key"));
  EXPECT_TRUE(EnsureClusterPki(dir.path(), kSans).ok());

  Result<TlsFiles> missing = EnsureClusterPki(dir / "absent", kSans);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kFailedPrecondition);
  Result<TlsFiles> file = EnsureClusterPki(dir / "ca.crt", kSans);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), StatusCode::kFailedPrecondition);
}

TEST(PkiTest, RefusesASanThatIsNeitherAnAddressNorAName) {
  TempDir dir;
  for (const std::string bad : {"bad name", "a..b", "fe80::1%eth0", "x/y"}) {
    Result<TlsFiles> files = EnsureClusterPki(dir.path(), {"localhost", bad});
    ASSERT_FALSE(files.ok()) << bad;
    EXPECT_EQ(files.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(files.status().message().find(bad), std::string::npos);
  }
}

TEST(PkiTest, LoadTlsMaterialChecksTheKeyAgainstTheCertificate) {
  TempDir dir, other;
  Result<TlsFiles> files = EnsureClusterPki(dir.path(), kSans);
  ASSERT_TRUE(files.ok());
  ASSERT_TRUE(EnsureClusterPki(other.path(), kSans).ok());
  Result<TlsMaterial> material = LoadTlsMaterial(*files);
  ASSERT_TRUE(material.ok()) << material.status().ToString();
  EXPECT_EQ(material->ca_pem, Read(files->ca_cert));
  EXPECT_EQ(material->cert_pem, Read(files->server_cert));
  EXPECT_EQ(material->key_pem, Read(files->server_key));

  TlsFiles mismatched = *files;
  mismatched.server_key = other / "server.key";
  Result<TlsMaterial> refused = LoadTlsMaterial(mismatched);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find(mismatched.server_key), std::string::npos);
  EXPECT_EQ(refused.status().message().find("PRIVATE KEY"), std::string::npos);

  TlsFiles absent = *files;
  absent.ca_cert = dir / "absent.crt";
  Result<TlsMaterial> missing = LoadTlsMaterial(absent);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(missing.status().message().find(absent.ca_cert), std::string::npos);

  Write(dir / "garbage.crt", "garbage");
  TlsFiles garbage = *files;
  garbage.server_cert = dir / "garbage.crt";
  Result<TlsMaterial> unparsed = LoadTlsMaterial(garbage);
  ASSERT_FALSE(unparsed.ok());
  EXPECT_EQ(unparsed.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(unparsed.status().message().find(garbage.server_cert), std::string::npos);

  Write(dir / "huge.crt", std::string((size_t{1} << 20) + 1, 'x'));
  TlsFiles huge = *files;
  huge.ca_cert = dir / "huge.crt";
  Result<TlsMaterial> too_big = LoadTlsMaterial(huge);
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(too_big.status().message().find(huge.ca_cert), std::string::npos);
}

TEST(ServerSansTest, ASpecificHostThenExtrasThenLoopback) {
  EXPECT_EQ(ServerSans("10.1.2.3:7000", {"fujid.example", "10.1.2.3"}),
            (std::vector<std::string>{"10.1.2.3", "fujid.example", "localhost", "127.0.0.1", "::1"}));
  EXPECT_EQ(ServerSans("[fd00::5]:7000", {}),
            (std::vector<std::string>{"fd00::5", "localhost", "127.0.0.1", "::1"}));
  EXPECT_EQ(ServerSans("localhost:7000", {"[fd00::6]"}),
            (std::vector<std::string>{"localhost", "fd00::6", "127.0.0.1", "::1"}));
  EXPECT_EQ(ServerSans("fujid.example:7000", {"fujid.example"}),
            (std::vector<std::string>{"fujid.example", "localhost", "127.0.0.1", "::1"}));
}

TEST(ServerSansTest, AWildcardNamesThisHostAndItsAddresses) {
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof host - 1), 0);
  for (const std::string listen : {"0.0.0.0:7000", "[::]:7000", ":7000"}) {
    const std::vector<std::string> sans = ServerSans(listen, {"extra.example"});
    const std::set<std::string> unique(sans.begin(), sans.end());
    EXPECT_EQ(unique.size(), sans.size()) << listen;
    EXPECT_EQ(unique.count(host), 1u) << listen;
    for (const char* name : {"localhost", "127.0.0.1", "::1", "extra.example"}) {
      EXPECT_EQ(unique.count(name), 1u) << listen << " lacks " << name;
    }
    EXPECT_EQ(unique.count("0.0.0.0"), 0u);
    EXPECT_EQ(unique.count("::"), 0u);
    for (const std::string& san : sans) {
      EXPECT_NE(san.rfind("fe80:", 0), 0u) << san;  // no link-local addresses
      EXPECT_NE(san.rfind("169.254.", 0), 0u) << san;
    }
    // Every one of them goes into a certificate.
    TempDir dir;
    Result<TlsFiles> files = EnsureClusterPki(dir.path(), sans);
    ASSERT_TRUE(files.ok()) << files.status().ToString();
  }
}

// ---------------------------------------------------------------- a real handshake

// fujid's JobService answering Health only, as the server side of a handshake.
class HealthOnly final : public v1::JobService::Service {
  grpc::Status Health(grpc::ServerContext*, const v1::HealthRequest*, v1::HealthResponse* response) override {
    response->set_version("handshake");
    return grpc::Status::OK;
  }
};

// Calls JobService.Health on a TLS server holding `server`'s certificate, from a client that
// trusts only the CA in `client_ca_file`; the version the server sent goes to `version`.
grpc::Status HealthOverTls(const TlsFiles& server, const std::string& client_ca_file, std::string* version) {
  grpc::SslServerCredentialsOptions server_options;
  server_options.pem_key_cert_pairs.push_back({Read(server.server_key), Read(server.server_cert)});
  HealthOnly service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::SslServerCredentials(server_options), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> grpc_server = builder.BuildAndStart();
  if (!grpc_server || port == 0) return grpc::Status(grpc::StatusCode::INTERNAL, "no server");

  grpc::SslCredentialsOptions client_options;
  client_options.pem_root_certs = Read(client_ca_file);
  auto stub = v1::JobService::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::SslCredentials(client_options)));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  v1::HealthResponse response;
  grpc::Status status = stub->Health(&context, v1::HealthRequest(), &response);
  if (status.ok() && version != nullptr) *version = response.version();
  grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return status;
}

TEST(TlsHandshakeTest, AClientTrustingTheClusterCaReachesFujid) {
  TempDir dir;
  Result<TlsFiles> files = EnsureClusterPki(dir.path(), ServerSans("127.0.0.1:0", {}));
  ASSERT_TRUE(files.ok()) << files.status().ToString();
  std::string version;
  grpc::Status status = HealthOverTls(*files, files->ca_cert, &version);
  ASSERT_TRUE(status.ok()) << status.error_code() << ": " << status.error_message();
  EXPECT_EQ(version, "handshake");
}

TEST(TlsHandshakeTest, AClientTrustingAnotherCaIsRefused) {
  TempDir dir, other;
  Result<TlsFiles> files = EnsureClusterPki(dir.path(), ServerSans("127.0.0.1:0", {}));
  Result<TlsFiles> other_files = EnsureClusterPki(other.path(), ServerSans("127.0.0.1:0", {}));
  ASSERT_TRUE(files.ok() && other_files.ok());
  grpc::Status status = HealthOverTls(*files, other_files->ca_cert, nullptr);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
}

}  // namespace
}  // namespace fuji::security
