fuji_add_test(common_test SOURCES unit/common_test.cc LIBS fuji_common LABELS unit)
