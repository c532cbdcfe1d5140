# fuji-adamw-bench: CPU AdamW on 100M parameters, fuji::optim::CpuAdamW vs torch::optim::AdamW.
if(FUJI_WITH_TORCH)
  add_executable(fuji-adamw-bench adamw_bench.cc)
  target_link_libraries(fuji-adamw-bench PRIVATE fuji_optim fuji_engine "${TORCH_LIBRARIES}")
  fuji_warnings(fuji-adamw-bench)
endif()
