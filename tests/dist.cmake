# Collective communication (worker/dist): real rank processes over a FileStore with Gloo; the CUDA
# cases (Gloo on CUDA tensors, NCCL) skip without a GPU.
if(FUJI_WITH_TORCH)
  fuji_add_test(dist_test SOURCES unit/dist_test.cc LIBS fuji_dist GTest::gtest_main
    LABELS unit torch TIMEOUT 180)
endif()
