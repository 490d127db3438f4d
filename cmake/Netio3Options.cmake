# Per-target settings. No global flags: every netio3 target calls netio3_target_defaults().

function(netio3_target_defaults target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX,C>:-Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion>
    $<$<BOOL:${NETIO3_WARNINGS_AS_ERRORS}>:-Werror>)
  if(NETIO3_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=${NETIO3_SANITIZE} -fno-omit-frame-pointer
                                             -fno-sanitize-recover=all)
    target_link_options(${target} PRIVATE -fsanitize=${NETIO3_SANITIZE})
  endif()
endfunction()
