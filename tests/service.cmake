# fuji as a service end to end: real fujid, fuji-agent and fuji-rank processes on loopback.
if(FUJI_WITH_TORCH)
  fuji_add_test(service_test SOURCES integration/service_test.cc LIBS fuji_launcher
    LABELS integration TIMEOUT 900)
  add_dependencies(service_test fuji fujid fuji-agent fuji-rank)
  # Fine-tuning through the daemon: a 2-rank gang on one agent, a rank killed and the job retried.
  fuji_add_test(service_finetune_test SOURCES integration/service_finetune_test.cc LIBS fuji_launcher
    LABELS integration TIMEOUT 600)
  add_dependencies(service_finetune_test fuji fujid fuji-agent fuji-rank)
endif()
# Gangs across agents on one machine: two agents with --advertise-addr 127.0.0.1 run one fine-tune.
if(FUJI_WITH_TORCH)
  fuji_add_test(gang_placement_test SOURCES integration/gang_placement_test.cc LIBS fuji_launcher
    LABELS integration TIMEOUT 600)
  add_dependencies(gang_placement_test fuji fujid fuji-agent fuji-rank)
endif()
# Who may do what: tokens on every RPC, owners, TLS, enrolled agents bound to their leases.
if(FUJI_WITH_TORCH)
  fuji_add_test(auth_test SOURCES integration/auth_test.cc LIBS fuji_launcher fuji_rpc fuji_proto
    LABELS integration TIMEOUT 600)
  add_dependencies(auth_test fuji fujid fuji-agent fuji-rank)
endif()
# The seed study in one command, and reports, from the daemon's database.
if(FUJI_WITH_TORCH)
  fuji_add_test(study_test SOURCES integration/study_test.cc LIBS fuji_launcher
    LABELS integration TIMEOUT 600)
  add_dependencies(study_test fuji fujid fuji-agent fuji-rank)
endif()
# Serving: warm models kept by the agent, tokens streamed through fujid, serving jobs.
if(FUJI_WITH_TORCH)
  fuji_add_test(serving_test SOURCES integration/serving_test.cc LIBS fuji_launcher fuji_rpc fuji_proto
    LABELS integration TIMEOUT 600)
  add_dependencies(serving_test fuji fujid fuji-agent fuji-rank)
endif()
