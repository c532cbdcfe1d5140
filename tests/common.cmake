fuji_add_test(common_test SOURCES unit/common_test.cc LIBS fuji_common LABELS unit)
fuji_add_test(path_policy_test SOURCES unit/path_policy_test.cc LIBS fuji_common LABELS unit)
