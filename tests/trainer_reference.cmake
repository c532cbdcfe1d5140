# The trainer against PyTorch: loss, gradients and one AdamW step of real fuji-rank gangs (one rank,
# and every ZeRO stage on two) against GPT-2 built from torch.nn modules in float64
# (tests/reference/trainer_reference.py, Debian's python3-torch). Torch-free itself; runs fuji-rank.
if(FUJI_WITH_TORCH)
  fuji_add_test(trainer_reference_test SOURCES reference/trainer_reference_test.cc LIBS fuji_launcher
    LABELS reference TIMEOUT 600)
  add_dependencies(trainer_reference_test fuji-rank)
endif()
