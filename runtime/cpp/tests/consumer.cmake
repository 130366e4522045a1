# Install the runtime into a scratch prefix, then configure and build examples/cpp against it with
# find_package(fsqdeploy): the package config works for a project outside this tree.
file(REMOVE_RECURSE ${WORK})
function(step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT code EQUAL 0)
    message(FATAL_ERROR "failed: ${ARGN}\n${out}\n${err}")
  endif()
endfunction()
step(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK}/prefix)
step(${CMAKE_COMMAND} -S ${EXAMPLES} -B ${WORK}/build -G ${GENERATOR} -DCMAKE_CXX_COMPILER=${CXX}
     -DCMAKE_PREFIX_PATH=${WORK}/prefix)
step(${CMAKE_COMMAND} --build ${WORK}/build)
if(NOT EXISTS ${WORK}/build/fsq-cpp AND NOT EXISTS ${WORK}/build/fsq-cpp.exe)
  message(FATAL_ERROR "fsq-cpp was not built against the installed package")
endif()
message(STATUS "examples/cpp built against find_package(fsqdeploy) from ${WORK}/prefix")
