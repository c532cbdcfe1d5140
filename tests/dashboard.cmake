# fujid's web dashboard (daemon/http/dashboard*): a real fujid and fuji-agent, and Debian's
# headless chromium driven over the DevTools protocol (tests/dashboard/cdp.mjs, node 20) that logs
# in, reads the pages and the charts' data and checks them against the CLI and the database. Its
# screenshots are kept in build/test-artifacts/dashboard/. Skipped (77) without chromium or node.
if(FUJI_WITH_TORCH)
  fuji_add_test(dashboard_test SOURCES integration/dashboard_test.cc LIBS fuji_launcher
    LABELS integration TIMEOUT 600)
  set_tests_properties(dashboard_test PROPERTIES SKIP_RETURN_CODE 77)
  add_dependencies(dashboard_test fuji fujid fuji-agent fuji-rank)
endif()
fuji_add_test(dashboard_html_test SOURCES dashboard/dashboard_html_test.cc LIBS fuji_http LABELS unit)
