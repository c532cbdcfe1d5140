# fuji-train-bench: full training steps of the ZeRO trainer (stage 0, one process) on a checkpoint.
if(FUJI_WITH_TORCH)
  add_executable(fuji-train-bench train_bench.cc)
  target_link_libraries(fuji-train-bench PRIVATE fuji_train)
  fuji_warnings(fuji-train-bench)
endif()
# fuji-load-bench: one ZeRO-3 rank loading a checkpoint (bench/run_load_bench.sh runs the group).
if(FUJI_WITH_TORCH)
  add_executable(fuji-load-bench load_bench.cc)
  target_link_libraries(fuji-load-bench PRIVATE fuji_train)
  fuji_warnings(fuji-load-bench)
endif()
