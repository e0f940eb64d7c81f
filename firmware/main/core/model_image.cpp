#include "model_image.hpp"

#include <cstring>

#include "crc32.hpp"
#include "json_writer.hpp"

namespace hil {

namespace {
uint32_t rd32(const uint8_t* p) {
    return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}
uint16_t rd16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
void wr32(uint8_t* p, uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
void wr16(uint8_t* p, uint16_t v) {
    p[0] = uint8_t(v);
    p[1] = uint8_t(v >> 8);
}
}  // namespace

bool parse_model_image(const uint8_t* region, size_t region_size, ModelImage& out, std::string& error) {
    out = ModelImage{};
    if (region == nullptr || region_size < kImageHeaderSize) {
        error = "model partition too small for a model image header (" + std::to_string(region_size) +
                " bytes)";
        return false;
    }
    if (std::memcmp(region, kImageMagic, 4) != 0) {
        bool erased = true;
        for (size_t i = 0; i < kImageHeaderSize; ++i) erased = erased && region[i] == 0xFF;
        error = erased ? "model partition is erased: no model image (flash one with `hil firmware flash-model`)"
                       : "no model image: bad magic in the model partition";
        return false;
    }
    if (crc32(region, 28) != rd32(region + 28)) {
        error = "model image header CRC mismatch: header corrupt";
        return false;
    }
    const uint16_t version = rd16(region + 4);
    if (version != kImageVersion) {
        error = "model image format version " + std::to_string(version) + " not supported (firmware reads " +
                std::to_string(kImageVersion) + ")";
        return false;
    }
    const uint16_t header_size = rd16(region + 6);
    if (header_size != kImageHeaderSize) {
        error = "model image header size " + std::to_string(header_size) + " not supported";
        return false;
    }
    const uint32_t length = rd32(region + 8);
    if (length == 0) {
        error = "model image is empty (flatbuffer length 0)";
        return false;
    }
    if (length > region_size - kImageHeaderSize) {
        error = "model image length " + std::to_string(length) + " exceeds the partition (" +
                std::to_string(region_size - kImageHeaderSize) + " bytes after the header)";
        return false;
    }
    const uint8_t* fb = region + kImageHeaderSize;
    const uint32_t want = rd32(region + 12);
    const uint32_t got = crc32(fb, length);
    if (want != got) {
        error = "model image CRC mismatch: header " + crc32_hex(want) + ", computed " + crc32_hex(got);
        return false;
    }
    out.flatbuffer = fb;
    out.length = length;
    out.crc32 = got;
    out.arena_hint = rd32(region + 16);
    return true;
}

std::vector<uint8_t> make_model_image(const uint8_t* flatbuffer, uint32_t length, uint32_t arena_hint) {
    std::vector<uint8_t> img(kImageHeaderSize + length, 0);
    std::memcpy(img.data(), kImageMagic, 4);
    wr16(img.data() + 4, kImageVersion);
    wr16(img.data() + 6, uint16_t(kImageHeaderSize));
    wr32(img.data() + 8, length);
    wr32(img.data() + 12, crc32(flatbuffer, length));
    wr32(img.data() + 16, arena_hint);
    wr32(img.data() + 28, crc32(img.data(), 28));
    if (length) std::memcpy(img.data() + kImageHeaderSize, flatbuffer, length);
    return img;
}

}  // namespace hil
