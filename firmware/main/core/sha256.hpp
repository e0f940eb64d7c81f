// SHA-256 (FIPS 180-4), incremental: `hello` reports the model's digest, as the host's hashlib computes it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace hil {

class Sha256 {
public:
    Sha256();
    void update(const uint8_t* data, size_t len);
    // Finish and return the 64-character lowercase hex digest; the object must not be updated afterwards.
    std::string hexdigest();

private:
    void block(const uint8_t* p);
    uint32_t h_[8];
    uint8_t buf_[64];
    size_t buf_len_ = 0;
    uint64_t total_ = 0;
};

std::string sha256_hex(const uint8_t* data, size_t len);

}  // namespace hil
