# Collective communication (worker/dist): real rank processes over a FileStore with Gloo. The CUDA
# cases (Gloo on CUDA tensors, NCCL) run apart as dist_test_gpu, labelled gpu: skipped without a
# CUDA device.
if(FUJI_WITH_TORCH)
  fuji_add_test(dist_test SOURCES unit/dist_test.cc LIBS fuji_dist GTest::gtest_main
    LABELS unit torch TIMEOUT 180 GPU_CASES "DistGpuTest.*")
endif()
