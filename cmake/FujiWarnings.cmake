# fuji_warnings(target): warnings as errors on fuji's own code.
function(fuji_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror -Wno-unused-parameter)
endfunction()
