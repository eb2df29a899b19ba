# Run by `cmake --install`: configures the systemd units of examples/cli/systemd, so that
# ExecStart= names the CLI where this install puts it (CMAKE_INSTALL_PREFIX is the
# install's own here, `--prefix` included; DESTDIR is added by file(INSTALL)), and
# installs them. The top-level CMakeLists.txt sets the MEVB_UNITS_* variables.
if(IS_ABSOLUTE "${MEVB_UNITS_BINDIR}")
  set(BINDIR "${MEVB_UNITS_BINDIR}")
else()
  set(BINDIR "${CMAKE_INSTALL_PREFIX}/${MEVB_UNITS_BINDIR}")
endif()
if(IS_ABSOLUTE "${MEVB_UNITS_DESTINATION}")
  set(unit_dir "${MEVB_UNITS_DESTINATION}")
else()
  set(unit_dir "${CMAKE_INSTALL_PREFIX}/${MEVB_UNITS_DESTINATION}")
endif()
set(units)
foreach(unit IN LISTS MEVB_UNITS_CONFIGURED)
  configure_file("${MEVB_UNITS_SOURCE_DIR}/${unit}.in" "${MEVB_UNITS_BINARY_DIR}/${unit}" @ONLY)
  list(APPEND units "${MEVB_UNITS_BINARY_DIR}/${unit}")
endforeach()
foreach(unit IN LISTS MEVB_UNITS_PLAIN)
  list(APPEND units "${MEVB_UNITS_SOURCE_DIR}/${unit}")
endforeach()
file(INSTALL ${units} DESTINATION "${unit_dir}"
  FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
