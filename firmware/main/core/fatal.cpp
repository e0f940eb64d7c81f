#include "fatal.hpp"

namespace hil {

size_t format_fatal(char* buf, size_t size, const char* reason) {
    static const char kHead[] = "hil-fatal ";
    if (size < sizeof kHead + 2) return 0;
    size_t n = 0;
    for (const char* p = kHead; *p; ++p) buf[n++] = *p;
    for (const char* p = reason ? reason : "?"; *p && n + 2 < size; ++p)
        buf[n++] = (*p == '\r' || *p == '\n') ? ' ' : *p;
    buf[n++] = '\r';
    buf[n++] = '\n';
    return n;
}

void write_fatal(Serial& serial, const char* reason) {
    char line[160];
    serial.write(line, format_fatal(line, sizeof line, reason));
}

}  // namespace hil
