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

# netio3_install_no_system_rpath(TARGET DESTINATION COMPONENT): after install(TARGETS TARGET ...)
# into DESTINATION (relative to the prefix), removes the installed file's RPATH when the prefix is
# /usr (the Debian packages of cmake/Netio3Packaging.cmake, or `cmake --install --prefix /usr`):
# there the dynamic linker finds the libraries by itself, and Debian does not allow an RPATH.
# Decided when installing, from the prefix installed to; other prefixes keep INSTALL_RPATH
# ($ORIGIN-relative, so that the installation can be moved).
function(netio3_install_no_system_rpath target destination component)
  install(CODE "if(CMAKE_INSTALL_PREFIX MATCHES \"^/usr/?$\")
  file(RPATH_REMOVE FILE \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${destination}/$<TARGET_FILE_NAME:${target}>\")
endif()" COMPONENT ${component})
endfunction()
