fuji_add_test(launcher_test SOURCES unit/launcher_test.cc LIBS fuji_launcher LABELS unit)
