#include "lib/security/pki.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <memory>
#include <set>
#include <string_view>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "lib/common/file_util.h"

namespace fuji::security {
namespace {

constexpr size_t kMaxPemBytes = size_t{1} << 20;
constexpr int kCaValidDays = 3650;
constexpr int kServerValidDays = 365;
constexpr long kBackdateSeconds = 3600;  // tolerates clocks a little behind fujid's
constexpr unsigned kKeyMode = 0600;
constexpr unsigned kCertMode = 0644;

struct OpenSslFree {
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(BIGNUM* p) const { BN_free(p); }
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(X509_NAME* p) const { X509_NAME_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
  void operator()(GENERAL_NAME* p) const { GENERAL_NAME_free(p); }
  void operator()(GENERAL_NAMES* p) const { GENERAL_NAMES_free(p); }
  void operator()(ASN1_OCTET_STRING* p) const { ASN1_OCTET_STRING_free(p); }
};
template <typename T>
using Owned = std::unique_ptr<T, OpenSslFree>;

// INTERNAL "what: <OpenSSL's reason>", emptying OpenSSL's error queue.
Status OpenSslError(const std::string& what) {
  const unsigned long code = ERR_peek_last_error();
  std::string reason = "unknown error";
  if (code != 0) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    reason = buf;
  }
  ERR_clear_error();
  return Internal(what + ": " + reason);
}

// Never prompts for a passphrase: an encrypted key fails to load instead.
int NoPassphrase(char* /*buf*/, int /*size*/, int /*rwflag*/, void* /*u*/) { return -1; }

Owned<BIO> MemoryBio(std::string_view data) {
  return Owned<BIO>(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

std::string BioContents(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string();
}

Owned<X509> ParseCertificate(std::string_view pem) {
  Owned<BIO> bio = MemoryBio(pem);
  Owned<X509> cert(bio ? PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr) : nullptr);
  ERR_clear_error();
  return cert;
}

Owned<EVP_PKEY> ParsePrivateKey(std::string_view pem) {
  Owned<BIO> bio = MemoryBio(pem);
  Owned<EVP_PKEY> key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr)
                          : nullptr);
  ERR_clear_error();
  return key;
}

Result<std::string> CertificatePem(X509* cert) {
  Owned<BIO> bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return OpenSslError("encoding a certificate");
  return BioContents(bio.get());
}

Result<std::string> PrivateKeyPem(EVP_PKEY* key) {
  Owned<BIO> bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return OpenSslError("encoding a private key");
  }
  return BioContents(bio.get());
}

Result<Owned<EVP_PKEY>> NewP256Key() {
  Owned<EVP_PKEY> key(EVP_EC_gen("P-256"));
  if (!key) return OpenSslError("generating a P-256 key");
  return key;
}

bool IsIpLiteral(const std::string& text) {
  unsigned char buf[sizeof(struct in6_addr)];
  return ::inet_pton(AF_INET, text.c_str(), buf) == 1 || ::inet_pton(AF_INET6, text.c_str(), buf) == 1;
}

// A DNS name a certificate may carry: dot-separated labels of letters, digits, '-' and '_', the
// first of which may be "*".
bool IsDnsName(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  bool first = true;
  while (true) {
    const size_t dot = name.find('.');
    const std::string_view label = name.substr(0, dot);
    if (label.empty() || label.size() > 63) return false;
    if (!(first && label == "*")) {
      for (char c : label) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                        c == '-' || c == '_';
        if (!ok) return false;
      }
    }
    if (dot == std::string_view::npos) return true;
    name.remove_prefix(dot + 1);
    first = false;
  }
}

Status AddExtension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  Owned<X509_EXTENSION> ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) {
    return OpenSslError(std::string("adding ") + OBJ_nid2sn(nid) + " " + value);
  }
  return Status::Ok();
}

Status AddSubjectAltNames(X509* cert, const std::vector<std::string>& sans) {
  Owned<GENERAL_NAMES> names(sk_GENERAL_NAME_new_null());
  if (!names) return OpenSslError("allocating subjectAltName");
  for (const std::string& san : sans) {
    Owned<GENERAL_NAME> name(GENERAL_NAME_new());
    if (!name) return OpenSslError("allocating subjectAltName");
    if (IsIpLiteral(san)) {
      ASN1_OCTET_STRING* ip = a2i_IPADDRESS(san.c_str());
      if (ip == nullptr) return OpenSslError("encoding IP address " + san);
      GENERAL_NAME_set0_value(name.get(), GEN_IPADD, ip);
    } else if (IsDnsName(san)) {
      ASN1_IA5STRING* dns = ASN1_IA5STRING_new();
      if (dns == nullptr || ASN1_STRING_set(dns, san.data(), static_cast<int>(san.size())) != 1) {
        ASN1_IA5STRING_free(dns);
        return OpenSslError("encoding DNS name " + san);
      }
      GENERAL_NAME_set0_value(name.get(), GEN_DNS, dns);
    } else {
      return InvalidArgument("subject alternative name \"" + san +
                             "\" is neither an IP address nor a DNS name");
    }
    if (sk_GENERAL_NAME_push(names.get(), name.get()) == 0) return OpenSslError("adding " + san);
    name.release();  // the stack owns it now
  }
  if (X509_add1_ext_i2d(cert, NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT) != 1) {
    return OpenSslError("adding subjectAltName");
  }
  return Status::Ok();
}

