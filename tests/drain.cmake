# Draining agents (fuji admin drain [--requeue] / undrain): the Dispatcher's preemption path on
# fake time, and end to end with real fujid, two fuji-agents and fuji-rank gangs.
fuji_add_test(daemon_drain_test SOURCES unit/daemon_drain_test.cc LIBS fuji_daemon LABELS unit)
if(FUJI_WITH_TORCH)
  fuji_add_test(drain_test SOURCES integration/drain_test.cc LIBS fuji_launcher
    LABELS integration TIMEOUT 900)
  add_dependencies(drain_test fuji fujid fuji-agent fuji-rank)
endif()
