# The memory planner (worker/plan): torch-free unit tests, the CLI end to end, and, with libtorch,
# its predictions against the trainer's measured accounting on CPU ranks.
fuji_add_test(plan_test SOURCES unit/plan_test.cc LIBS fuji_plan LABELS unit)
fuji_add_test(plan_cli_test SOURCES integration/plan_cli_test.cc LIBS fuji_common LABELS integration
  TIMEOUT 120)
add_dependencies(plan_cli_test fuji)
if(FUJI_WITH_TORCH)
  fuji_add_test(plan_accuracy_test SOURCES integration/plan_accuracy_test.cc LIBS fuji_plan
    LABELS integration TIMEOUT 1200)
  add_dependencies(plan_accuracy_test fuji fuji-rank)
endif()
