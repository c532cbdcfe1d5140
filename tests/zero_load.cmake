# Loading a checkpoint straight into a rank's ZeRO states: stage 3 over 2 and 3 ranks (Gloo, one
# thread per rank) against the whole-model load, bit for bit, in every checkpoint layout. The
# pytorch_model.bin fixture comes from Debian's python3-torch at test time.
if(FUJI_WITH_TORCH)
  fuji_add_test(zero_load_test SOURCES unit/zero_load_test.cc LIBS fuji_train LABELS unit)
endif()
