# fuji-plan-bench: planning every stage and offload choice for the 7 Cerebras-GPT models (< 10 ms each).
add_executable(fuji-plan-bench plan_bench.cc)
target_link_libraries(fuji-plan-bench PRIVATE fuji_plan)
fuji_warnings(fuji-plan-bench)
