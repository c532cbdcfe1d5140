# fuji-store-bench: job store throughput (submits/s and p99, List on 1M jobs, samples rows/s).
add_executable(fuji-store-bench store_bench.cc)
target_link_libraries(fuji-store-bench PRIVATE fuji_store)
fuji_warnings(fuji-store-bench)
