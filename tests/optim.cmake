# CPU AdamW (worker/optim): unit tests against a double reference (torch-free, so they run under
# the sanitizers too) and a reference check against Debian's python3-torch torch.optim.AdamW.
fuji_add_test(optim_test SOURCES unit/optim_adamw_test.cc LIBS fuji_optim LABELS unit)
fuji_add_test(adamw_reference_test SOURCES reference/adamw_reference_test.cc LIBS fuji_optim
  LABELS reference)