// A certificate for `key` named CN=`common_name`, valid from an hour ago for `days`, with a random
// 128-bit serial; its issuer is `issuer` (nullptr: itself). Not yet signed, no extensions.
Result<Owned<X509>> NewCertificate(EVP_PKEY* key, const std::string& common_name, int days,
                                   X509* issuer) {
  Owned<X509> cert(X509_new());
  Owned<BIGNUM> serial(BN_new());
  Owned<X509_NAME> subject(X509_NAME_new());
  if (!cert || !serial || !subject) return OpenSslError("allocating a certificate");
  if (X509_set_version(cert.get(), 2) != 1 ||
      BN_rand(serial.get(), 128, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY) != 1 ||
      BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr ||
      X509_gmtime_adj(X509_getm_notBefore(cert.get()), -kBackdateSeconds) == nullptr ||
      X509_time_adj_ex(X509_getm_notAfter(cert.get()), days, 0, nullptr) == nullptr ||
      X509_NAME_add_entry_by_txt(subject.get(), "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                                 0) != 1 ||
      X509_set_subject_name(cert.get(), subject.get()) != 1 ||
      X509_set_issuer_name(cert.get(),
                           issuer ? X509_get_subject_name(issuer) : subject.get()) != 1 ||
      X509_set_pubkey(cert.get(), key) != 1) {
    return OpenSslError("filling in certificate " + common_name);
  }
  return cert;
}

struct CertifiedKey {
  Owned<X509> cert;
  Owned<EVP_PKEY> key;
};

Result<CertifiedKey> NewCa() {
  FUJI_ASSIGN_OR_RETURN(Owned<EVP_PKEY> key, NewP256Key());
  FUJI_ASSIGN_OR_RETURN(Owned<X509> cert,
                        NewCertificate(key.get(), "fuji cluster CA " + RandomHex64(), kCaValidDays,
                                       nullptr));
  X509* c = cert.get();
  FUJI_RETURN_IF_ERROR(AddExtension(c, c, NID_basic_constraints, "critical,CA:TRUE"));
  FUJI_RETURN_IF_ERROR(AddExtension(c, c, NID_key_usage, "critical,keyCertSign,cRLSign"));
  FUJI_RETURN_IF_ERROR(AddExtension(c, c, NID_subject_key_identifier, "hash"));
  if (X509_sign(c, key.get(), EVP_sha256()) <= 0) return OpenSslError("signing the cluster CA");
  return CertifiedKey{std::move(cert), std::move(key)};
}

Result<CertifiedKey> NewServerCertificate(const CertifiedKey& ca, const std::vector<std::string>& sans) {
  FUJI_ASSIGN_OR_RETURN(Owned<EVP_PKEY> key, NewP256Key());
  FUJI_ASSIGN_OR_RETURN(Owned<X509> cert,
                        NewCertificate(key.get(), "fujid", kServerValidDays, ca.cert.get()));
  X509* c = cert.get();
  X509* issuer = ca.cert.get();
  FUJI_RETURN_IF_ERROR(AddExtension(c, issuer, NID_basic_constraints, "critical,CA:FALSE"));
  FUJI_RETURN_IF_ERROR(AddExtension(c, issuer, NID_key_usage, "critical,digitalSignature"));
  FUJI_RETURN_IF_ERROR(AddExtension(c, issuer, NID_ext_key_usage, "serverAuth"));
  FUJI_RETURN_IF_ERROR(AddExtension(c, issuer, NID_subject_key_identifier, "hash"));
  FUJI_RETURN_IF_ERROR(AddExtension(c, issuer, NID_authority_key_identifier, "keyid:always"));
  if (!sans.empty()) FUJI_RETURN_IF_ERROR(AddSubjectAltNames(c, sans));
  if (X509_sign(c, ca.key.get(), EVP_sha256()) <= 0) {
    return OpenSslError("signing the server certificate");
  }
  return CertifiedKey{std::move(cert), std::move(key)};
}

// Whether anything (a file, a link, even a dangling one) is at path.
Result<bool> Exists(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) return true;
  if (errno == ENOENT) return false;
  return FailedPrecondition(path + ": " + ErrnoMessage());
}

