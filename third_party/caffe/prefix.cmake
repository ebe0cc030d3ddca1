# Caffe's libraries from an unpacked offline bundle (bundle.py; make setup FCN_BUNDLE=...),
# in place of the system's: included by CMakeLists.txt when FCN_PREFIX is set.
#
# FCN_PREFIX/paths.cmake (written by bundle.py when it unpacked and verified the bundle)
# names every file used here. Boost's four compiled libraries are built from the bundle's
# sources as static libraries of this build, for the Python being built against, so the
# target needs no Boost at all; the other libraries are Debian's shared ones, found at
# run time through the RPATH (DT_RPATH, which also serves the libraries they load).
include("${FCN_PREFIX}/paths.cmake")

set(boost_defs BOOST_ALL_NO_LIB BOOST_ALL_STATIC_LINK BOOST_PYTHON_STATIC_LIB
  BOOST_THREAD_USE_LIB BOOST_THREAD_POSIX)
find_package(Threads REQUIRED)
foreach(lib thread filesystem regex python)
  string(TOUPPER ${lib} LIB)
  add_library(fcn_boost_${lib} STATIC ${FCN_BOOST_${LIB}_SOURCES})
  target_include_directories(fcn_boost_${lib} SYSTEM PUBLIC ${FCN_INCLUDE_DIRS})
  target_compile_definitions(fcn_boost_${lib} PUBLIC ${boost_defs}
    PRIVATE BOOST_${LIB}_SOURCE BOOST_THREAD_BUILD_LIB)
  target_compile_options(fcn_boost_${lib} PRIVATE -w)
endforeach()
target_link_libraries(fcn_boost_python PUBLIC Python3::Module)
target_link_libraries(fcn_boost_thread PUBLIC Threads::Threads)

set(FCN_DEPS fcn_boost_python fcn_boost_thread fcn_boost_filesystem fcn_boost_regex
  ${FCN_LIBRARIES})
set(FCN_DEP_INCLUDE_DIRS ${FCN_INCLUDE_DIRS})
# protoc runs at build time and loads the bundle's libprotoc/libprotobuf.
string(REPLACE ";" ":" fcn_ld_path "${FCN_LIBRARY_DIRS}")
set(FCN_PROTOC_COMMAND ${CMAKE_COMMAND} -E env "LD_LIBRARY_PATH=${fcn_ld_path}")
set(FCN_RPATH ${FCN_LIBRARY_DIRS})
# DT_RPATH rather than DT_RUNPATH: the loader then also searches it for the libraries
# that the bundle's libraries load themselves (libcurl for HDF5, libgfortran for OpenBLAS).
add_link_options(-Wl,--disable-new-dtags)
