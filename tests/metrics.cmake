# fujid's observability (daemon/server/metrics*, daemon/http/metrics_route): the Prometheus text
# format alone; /metrics access, grpc.health.v1 and reflection on an in-process fujid; and a real
# Prometheus (Debian's prometheus package) scraping a real fujid and fuji-agent.
fuji_add_test(metrics_test SOURCES unit/metrics_test.cc LIBS fuji_metrics LABELS unit)
if(FUJI_WITH_TORCH)
  fuji_add_test(metrics_prometheus_test SOURCES integration/metrics_prometheus_test.cc LIBS fuji_launcher
    LABELS integration TIMEOUT 600)
  set_tests_properties(metrics_prometheus_test PROPERTIES SKIP_RETURN_CODE 77)
  add_dependencies(metrics_prometheus_test fuji fujid fuji-agent fuji-rank)
endif()
fuji_add_test(fujid_metrics_test SOURCES integration/fujid_metrics_test.cc LIBS fuji_daemon
  LABELS integration TIMEOUT 120)
