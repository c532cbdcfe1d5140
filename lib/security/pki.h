// TLS material for fujid: the cluster's own CA and the server certificates it signs (the
// automatic PKI under fujid's state directory), the names a server certificate must carry, and
// certificates and keys an operator brings.
#pragma once

#include <string>
#include <vector>

#include "lib/common/status.h"

namespace fuji::security {

// Paths of PEM files.
struct TlsFiles {
  std::string ca_cert, server_cert, server_key;
};

// Contents of PEM files.
struct TlsMaterial {
  std::string ca_pem, cert_pem, key_pem;
};

// fujid's automatic PKI under `dir` (its state directory). On first use creates the cluster CA:
// ca.crt (0644) and ca.key (0600), ECDSA P-256, valid 10 years, CA:TRUE, subject CN
// "fuji cluster CA <16 hex digits>". Every call then issues a fresh server certificate signed by
// that CA into server.crt (0644) and server.key (0600): P-256, valid from an hour ago for a year,
// random 128-bit serial, CN "fujid", serverAuth, and one subjectAltName per entry of `sans` (an IP
// SAN for an IP literal, else a DNS SAN). `dir` must be an existing directory of ours that no one
// else may write to, else FAILED_PRECONDITION. An existing CA whose files cannot be read or
// parsed, whose key does not match its certificate, or with only one of its two files is
// FAILED_PRECONDITION naming the file; a SAN that is neither an IP literal nor a DNS name is
// INVALID_ARGUMENT. Every file is written atomically (never through a planted link).
Result<TlsFiles> EnsureClusterPki(const std::string& dir, const std::vector<std::string>& sans);

// The SANs fujid's certificate needs when it listens on `listen` ("host:port", "[v6]:port",
// "0.0.0.0:port", "[::]:port"), followed by `extra`: the listen host unless it is a wildcard; for
// a wildcard the host name, its canonical name when the resolver knows one (failures ignored) and
// the address of every interface (IPv4, and IPv6 except link-local); always "localhost",
// "127.0.0.1" and "::1". Without duplicates, in first-seen order.
std::vector<std::string> ServerSans(const std::string& listen, const std::vector<std::string>& extra);

// Bring-your-own TLS: reads the three PEM files (at most 1 MiB each) and checks that each parses
// and that the key belongs to the certificate; INVALID_ARGUMENT naming the file otherwise.
Result<TlsMaterial> LoadTlsMaterial(const TlsFiles& files);

}  // namespace fuji::security
