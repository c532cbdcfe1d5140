# fujid's observability (daemon/server/metrics*, daemon/http/metrics_route): the Prometheus text
# format alone; /metrics access, grpc.health.v1 and reflection on an in-process fujid; and a real
# Prometheus (Debian's prometheus package) scraping a real fujid and fuji-agent.
fuji_add_test(metrics_test SOURCES unit/metrics_test.cc LIBS fuji_metrics LABELS unit)
