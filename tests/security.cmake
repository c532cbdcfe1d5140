# lib/security: tokens and hashes, the automatic PKI and a TLS handshake through gRPC (unit).
if(NOT FUJI_RANK_ONLY)
  find_package(gRPC CONFIG REQUIRED)
  find_package(OpenSSL REQUIRED)
  fuji_add_test(security_test SOURCES unit/security_test.cc
    LIBS fuji_security fuji_proto gRPC::grpc++ OpenSSL::Crypto LABELS unit)
endif()
