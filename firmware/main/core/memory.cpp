#include "memory.hpp"

namespace hil {

namespace {
// Measured in QEMU (tests/firmware/test_stm32_memory.py) as the heap tail newlib-nano's malloc takes for hello,
// profile, infer, an upload and run after a load: 7,016 B with 2 operators, 11,436 B with 61 (about 75 B per
// operator, 5.8 KB fixed, with a 1,024-byte input). The constants keep a margin of about 40 % and 2x.
constexpr uint32_t kReserveBase = 8192;  // line buffer, tokens, base64 chunk, replies growing, allocator overhead
constexpr uint32_t kReservePerOp = 160;  // hello's and profile's operator lists: names, JSON
constexpr uint32_t kShrinkSpare = 64;    // kept above TFLM's measured use when an arena is shrunk
uint32_t round_down16(size_t n) { return uint32_t(n & ~size_t(15)); }
}  // namespace

uint32_t protocol_reserve(uint32_t input_bytes, uint32_t output_bytes, size_t n_ops) {
    // The `run` reply holds the output in base64 (4/3) three times over (the value, the JSON, the line) and the
    // JSON string may double while it grows: 6x the output. The upload holds the input once more.
    const uint64_t total = uint64_t(kReserveBase) + input_bytes + 6ull * output_bytes + uint64_t(kReservePerOp) * n_ops;
    return total > 0xFFFFFFFFull ? 0xFFFFFFFFu : uint32_t(total);
}

uint32_t load_reserve(uint32_t input_bytes, uint32_t output_bytes, size_t n_ops) {
    // the device's copy of the input; the operator names (device and runner) and the profiler's events
    const uint64_t load = 1024ull + input_bytes + 64ull * n_ops;
    const uint64_t total = load + protocol_reserve(input_bytes, output_bytes, n_ops);
    return total > 0xFFFFFFFFull ? 0xFFFFFFFFu : uint32_t(total);
}

uint32_t fit_arena(uint32_t wanted, size_t largest_block, bool shares_heap, uint32_t reserve, std::string& error) {
    const size_t keep = shares_heap ? reserve : 0;
    const size_t room = largest_block > keep ? largest_block - keep : 0;
    const uint32_t bytes = wanted <= room ? wanted : round_down16(room);
    if (bytes < kMinArenaBytes) {
        error = "the heap cannot hold a tensor arena: its largest free block is " + std::to_string(largest_block) +
                " bytes" + (shares_heap ? " and the protocol keeps " + std::to_string(reserve) : std::string()) +
                "; the model asks for " + std::to_string(wanted);
        return 0;
    }
    return bytes;
}

uint32_t shrink_arena(uint32_t configured, uint32_t used, size_t deficit) {
    const uint64_t floor = uint64_t(used) + kShrinkSpare;
    if (deficit >= configured || uint64_t(configured) - deficit < floor) return 0;
    const uint64_t bytes = (uint64_t(configured) - deficit) & ~uint64_t(15);  // down: the whole deficit back
    return bytes < floor ? 0 : uint32_t(bytes);
}

}  // namespace hil
