# fujid's OpenAI-compatible HTTP API: real fujid and fuji-agent called by the official openai npm
# client (tests/http/openai_client.mjs, third_party/npm) and curl; the HTTP server's bounds alone.
if(FUJI_WITH_TORCH)
  fuji_add_test(openai_http_test SOURCES integration/openai_http_test.cc LIBS fuji_launcher fuji_http
    LABELS integration TIMEOUT 600)
  add_dependencies(openai_http_test fuji fujid fuji-agent fuji-rank)
endif()
