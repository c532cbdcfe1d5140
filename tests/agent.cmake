# fuji-agent: failure classification, rank events into reports, memory samples, devices and NVML
# loading, the paths a job may name (unit); the agent against an in-test WorkerService running real fuji-rank processes
# (integration, needs libtorch).
if(NOT FUJI_RANK_ONLY)
  fuji_add_test(agent_failure_test SOURCES unit/agent_failure_test.cc LIBS fuji_agent LABELS unit)
  fuji_add_test(agent_samples_test SOURCES unit/agent_samples_test.cc LIBS fuji_agent LABELS unit)
  fuji_add_test(agent_devices_test SOURCES unit/agent_devices_test.cc LIBS fuji_agent LABELS unit)
  fuji_add_test(agent_events_test SOURCES unit/agent_events_test.cc LIBS fuji_agent LABELS unit)
  # A job's paths against the agent's roots; a finetune prepared by the real fuji-agent, confined.
  fuji_add_test(agent_paths_test SOURCES unit/agent_paths_test.cc LIBS fuji_agent LABELS unit)
  add_dependencies(agent_paths_test fuji-agent)
  if(FUJI_WITH_TORCH)
    fuji_add_test(agent_rank_test SOURCES integration/agent_rank_test.cc LIBS fuji_agent
      LABELS integration TIMEOUT 300)
    add_dependencies(agent_rank_test fuji-rank)
    # Two agents run one fine-tune's gang together (tcp: rendezvous on the loopback).
    fuji_add_test(agent_gang_test SOURCES integration/agent_gang_test.cc LIBS fuji_agent
      LABELS integration PROCESSORS 2 TIMEOUT 600)
    add_dependencies(agent_gang_test fuji-rank fuji-agent)
  endif()
endif()
