fuji_add_test(launcher_test SOURCES unit/launcher_test.cc LIBS fuji_launcher LABELS unit)
fuji_add_test(gang_test SOURCES unit/gang_test.cc LIBS fuji_launcher LABELS unit PROCESSORS 2)
if(FUJI_WITH_TORCH)
  add_dependencies(gang_test fuji-rank)  # its last test runs a gang of the real fuji-rank
endif()
# A gang across two network namespaces joined by a veth pair (root and `ip netns`; skipped otherwise).
if(FUJI_WITH_TORCH)
  fuji_add_test(gang_netns_test SOURCES integration/gang_netns_test.cc LIBS fuji_launcher fuji_ckpt
    LABELS integration PROCESSORS 2 TIMEOUT 900)
  add_dependencies(gang_netns_test fuji-rank)
endif()
