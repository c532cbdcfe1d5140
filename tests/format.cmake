# fuji_format: safetensors and torch.save zip readers (torch-free; the zip fixtures come from
# tests/data/make_torch_checkpoints.py run by /usr/bin/python3 at test time).
fuji_add_test(safetensors_test SOURCES unit/safetensors_test.cc LIBS fuji_format LABELS unit)
fuji_add_test(torch_zip_test SOURCES unit/torch_zip_test.cc LIBS fuji_format LABELS unit)
