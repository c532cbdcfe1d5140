# Fine-tuning end to end: `fuji run finetune` gangs of real fuji-rank processes over Gloo.
if(FUJI_WITH_TORCH)
  fuji_add_test(finetune_test SOURCES integration/finetune_test.cc LIBS fuji_ckpt
    LABELS integration TIMEOUT 1200)
  add_dependencies(finetune_test fuji fuji-rank)
endif()
