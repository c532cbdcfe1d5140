# The daemon's job store (daemon/store): open and migrations, jobs, workers and leases, telemetry,
# retention, backups and persisted intent.
fuji_add_test(store_test
  SOURCES unit/store_open_test.cc unit/store_jobs_test.cc unit/store_workers_test.cc
    unit/store_losses_test.cc unit/store_retention_test.cc unit/store_faults_test.cc
  LIBS fuji_store
  LABELS unit
  TIMEOUT 120)
