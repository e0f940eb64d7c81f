// Latency statistics of an `infer` run: mean, min, max and the population standard deviation.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace hil {

struct LatencyStats {
    double mean_us = 0;
    uint32_t min_us = 0;
    uint32_t max_us = 0;
    double std_us = 0;  // population standard deviation (divide by N), as the protocol specifies
};

// Two-pass computation (exact for the few hundred samples an `infer` produces); empty input gives zeros.
LatencyStats latency_stats(const std::vector<uint32_t>& samples_us);

// Cycle count difference to microseconds, rounded to nearest, at `cpu_hz`.
uint32_t cycles_to_us(uint64_t cycles, uint32_t cpu_hz);

}  // namespace hil
