# Jobs touch only what they may, end to end (real fujid, fuji-agent, fuji-rank and CLI): paths
# outside an agent's roots refused before any rank starts, links planted at the names it creates,
# the ranks of an agent started as root unprivileged.
if(FUJI_WITH_TORCH)
  fuji_add_test(agent_security_test SOURCES integration/agent_security_test.cc LIBS fuji_launcher
    LABELS integration TIMEOUT 600)
  add_dependencies(agent_security_test fuji fujid fuji-agent fuji-rank)
endif()
