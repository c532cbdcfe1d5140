# fuji_check_torch_free(target...): fails the configure when any of the targets reaches libtorch
# through its link closure. fuji_check_homes() (below) checks which part of fuji links which.
#
# The rule (docs/architecture.md): the fuji CLI, fujid and fuji-agent never link libtorch; only
# fuji-rank does, and the agent and the CLI drive it through the process boundary. A torch-free
# program starts in milliseconds and builds where libtorch is absent, so a library they use must not
# quietly pick it up (e.g. by linking fuji_engine for one helper).
#
# The walk follows LINK_LIBRARIES (every link item, PRIVATE ones too) and INTERFACE_LINK_LIBRARIES,
# recursively, through aliases and generator expressions (counted whatever their condition). A link
# item is torch when it is one of libtorch's imported targets (torch, torch_cpu, torch_cuda,
# torch_library, c10, c10_cuda, caffe2_nvrtc, ...) or a path or flag naming libtorch*, libc10* or
# libcaffe2*. (Not every entry of TORCH_LIBRARIES: on a CUDA build it also lists libraries such as
# libcudart that are no part of libtorch.) Targets created in another directory's scope (e.g.
# SQLite::SQLite3) are not visible here and are taken as leaves; none of them is libtorch.
# Call it after every add_subdirectory, from the top-level CMakeLists.txt.

# Whether one link item (a target name, a library path or a linker flag) is libtorch.
function(_fuji_is_torch item out)
  set(torch FALSE)
  if(item MATCHES "^(torch|c10|caffe2)(_[A-Za-z0-9_]+)?$" OR item MATCHES "(^|[/ ])lib(torch|c10|caffe2)[^/ ]*\\.(so|a|dylib)")
    set(torch TRUE)
  endif()
  set(${out} ${torch} PARENT_SCOPE)
endfunction()

# The link items of a target: what it links (LINK_LIBRARIES, for targets built here) and what it
# passes on (INTERFACE_LINK_LIBRARIES), generator expressions unwrapped to their value.
function(_fuji_link_items target out)
  get_target_property(type ${target} TYPE)
  get_target_property(imported ${target} IMPORTED)
  set(raw)
  if(NOT imported AND NOT type STREQUAL "INTERFACE_LIBRARY")
    get_target_property(direct ${target} LINK_LIBRARIES)
    if(direct)
      list(APPEND raw ${direct})
    endif()
  endif()
  get_target_property(interface ${target} INTERFACE_LINK_LIBRARIES)
  if(interface)
    list(APPEND raw ${interface})
  endif()
  set(items)
  foreach(item IN LISTS raw)
    # $<LINK_ONLY:x>, $<BUILD_INTERFACE:x>, $<$<CONFIG:Debug>:x>, nested: keep x.
    while(item MATCHES "^\\$<(.*):([^:]*)>$")
      set(item "${CMAKE_MATCH_2}")
    endwhile()
    # target_link_libraries from another directory brackets its items with ::@(dir) markers.
    if(item STREQUAL "" OR item MATCHES "^::@")
      continue()
    endif()
    string(REGEX REPLACE "::@\\(.*\\)$" "" item "${item}")
    list(APPEND items "${item}")
  endforeach()
  list(REMOVE_DUPLICATES items)
  set(${out} ${items} PARENT_SCOPE)
endfunction()

# The first link item in root's link closure for which predicate(item out) sets out true, as the
# chain "root -> ... -> item" in ${out_chain}; "" when there is none. Breadth-first; parent_<item>
# remembers how the walk got to an item.
function(_fuji_find_in_closure root predicate out_chain)
  set(queue ${root})
  set(seen ${root})
  while(queue)
    list(POP_FRONT queue current)
    set(name ${current})
    if(TARGET ${current})
      get_target_property(aliased ${current} ALIASED_TARGET)
      if(aliased)
        set(name ${aliased})
      endif()
    endif()
    if(NOT current STREQUAL root)
      cmake_language(CALL ${predicate} "${name}" found)
      if(found)
        set(chain "${current}")
        set(at "${current}")
        while(DEFINED parent_${at})
          set(at "${parent_${at}}")
          set(chain "${at} -> ${chain}")
        endwhile()
        set(${out_chain} "${chain}" PARENT_SCOPE)
        return()
      endif()
    endif()
    if(NOT TARGET ${name})
      continue()  # a library path, a flag, or a target outside this scope: a leaf
    endif()
    _fuji_link_items(${name} items)
    foreach(item IN LISTS items)
      if(NOT item IN_LIST seen)
        list(APPEND seen "${item}")
        list(APPEND queue "${item}")
        set(parent_${item} "${current}")
      endif()
    endforeach()
  endwhile()
  set(${out_chain} "" PARENT_SCOPE)
