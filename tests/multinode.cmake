# fuji across nodes on one machine (tests/multinode/multinode.py): fujid and two fuji-agents, each
# in its own network and mount namespace joined by a bridge, run 4-rank fine-tunes whose ranks span
# both agents: the losses and weights of one agent's run, a --save-to not shared refused, a cut
# link and a killed agent survived. Needs root (namespaces, a bridge, ranks run as the user fuji);
# exits 77 (skipped) without.
if(FUJI_WITH_TORCH AND NOT FUJI_RANK_ONLY)
  find_program(FUJI_PYTHON3 python3 REQUIRED)
  add_test(NAME multinode_test
    COMMAND ${FUJI_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/multinode/multinode.py --bin ${CMAKE_BINARY_DIR}/bin
      --work-dir ${CMAKE_BINARY_DIR}/test_scratch/multinode)
  set_tests_properties(multinode_test PROPERTIES LABELS integration TIMEOUT 900 PROCESSORS 2
    SKIP_RETURN_CODE 77 ENVIRONMENT "OMP_WAIT_POLICY=PASSIVE")
endif()
