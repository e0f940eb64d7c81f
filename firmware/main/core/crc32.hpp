// IEEE 802.3 CRC32 (the same value as Python's zlib.crc32), incremental.
#pragma once
#include <cstddef>
#include <cstdint>

namespace hil {

// Continue a CRC32 over `len` bytes; start with crc = 0, as zlib.crc32(data, crc).
uint32_t crc32_update(uint32_t crc, const uint8_t* data, size_t len);

inline uint32_t crc32(const uint8_t* data, size_t len) { return crc32_update(0, data, len); }

}  // namespace hil
