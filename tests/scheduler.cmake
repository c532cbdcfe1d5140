# fuji_scheduler: placement policy, reservations, sharing, free memory, warm models and leases, with fake agents
# and fake time.
fuji_add_test(scheduler_test
  SOURCES unit/scheduler_test.cc unit/scheduler_sim_test.cc unit/scheduler_lease_test.cc
    unit/scheduler_memory_test.cc unit/scheduler_free_memory_test.cc unit/scheduler_warm_test.cc
    unit/scheduler_gang_test.cc
  LIBS fuji_scheduler LABELS unit)
# fujid's plans of inference jobs (weights_mib) as the scheduler reads and places them.
fuji_add_test(scheduler_job_plans_test SOURCES unit/scheduler_job_plans_test.cc LIBS fuji_daemon LABELS unit)
