// The model image written into the `model` partition: a 32-byte header followed by the flatbuffer.
//
// All fields little-endian (hil/firmware.py `pack_image` writes the same layout):
//   0  char[4] magic "HILM"
//   4  u16     format version (1)
//   6  u16     header size in bytes (32); the flatbuffer starts here (16-byte aligned)
//   8  u32     flatbuffer length in bytes
//  12  u32     CRC32 (IEEE, zlib.crc32) of the flatbuffer
//  16  u32     arena size hint in bytes (the factory's measured arena plus a margin; 0 = firmware default)
//  20  u32     flags (0; reserved)
//  24  u32     reserved (0)
//  28  u32     CRC32 of header bytes 0..27
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace hil {

constexpr uint8_t kImageMagic[4] = {'H', 'I', 'L', 'M'};
constexpr uint16_t kImageVersion = 1;
constexpr size_t kImageHeaderSize = 32;

struct ModelImage {
    const uint8_t* flatbuffer = nullptr;  // points into the validated image
    uint32_t length = 0;
    uint32_t crc32 = 0;
    uint32_t arena_hint = 0;
};

// Validate `region` (the mapped partition, or an embedded image) and fill `out`. On failure return false
// with a one-line reason in `error` ("model partition is erased: no model image", "model image CRC
// mismatch: header 1a2b3c4d, computed 5e6f7a8b", ...). Never reads outside `region_size` bytes.
bool parse_model_image(const uint8_t* region, size_t region_size, ModelImage& out, std::string& error);

// Build an image in memory (host tests and the host executable's default model).
std::vector<uint8_t> make_model_image(const uint8_t* flatbuffer, uint32_t length, uint32_t arena_hint);

}  // namespace hil
