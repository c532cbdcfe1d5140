fuji_add_test(launcher_test SOURCES unit/launcher_test.cc LIBS fuji_launcher LABELS unit)
fuji_add_test(gang_test SOURCES unit/gang_test.cc LIBS fuji_launcher LABELS unit PROCESSORS 2)
if(FUJI_WITH_TORCH)
  add_dependencies(gang_test fuji-rank)  # its last test runs a gang of the real fuji-rank
endif()
