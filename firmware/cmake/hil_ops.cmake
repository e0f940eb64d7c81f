# ops.txt -> hil_ops.inc, shared by every build of the firmware (ESP-IDF app, host build, STM32F405 port):
# one HIL_OP(NAME, AddMethod) line per operator, HIL_OP_COMPRESSION(...) for the operators that need TFLM's
# compression (TFLM_DECODE), and HIL_OP_COUNT (the op resolver's size).
#
#   include(hil_ops.cmake) then hil_generate_ops(<ops.txt> <out.inc>)
#   cmake -DOPS_FILE=<ops.txt> -DOUT=<out.inc> -P hil_ops.cmake      (script mode, e.g. for compile checks)
function(hil_generate_ops ops_file out_file)
    file(STRINGS ${ops_file} ops_lines REGEX "^[A-Z0-9_]+[ \t]+Add[A-Za-z0-9]+")
    set(ops_inc "// Generated from ops.txt by firmware/cmake/hil_ops.cmake. Do not edit.\n")
    set(ops_count 0)
    foreach(line IN LISTS ops_lines)
        string(REGEX REPLACE "^([A-Z0-9_]+)[ \t]+(Add[A-Za-z0-9]+).*" "\\1;\\2" parts "${line}")
        list(GET parts 0 name)
        list(GET parts 1 method)
        if(name STREQUAL "TFLM_DECODE")
            string(APPEND ops_inc "HIL_OP_COMPRESSION(${name}, ${method})\n")
        else()
            string(APPEND ops_inc "HIL_OP(${name}, ${method})\n")
        endif()
        math(EXPR ops_count "${ops_count} + 1")
    endforeach()
    string(APPEND ops_inc "#define HIL_OP_COUNT ${ops_count}\n")
    # Rewrite only on change, so an unchanged ops.txt does not rebuild everything.
    if(EXISTS ${out_file})
        file(READ ${out_file} old)
    endif()
    if(NOT "${old}" STREQUAL "${ops_inc}")
        file(WRITE ${out_file} "${ops_inc}")
    endif()
endfunction()

if(CMAKE_SCRIPT_MODE_FILE AND DEFINED OPS_FILE AND DEFINED OUT)
    hil_generate_ops(${OPS_FILE} ${OUT})
endif()
