# fuji-scheduler-bench: one scheduling pass with 100,000 jobs queued (the 50 ms p99 target).
add_executable(fuji-scheduler-bench scheduler_bench.cc)
target_link_libraries(fuji-scheduler-bench PRIVATE fuji_scheduler)
fuji_warnings(fuji-scheduler-bench)
