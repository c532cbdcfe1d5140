# Tokenizer tests: unit cases against hard-coded GPT-2 ids, and whole corpora against tiktoken and
# gpt-3-encoder (the latter takes most of a minute on the corpora of a 2-core machine).
fuji_add_test(tokenizer_test SOURCES unit/tokenizer_test.cc LIBS fuji_text LABELS unit)
fuji_add_test(tokenizer_reference_test SOURCES reference/tokenizer_reference_test.cc
  LIBS fuji_text LABELS reference TIMEOUT 600)
