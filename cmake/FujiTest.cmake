# fuji_add_test(NAME SOURCES a.cc... LIBS lib... LABELS unit|integration|reference|gpu [TIMEOUT s])
# One GoogleTest executable per unit, registered with ctest under its labels.
function(fuji_add_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main Threads::Threads)
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR})
  target_compile_definitions(${name} PRIVATE
    FUJI_SOURCE_DIR="${CMAKE_SOURCE_DIR}" FUJI_BINARY_DIR="${CMAKE_BINARY_DIR}")
  fuji_warnings(${name})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
    ENVIRONMENT "FUJI_BINARY_DIR=${CMAKE_BINARY_DIR};FUJI_SOURCE_DIR=${CMAKE_SOURCE_DIR};OMP_WAIT_POLICY=PASSIVE")
endfunction()
