// The last line a board prints before it stops for good (out of memory, abort(), a fault): `hil-fatal REASON`.
// Written without allocating (the heap may be gone), so the host reports the reason at once instead of
// waiting out a reply that never comes (docs/protocol.md, "Fatal stops").
#pragma once
#include <cstddef>

#include "interfaces.hpp"

namespace hil {

// "hil-fatal REASON\r\n" into `buf` (REASON cut to fit); the line's length.
size_t format_fatal(char* buf, size_t size, const char* reason);
// Writes that line to `serial` from a stack buffer.
void write_fatal(Serial& serial, const char* reason);

}  // namespace hil
