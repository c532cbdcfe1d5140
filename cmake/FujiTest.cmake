# fuji_add_test(NAME SOURCES a.cc... LIBS lib... LABELS unit|integration|reference|gpu [TIMEOUT s]
#               [GPU_CASES gtest-filter] [PROCESSORS n] [SERIAL])
# One GoogleTest executable per unit, registered with ctest under its labels.
#
# Parallel runs (scripts/test runs `ctest -j2`): an integration or torch test runs fuji's processes
# or libtorch, which use every core, so it claims two (PROCESSORS 2) and runs alone on a 2-core
# machine; other tests that start real fuji-rank gangs say PROCESSORS 2 themselves; the rest run
# side by side. SERIAL marks a test that measures time (the planner's predictions against measured
# steps): it never shares the machine, however many cores ctest has.
#
# GPU tests: `ctest -LE gpu` (scripts/test) must leave out everything that needs a GPU, and on a
# machine without one a GPU case must show as skipped, never as passed. So a test labelled gpu
# gets SKIP_RETURN_CODE 77: its executable exits 77 when every case it ran was skipped
# (GTEST_SKIP() for want of a CUDA device), and ctest reports it as skipped. An executable that
# mixes CPU and GPU cases names the GPU ones with GPU_CASES, a --gtest_filter pattern: they are
# registered apart as NAME_gpu (its labels plus gpu) and NAME runs every other case.
set(FUJI_TEST_SKIP_RETURN_CODE 77)

function(fuji_add_test name)
  cmake_parse_arguments(T "SERIAL" "TIMEOUT;GPU_CASES;PROCESSORS" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main Threads::Threads)
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR})
  target_compile_definitions(${name} PRIVATE
    FUJI_SOURCE_DIR="${CMAKE_SOURCE_DIR}" FUJI_BINARY_DIR="${CMAKE_BINARY_DIR}")
  fuji_warnings(${name})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set(env "FUJI_BINARY_DIR=${CMAKE_BINARY_DIR};FUJI_SOURCE_DIR=${CMAKE_SOURCE_DIR};OMP_WAIT_POLICY=PASSIVE")
  set(cpu_labels ${T_LABELS})
  if(T_GPU_CASES OR "gpu" IN_LIST T_LABELS)
    # Only these executables see the code, so that adding it rebuilds no other test.
    target_compile_definitions(${name} PRIVATE FUJI_TEST_SKIP_RETURN_CODE=${FUJI_TEST_SKIP_RETURN_CODE})
  endif()
  if(T_GPU_CASES)
    list(REMOVE_ITEM cpu_labels gpu)
    set(gpu_labels ${cpu_labels} gpu)
    add_test(NAME ${name} COMMAND ${name} "--gtest_filter=-${T_GPU_CASES}")
    add_test(NAME ${name}_gpu COMMAND ${name} "--gtest_filter=${T_GPU_CASES}")
    set_tests_properties(${name}_gpu PROPERTIES LABELS "${gpu_labels}" TIMEOUT ${T_TIMEOUT}
      ENVIRONMENT "${env}" SKIP_RETURN_CODE ${FUJI_TEST_SKIP_RETURN_CODE})
  else()
    add_test(NAME ${name} COMMAND ${name})
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "${cpu_labels}" TIMEOUT ${T_TIMEOUT} ENVIRONMENT "${env}")
  if(NOT T_PROCESSORS AND ("integration" IN_LIST cpu_labels OR "torch" IN_LIST cpu_labels))
    set(T_PROCESSORS 2)
  endif()
  if(T_PROCESSORS)
    set_tests_properties(${name} PROPERTIES PROCESSORS ${T_PROCESSORS})
  endif()
  if(T_SERIAL)
    set_tests_properties(${name} PROPERTIES RUN_SERIAL TRUE)
  endif()
  if("gpu" IN_LIST cpu_labels)
    set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE ${FUJI_TEST_SKIP_RETURN_CODE})
  endif()
endfunction()
