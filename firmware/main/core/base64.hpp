// Standard base64 (RFC 4648, with padding): the encoding of `data` chunks and `run` outputs.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace hil {

std::string base64_encode(const uint8_t* data, size_t len);

// Decode padded standard base64; returns false (and leaves `out` unspecified) on any invalid input:
// a length not a multiple of 4, a character outside the alphabet, misplaced padding (bits under the padding are
// ignored, as Python's b64decode(validate=True) does).
bool base64_decode(const char* text, size_t len, std::vector<uint8_t>& out);

}  // namespace hil