endfunction()

function(fuji_check_torch_free)
  foreach(root IN LISTS ARGN)
    if(NOT TARGET ${root})
      continue()  # not built in this configuration (e.g. FUJI_RANK_ONLY)
    endif()
    _fuji_find_in_closure(${root} _fuji_is_torch chain)
    if(chain)
      message(FATAL_ERROR
        "fuji: target ${root} must not link libtorch, but its link closure reaches it:\n"
        "  ${chain}\n"
        "The fuji CLI, fujid and fuji-agent (and every library they use) are torch-free: engine "
        "work runs in fuji-rank, reached through the process boundary (worker/launcher). Move "
        "what the torch-free side needs into a torch-free library (see docs/architecture.md).")
    endif()
  endforeach()
endfunction()

# A target's home: the top directory that defines it (SOURCE_DIR), e.g. "lib" for lib/plan; "" for
# an imported target or anything that is not a target.
function(_fuji_home target out)
  set(home "")
  if(TARGET ${target})
    get_target_property(imported ${target} IMPORTED)
    if(NOT imported)
      get_target_property(dir ${target} SOURCE_DIR)
      file(RELATIVE_PATH rel "${CMAKE_SOURCE_DIR}" "${dir}")
      string(REGEX MATCH "^[^/]+" home "${rel}")
    endif()
  endif()
  set(${out} "${home}" PARENT_SCOPE)
endfunction()

# Whether item is a target whose home matches the regex ${fuji_forbidden_homes}, which the caller
# (fuji_check_homes) sets: a predicate for _fuji_find_in_closure takes only the item.
function(_fuji_in_forbidden_home item out)
  _fuji_home("${item}" home)
  set(found FALSE)
  if(home MATCHES "^(${fuji_forbidden_homes})$")
    set(found TRUE)
  endif()
  set(${out} ${found} PARENT_SCOPE)
endfunction()

# The targets defined in dir and its subdirectories.
function(_fuji_targets_under dir out)
  get_property(targets DIRECTORY "${dir}" PROPERTY BUILDSYSTEM_TARGETS)
  get_property(subdirs DIRECTORY "${dir}" PROPERTY SUBDIRECTORIES)
  foreach(sub IN LISTS subdirs)
    _fuji_targets_under("${sub}" more)
    list(APPEND targets ${more})
  endforeach()
  set(${out} ${targets} PARENT_SCOPE)
endfunction()

# fuji_check_homes(): fails the configure when a library of lib/ links one of worker/, daemon/,
# client/ or proto/, or a library of daemon/ links one of worker/ or client/ (docs/architecture.md:
# lib/ is shared by every program and depends on nothing else of fuji's; fujid speaks to ranks
# only through agents). A target's home is the directory that defines it (SOURCE_DIR).
function(fuji_check_homes)
  # home:forbidden homes
  foreach(rule "lib:worker|daemon|client|proto" "daemon:worker|client")
    string(REPLACE ":" ";" rule "${rule}")
    list(GET rule 0 home)
    list(GET rule 1 fuji_forbidden_homes)
    string(REPLACE "|" "/, " forbidden "${fuji_forbidden_homes}/")
    if(NOT IS_DIRECTORY "${CMAKE_SOURCE_DIR}/${home}")
      continue()
    endif()
    get_property(added DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY SUBDIRECTORIES)
    if(NOT "${CMAKE_SOURCE_DIR}/${home}" IN_LIST added)
      continue()  # not configured (e.g. FUJI_RANK_ONLY leaves daemon/ out)
    endif()
    _fuji_targets_under("${CMAKE_SOURCE_DIR}/${home}" roots)
    foreach(root IN LISTS roots)
      get_target_property(type ${root} TYPE)
      if(type STREQUAL "UTILITY")
        continue()
      endif()
      _fuji_find_in_closure(${root} _fuji_in_forbidden_home chain)
      if(chain)
        message(FATAL_ERROR
          "fuji: target ${root} (${home}/) must not link anything from ${forbidden}, but it does:\n"
          "  ${chain}\n"
          "See docs/architecture.md for which part of fuji may use which.")
      endif()
    endforeach()
  endforeach()
endfunction()
