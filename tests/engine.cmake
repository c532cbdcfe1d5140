# Engine tests (libtorch): unit tests in process, reference comparisons against Debian's
# python3-torch, and the CLI end to end with real fuji and fuji-rank processes.
if(FUJI_WITH_TORCH)
  fuji_add_test(engine_test SOURCES unit/engine_test.cc LIBS fuji_engine LABELS unit)
  fuji_add_test(gpt2_reference_test SOURCES reference/gpt2_reference_test.cc LIBS fuji_engine
    LABELS reference)
  fuji_add_test(cli_test SOURCES integration/cli_test.cc LIBS fuji_common LABELS integration)
  add_dependencies(cli_test fuji fuji-rank)
endif()
# Sampling against the exact distribution (chi-square), in process.
if(FUJI_WITH_TORCH)
  fuji_add_test(sampling_test SOURCES unit/sampling_test.cc LIBS fuji_engine LABELS unit)
endif()
# Continuous batching with the paged KV cache against Generate, in process.
if(FUJI_WITH_TORCH)
  fuji_add_test(batch_engine_test SOURCES unit/batch_engine_test.cc LIBS fuji_engine LABELS unit)
endif()
# fuji-rank serving 16 requests at once against one at a time, cancel, stop strings, bad input.
if(FUJI_WITH_TORCH)
  fuji_add_test(rank_serve_test SOURCES integration/rank_serve_test.cc LIBS fuji_launcher
    LABELS integration TIMEOUT 300)
  add_dependencies(rank_serve_test fuji-rank)
endif()
