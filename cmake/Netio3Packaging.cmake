# Debian packages with CPack (scripts/package runs `cpack` in the release build; docs/packaging.md):
#   libnetio3       the install component Runtime: the shared libraries libnetio3.so.0 and libibmsg.so.0
#   libnetio3-dev   Development: headers, development links, static libibmsg.a, CMake package,
#                   pkg-config files
#   netio3-tools    Tools: netio3-bench, netio3-cat, ibmsg-send, ibmsg-recv
# Installed under /usr; dependencies on other packages computed from the binaries by dpkg-shlibdeps
# (Debian: dpkg-dev); versions from project(VERSION). Included by the top-level CMakeLists.txt only
# when netio3 is the top-level project.

set(NETIO3_DEB_MAINTAINER "netio3 maintainers <maintainers@users.noreply.r-seed-9e7293a9.example>"
    CACHE STRING "The Maintainer field of the Debian packages")

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME netio3)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
# Each package's synopsis is the first line of its component's description below. CPack puts
# CPACK_PACKAGE_DESCRIPTION_SUMMARY before it unless the summary is CPack's default, "NAME built
# using CMake" (CPackDeb.cmake): the default, so that it does not.
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${CMAKE_PROJECT_NAME} built using CMake")
set(CPACK_PACKAGE_DIRECTORY ${PROJECT_BINARY_DIR}/packages)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_INSTALL_PREFIX /usr)
# Installs with DESTDIR and CMAKE_INSTALL_PREFIX=/usr, so that the install-time steps that depend on
# the prefix (netio3_install_no_system_rpath, ibmsg.pc) see /usr.
set(CPACK_SET_DESTDIR ON)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL Runtime Development)
if(TARGET netio3-bench OR TARGET netio3-cat OR TARGET ibmsg-send)
  list(APPEND CPACK_COMPONENTS_ALL Tools)
endif()
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${NETIO3_DEB_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# The tools need libnetio3.so.0 and libibmsg.so.0 of this build (not yet installed): dpkg-shlibdeps
# finds them here; the dependency on libnetio3 itself is declared below.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS ${PROJECT_BINARY_DIR} ${PROJECT_BINARY_DIR}/src/ibmsg)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
# shlibs: "libnetio3 (= VERSION)": before 1.0 the ABI may change with any version.
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY "=")

set(exact_version "${PROJECT_VERSION}")
set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME libnetio3)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION libs)
set(CPACK_COMPONENT_RUNTIME_DESCRIPTION "fast message transport over TCP and RDMA (shared libraries)
netio3 moves messages between hosts over TCP or RDMA (libfabric).
This package holds the shared libraries: libnetio3 (the C++20
NetworkBackend API and the frontend) and libibmsg (the C API of
the original ibmsg library).")

set(dev_depends "libnetio3 (= ${exact_version})")
# Static builds link libfabric into libnetio3.a (netio3.pc and ibmsg.pc: Requires.private
# libfabric); shared builds load it through the module, and nothing built against them links it.
if(TARGET netio3_libfabric_deps AND NOT TARGET netio3-libfabric)
  string(APPEND dev_depends ", libfabric-dev")
endif()
if(TARGET ibmsg)
  string(APPEND dev_depends ", libibverbs-dev, librdmacm-dev") # ibmsg.pc, libibmsg.a; ibmsg.h includes rdma_cma.h
endif()
set(CPACK_DEBIAN_DEVELOPMENT_PACKAGE_NAME libnetio3-dev)
set(CPACK_DEBIAN_DEVELOPMENT_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_DEVELOPMENT_PACKAGE_DEPENDS "${dev_depends}")
set(CPACK_COMPONENT_DEVELOPMENT_DESCRIPTION "fast message transport over TCP and RDMA (development files)
netio3 moves messages between hosts over TCP or RDMA (libfabric).
This package holds the headers (netio3/*.hpp, ibmsg.h), the CMake
package (find_package(netio3): netio3::netio3, netio3::ibmsg), the
pkg-config files netio3.pc and ibmsg.pc, and the static libibmsg.a.")

set(CPACK_DEBIAN_TOOLS_PACKAGE_NAME netio3-tools)
set(CPACK_DEBIAN_TOOLS_PACKAGE_SECTION net)
set(CPACK_DEBIAN_TOOLS_PACKAGE_DEPENDS "libnetio3 (= ${exact_version})")
set(CPACK_COMPONENT_TOOLS_DESCRIPTION "fast message transport over TCP and RDMA (tools)
netio3 moves messages between hosts over TCP or RDMA (libfabric).
This package holds netio3-bench (throughput and latency between two
processes), netio3-cat (publish and subscribe by hand) and the ibmsg
example programs ibmsg-send and ibmsg-recv.")

# The dynamic linker's cache is refreshed by dpkg's ldconfig trigger. CPack would otherwise write
# postinst and postrm scripts that call ldconfig themselves; these replace them and do nothing else.
set(packaging_dir ${PROJECT_BINARY_DIR}/packaging)
file(WRITE ${packaging_dir}/triggers "activate-noawait ldconfig\n")
foreach(script postinst postrm)
  file(WRITE ${packaging_dir}/${script} "#!/bin/sh\n# The ldconfig trigger (see triggers) refreshes the linker cache.\nset -e\nexit 0\n")
  file(CHMOD ${packaging_dir}/${script} FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ
       GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
endforeach()
set(CPACK_DEBIAN_RUNTIME_PACKAGE_CONTROL_EXTRA ${packaging_dir}/triggers ${packaging_dir}/postinst
    ${packaging_dir}/postrm)

# /usr/share/doc/PACKAGE/copyright and changelog.gz in each package. No licence has been chosen for
# netio3: the copyright file says so instead of naming one (docs/packaging.md).
string(TIMESTAMP changelog_date "%a, %d %b %Y %H:%M:%S +0000" UTC)
foreach(component IN LISTS CPACK_COMPONENTS_ALL)
  string(TOUPPER ${component} upper)
  set(package ${CPACK_DEBIAN_${upper}_PACKAGE_NAME})
  set(doc_dir ${packaging_dir}/doc/${package})
  file(WRITE ${doc_dir}/copyright
"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: netio3
Comment: No licence has been chosen for netio3 yet. Until its owners choose one, no licence is
 granted: this package may be used where the owners allow it, and it must not be redistributed.

Files: *
Copyright: the netio3 authors
License: none
 No licence has been chosen yet.
")
  file(WRITE ${doc_dir}/changelog
"${package} (${PROJECT_VERSION}) unstable; urgency=medium

  * netio3 ${PROJECT_VERSION}, packaged with CPack (cmake/Netio3Packaging.cmake).

 -- ${NETIO3_DEB_MAINTAINER}  ${changelog_date}
")
  execute_process(COMMAND gzip -9nf ${doc_dir}/changelog RESULT_VARIABLE gzip_status)
  if(NOT gzip_status EQUAL 0)
    message(FATAL_ERROR "netio3: gzip -9n ${doc_dir}/changelog failed")
  endif()
  install(FILES ${doc_dir}/copyright ${doc_dir}/changelog.gz DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/${package}
          COMPONENT ${component})
endforeach()

include(CPack)
