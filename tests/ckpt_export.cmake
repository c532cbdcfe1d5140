# `fuji model export` end to end with the engine (libtorch): a ZeRO checkpoint exported, by the
# library call and by the fuji binary, then loaded by engine::LoadModel holds exactly the
# master weights the ranks wrote.
if(FUJI_WITH_TORCH)
  fuji_add_test(ckpt_export_test SOURCES unit/ckpt_export_test.cc LIBS fuji_engine fuji_ckpt
    LABELS unit torch)
  add_dependencies(ckpt_export_test fuji)
endif()
