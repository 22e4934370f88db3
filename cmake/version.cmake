# Writes OUT (weft_version.h) with the source tree's git commit, for
# `weft --version`. Run at every build (add_custom_target in
# CMakeLists.txt); configure_file rewrites OUT only when its text changes,
# so nothing recompiles while the commit stays the same. Outside a git
# checkout (a source archive) the commit is "unknown"; a tree with
# uncommitted changes to tracked files (but bench/results/) gets "-dirty".
execute_process(COMMAND git -C "${SRC}" rev-parse --short=7 HEAD
                OUTPUT_VARIABLE WEFT_COMMIT OUTPUT_STRIP_TRAILING_WHITESPACE
                RESULT_VARIABLE rc ERROR_QUIET)
if(NOT rc EQUAL 0 OR WEFT_COMMIT STREQUAL "")
  set(WEFT_COMMIT "unknown")
else()
  # bench/results/ is excluded: the benchmarks append their records there
  execute_process(COMMAND git -C "${SRC}" diff-index --quiet HEAD -- . ":(exclude)bench/results"
                  RESULT_VARIABLE dirty ERROR_QUIET)
  if(NOT dirty EQUAL 0)
    string(APPEND WEFT_COMMIT "-dirty")
  endif()
endif()
configure_file("${SRC}/cmake/weft_version.h.in" "${OUT}" @ONLY)
