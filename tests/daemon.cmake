# fujid (daemon/server, daemon/fujid_main.cc): the real server on loopback with a test agent and
# user talking through the generated stubs; the binary's flags, signals and refusals.
fuji_add_test(fujid_server_test
  SOURCES integration/fujid_server_test.cc integration/fujid_recovery_test.cc
    integration/fujid_finetune_test.cc integration/fujid_placement_test.cc
    integration/fujid_admin_test.cc
  LIBS fuji_daemon GTest::gmock
  LABELS integration
  TIMEOUT 300)
fuji_add_test(fujid_smoke_test
  SOURCES integration/fujid_smoke_test.cc
  LIBS fuji_proto fuji_rpc
  LABELS integration
  TIMEOUT 120)
add_dependencies(fujid_smoke_test fujid)
fuji_add_test(daemon_event_hub_test SOURCES unit/daemon_event_hub_test.cc LIBS fuji_daemon
  LABELS unit)
fuji_add_test(daemon_dispatcher_test SOURCES unit/daemon_dispatcher_test.cc LIBS fuji_daemon
  LABELS unit)
# Gangs across agents through the Dispatcher: hand-outs to every member, leases, reports, cancel.
fuji_add_test(daemon_gang_dispatcher_test SOURCES unit/daemon_gang_dispatcher_test.cc LIBS fuji_daemon
  LABELS unit)
fuji_add_test(daemon_log_test SOURCES unit/daemon_log_test.cc LIBS fuji_common LABELS unit)
fuji_add_test(daemon_poll_handout_test SOURCES unit/daemon_poll_handout_test.cc LIBS fuji_daemon
  LABELS unit)
fuji_add_test(daemon_report_ingest_test SOURCES unit/daemon_report_ingest_test.cc LIBS fuji_daemon
  LABELS unit)
