# The ZeRO layout (lib/zero): units, shards, per-stage bytes and the micro-batch schedule that
# the trainer, the checkpoint format and the planner share. Torch-free.
fuji_add_test(zero_layout_test SOURCES unit/zero_layout_test.cc LIBS fuji_zero LABELS unit)
