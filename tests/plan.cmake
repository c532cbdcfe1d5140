# The memory planner (lib/plan): torch-free unit tests, the CLI end to end, and, with libtorch,
# its predictions against the trainer's measured accounting on CPU ranks.
fuji_add_test(plan_test SOURCES unit/plan_test.cc LIBS fuji_plan LABELS unit)
fuji_add_test(plan_cli_test SOURCES integration/plan_cli_test.cc LIBS fuji_common LABELS integration
  TIMEOUT 120)
add_dependencies(plan_cli_test fuji)
if(FUJI_WITH_TORCH)
  fuji_add_test(plan_accuracy_test SOURCES integration/plan_accuracy_test.cc LIBS fuji_plan
    LABELS integration TIMEOUT 1200 SERIAL)
  add_dependencies(plan_accuracy_test fuji fuji-rank)
endif()
# Its step times against measured ones on this machine's CPU, with the rates fuji-rank measures.
if(FUJI_WITH_TORCH)
  fuji_add_test(plan_time_test SOURCES integration/plan_time_test.cc LIBS fuji_plan fuji_launcher
    LABELS integration TIMEOUT 600 SERIAL)
  add_dependencies(plan_time_test fuji fuji-rank)
endif()
