# Training data tests: reading text/JSONL/directories, the token cache, packing and the sampler.
fuji_add_test(data_test SOURCES unit/data_reader_test.cc unit/data_sampler_test.cc
  LIBS fuji_data LABELS unit)
