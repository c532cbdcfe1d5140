# fuji usage and fuji submit --notify (issue 16): the store's usage query and notification rows,
# and end-to-end tests against a real fujid.
fuji_add_test(store_usage_test
  SOURCES unit/store_usage_test.cc
  LIBS fuji_store
  LABELS unit
  TIMEOUT 120)
fuji_add_test(usage_test
  SOURCES integration/usage_test.cc
  LIBS fuji_daemon fuji_launcher GTest::gmock
  LABELS integration
  TIMEOUT 120)
add_dependencies(usage_test fuji)
fuji_add_test(notify_test
  SOURCES integration/notify_test.cc
  LIBS fuji_daemon fuji_launcher GTest::gmock
  LABELS integration
  TIMEOUT 180)
add_dependencies(notify_test fuji)
