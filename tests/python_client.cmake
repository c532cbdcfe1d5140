# examples/python/fuji_client.py, a client of fujid's API in Python, against a real fujid and
# fuji-agent (python_client_test). Its stubs are generated here at build time into build/python,
# never committed: Debian's protoc (the one that makes fujid's C++ stubs) with grpc's
# grpc_python_plugin, because the protoc inside Debian's python3-grpc-tools (libprotoc 3.5.1)
# refuses proto3's `optional` (jobs.proto's after_step); examples/python/README.md says more.
find_program(FUJI_GRPC_PYTHON_PLUGIN grpc_python_plugin)
# Debian's Python, which has python3-grpcio (not a python3 earlier on PATH).
find_program(FUJI_SYSTEM_PYTHON python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(FUJI_WITH_TORCH AND FUJI_GRPC_PYTHON_PLUGIN AND FUJI_SYSTEM_PYTHON)
  set(fuji_py_stubs ${CMAKE_BINARY_DIR}/python)
  set(fuji_py_proto ${CMAKE_SOURCE_DIR}/proto/fuji/v1/jobs.proto)
  add_custom_command(
    OUTPUT ${fuji_py_stubs}/fuji/v1/jobs_pb2.py ${fuji_py_stubs}/fuji/v1/jobs_pb2_grpc.py
    COMMAND ${CMAKE_COMMAND} -E make_directory ${fuji_py_stubs}
    COMMAND ${Protobuf_PROTOC_EXECUTABLE} -I ${CMAKE_SOURCE_DIR}/proto --python_out=${fuji_py_stubs}
      --grpc_out=${fuji_py_stubs} --plugin=protoc-gen-grpc=${FUJI_GRPC_PYTHON_PLUGIN} ${fuji_py_proto}
    DEPENDS ${fuji_py_proto}
    COMMENT "Python stubs of fuji/v1/jobs.proto in ${fuji_py_stubs}")
  add_custom_target(python_client_stubs DEPENDS ${fuji_py_stubs}/fuji/v1/jobs_pb2.py
    ${fuji_py_stubs}/fuji/v1/jobs_pb2_grpc.py)
  fuji_add_test(python_client_test SOURCES integration/python_client_test.cc LIBS fuji_launcher fuji_ckpt
    LABELS integration TIMEOUT 600)
  target_compile_definitions(python_client_test PRIVATE FUJI_PY_STUBS="${fuji_py_stubs}"
    FUJI_SYSTEM_PYTHON="${FUJI_SYSTEM_PYTHON}")
  add_dependencies(python_client_test python_client_stubs fuji fujid fuji-agent fuji-rank)
endif()
