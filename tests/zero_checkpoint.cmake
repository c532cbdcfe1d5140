# The ZeRO checkpoint format (worker/ckpt): torch-free, so it runs under the sanitizers too.
fuji_add_test(zero_checkpoint_test SOURCES unit/zero_checkpoint_test.cc LIBS fuji_ckpt LABELS unit)
# Checkpoint retention (keep_last): what is removed, and what never is (foreign names, links).
fuji_add_test(ckpt_retention_test SOURCES unit/ckpt_retention_test.cc LIBS fuji_ckpt LABELS unit)
