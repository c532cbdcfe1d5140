# The ZeRO checkpoint format (worker/ckpt): torch-free, so it runs under the sanitizers too.
fuji_add_test(zero_checkpoint_test SOURCES unit/zero_checkpoint_test.cc LIBS fuji_ckpt LABELS unit)