// `dir` exists, is a directory of this user's, and no one else may create or replace files in it.
Status CheckStateDirectory(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return FailedPrecondition(dir + ": " + ErrnoMessage());
  if (!S_ISDIR(st.st_mode)) return FailedPrecondition(dir + ": not a directory");
  if (st.st_uid != ::geteuid()) {
    return FailedPrecondition(dir + ": owned by uid " + std::to_string(st.st_uid) +
                              ", not by this user (uid " + std::to_string(::geteuid()) + ")");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return FailedPrecondition(dir + ": writable by group or others; refusing to keep keys there");
  }
  return Status::Ok();
}

Result<std::string> ReadPem(const std::string& path, StatusCode code) {
  Result<std::string> pem = ReadFile(path, kMaxPemBytes);
  if (!pem.ok()) return Status(code, pem.status().message());
  return pem;
}

Result<CertifiedKey> LoadCa(const std::string& cert_path, const std::string& key_path) {
  FUJI_ASSIGN_OR_RETURN(std::string cert_pem, ReadPem(cert_path, StatusCode::kFailedPrecondition));
  FUJI_ASSIGN_OR_RETURN(std::string key_pem, ReadPem(key_path, StatusCode::kFailedPrecondition));
  CertifiedKey ca{ParseCertificate(cert_pem), ParsePrivateKey(key_pem)};
  OPENSSL_cleanse(key_pem.data(), key_pem.size());
  if (!ca.cert) return FailedPrecondition(cert_path + ": not a PEM certificate");
  if (!ca.key) return FailedPrecondition(key_path + ": not an unencrypted PEM private key");
  if (X509_check_private_key(ca.cert.get(), ca.key.get()) != 1) {
    ERR_clear_error();
    return FailedPrecondition(key_path + ": does not match the certificate in " + cert_path);
  }
  return ca;
}

// Writes the key first: a certificate on disk always has its key beside it.
Status WritePair(const CertifiedKey& pair, const std::string& cert_path, const std::string& key_path) {
  FUJI_ASSIGN_OR_RETURN(std::string key_pem, PrivateKeyPem(pair.key.get()));
  Status written = WriteFileAtomically(key_path, key_pem, kKeyMode);
  OPENSSL_cleanse(key_pem.data(), key_pem.size());
  FUJI_RETURN_IF_ERROR(written);
  FUJI_ASSIGN_OR_RETURN(std::string cert_pem, CertificatePem(pair.cert.get()));
  return WriteFileAtomically(cert_path, cert_pem, kCertMode);
}

void AddUnique(std::vector<std::string>& out, std::set<std::string>& seen, std::string name) {
  if (name.empty() || !seen.insert(name).second) return;
  out.push_back(std::move(name));
}

// "[::1]" -> "::1"; anything else as it is.
std::string StripBrackets(const std::string& host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    return host.substr(1, host.size() - 2);
  }
  return host;
}

// The host part of "host:port" or "[v6]:port"; a bare IPv6 address is all host.
std::string ListenHost(const std::string& listen) {
  if (!listen.empty() && listen.front() == '[') {
    const size_t close = listen.find(']');
    return close == std::string::npos ? listen.substr(1) : listen.substr(1, close - 1);
  }
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) return listen;
  if (listen.find(':') != colon) return listen;  // "::1" with no port
  return listen.substr(0, colon);
}

bool IsWildcard(const std::string& host) {
  return host.empty() || host == "0.0.0.0" || host == "::" || host == "*";
}

void AddInterfaceAddresses(std::vector<std::string>& out, std::set<std::string>& seen) {
  struct ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return;
  std::unique_ptr<struct ifaddrs, decltype(&::freeifaddrs)> owner(list, &::freeifaddrs);
  for (const struct ifaddrs* ifa = list; ifa != nullptr; ifa = ifa->ifa_next) {
    if (ifa->ifa_addr == nullptr) continue;
    char text[INET6_ADDRSTRLEN] = {};
    if (ifa->ifa_addr->sa_family == AF_INET) {
      const auto* in = reinterpret_cast<const struct sockaddr_in*>(ifa->ifa_addr);
      const uint32_t addr = ntohl(in->sin_addr.s_addr);
      if ((addr >> 16) == 0xa9fe) continue;  // 169.254.0.0/16, link-local
      if (::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text) == nullptr) continue;
    } else if (ifa->ifa_addr->sa_family == AF_INET6) {
      const auto* in6 = reinterpret_cast<const struct sockaddr_in6*>(ifa->ifa_addr);
      if (IN6_IS_ADDR_LINKLOCAL(&in6->sin6_addr)) continue;
      if (::inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text) == nullptr) continue;
    } else {
      continue;
    }
    AddUnique(out, seen, text);
  }
}

