# Fine-tuning specification tests: defaults, round trip, and the refusals of bad input (torch-free).
fuji_add_test(finetune_spec_test SOURCES unit/finetune_spec_test.cc LIBS fuji_spec LABELS unit)
