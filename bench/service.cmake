# fuji-service-bench: the daemon's targets measured through a real fujid process over gRPC
# (submits/s and p99, queued->assigned latency over a 100k backlog, `fuji jobs` on 1M jobs,
# memory-sample rows/s through WorkerService.Report).
add_executable(fuji-service-bench service_bench.cc)
target_link_libraries(fuji-service-bench PRIVATE fuji_proto fuji_rpc fuji_store fuji_common)
fuji_warnings(fuji-service-bench)
