#include "crc32.hpp"

namespace hil {

namespace {
// Table-driven, reflected polynomial 0xEDB88320; built once on first use (1 KB of RAM).
const uint32_t* table() {
    static uint32_t t[256];
    static bool ready = false;
    if (!ready) {
        for (uint32_t i = 0; i < 256; ++i) {
            uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = (c & 1u) ? (0xEDB88320u ^ (c >> 1)) : (c >> 1);
            t[i] = c;
        }
        ready = true;
    }
    return t;
}
}  // namespace

uint32_t crc32_update(uint32_t crc, const uint8_t* data, size_t len) {
    const uint32_t* t = table();
    crc = ~crc;
    for (size_t i = 0; i < len; ++i) crc = t[(crc ^ data[i]) & 0xFFu] ^ (crc >> 8);
    return ~crc;
}

}  // namespace hil
