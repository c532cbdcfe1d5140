# The fuji CLI (client/): formatting as pure functions, and the daemon commands against an
# address where nothing listens (the built fuji binary; no fujid needed); the profile and where a
# connection's server, CA and token come from.
fuji_add_test(cli_format_test SOURCES unit/cli_format_test.cc LIBS fuji_client LABELS unit)
fuji_add_test(cli_profile_test SOURCES unit/cli_profile_test.cc LIBS fuji_client LABELS unit)
fuji_add_test(cli_daemon_test SOURCES integration/cli_daemon_test.cc LIBS fuji_common LABELS integration
  TIMEOUT 120)
add_dependencies(cli_daemon_test fuji)