void AddHostNames(std::vector<std::string>& out, std::set<std::string>& seen) {
  char name[HOST_NAME_MAX + 1] = {};
  if (::gethostname(name, sizeof name - 1) != 0 || !IsDnsName(name)) return;
  AddUnique(out, seen, name);
  struct addrinfo hints {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_flags = AI_CANONNAME;
  struct addrinfo* result = nullptr;
  if (::getaddrinfo(name, nullptr, &hints, &result) != 0 || result == nullptr) return;
  std::unique_ptr<struct addrinfo, decltype(&::freeaddrinfo)> owner(result, &::freeaddrinfo);
  if (result->ai_canonname != nullptr && IsDnsName(result->ai_canonname)) {
    AddUnique(out, seen, result->ai_canonname);
  }
}

}  // namespace

Result<TlsFiles> EnsureClusterPki(const std::string& dir, const std::vector<std::string>& sans) {
  FUJI_RETURN_IF_ERROR(CheckStateDirectory(dir));
  const std::string base = dir.back() == '/' ? dir : dir + "/";
  const TlsFiles files{base + "ca.crt", base + "server.crt", base + "server.key"};
  const std::string ca_key = base + "ca.key";

  FUJI_ASSIGN_OR_RETURN(bool have_cert, Exists(files.ca_cert));
  FUJI_ASSIGN_OR_RETURN(bool have_key, Exists(ca_key));
  CertifiedKey ca;
  if (!have_cert && !have_key) {
    FUJI_ASSIGN_OR_RETURN(ca, NewCa());
    FUJI_RETURN_IF_ERROR(WritePair(ca, files.ca_cert, ca_key));
  } else if (!have_cert) {
    return FailedPrecondition(files.ca_cert + ": missing while " + ca_key +
                              " exists; remove both to create a new cluster CA");
  } else if (!have_key) {
    return FailedPrecondition(ca_key + ": missing while " + files.ca_cert +
                              " exists; restore it, or remove both to create a new cluster CA");
  } else {
    FUJI_ASSIGN_OR_RETURN(ca, LoadCa(files.ca_cert, ca_key));
  }

  FUJI_ASSIGN_OR_RETURN(CertifiedKey server, NewServerCertificate(ca, sans));
  FUJI_RETURN_IF_ERROR(WritePair(server, files.server_cert, files.server_key));
  return files;
}

std::vector<std::string> ServerSans(const std::string& listen, const std::vector<std::string>& extra) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  const std::string host = ListenHost(listen);
  if (listen.rfind("unix:", 0) == 0) {
    // A unix socket has no host to name.
  } else if (IsWildcard(host)) {
    AddHostNames(out, seen);
    AddInterfaceAddresses(out, seen);
  } else {
    AddUnique(out, seen, host);
  }
  for (const std::string& name : extra) AddUnique(out, seen, StripBrackets(name));
  for (const char* name : {"localhost", "127.0.0.1", "::1"}) AddUnique(out, seen, name);
  return out;
}

Result<TlsMaterial> LoadTlsMaterial(const TlsFiles& files) {
  TlsMaterial material;
  FUJI_ASSIGN_OR_RETURN(material.ca_pem, ReadPem(files.ca_cert, StatusCode::kInvalidArgument));
  FUJI_ASSIGN_OR_RETURN(material.cert_pem, ReadPem(files.server_cert, StatusCode::kInvalidArgument));
  FUJI_ASSIGN_OR_RETURN(material.key_pem, ReadPem(files.server_key, StatusCode::kInvalidArgument));
  if (!ParseCertificate(material.ca_pem)) {
    return InvalidArgument(files.ca_cert + ": not a PEM certificate");
  }
  Owned<X509> cert = ParseCertificate(material.cert_pem);
  if (!cert) return InvalidArgument(files.server_cert + ": not a PEM certificate");
  Owned<EVP_PKEY> key = ParsePrivateKey(material.key_pem);
  if (!key) return InvalidArgument(files.server_key + ": not an unencrypted PEM private key");
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return InvalidArgument(files.server_key + ": does not match the certificate in " +
                           files.server_cert);
  }
  return material;
}

}  // namespace fuji::security
