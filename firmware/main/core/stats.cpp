#include "stats.hpp"

#include <cmath>

namespace hil {

LatencyStats latency_stats(const std::vector<uint32_t>& samples_us) {
    LatencyStats s;
    if (samples_us.empty()) return s;
    double sum = 0;
    s.min_us = samples_us[0];
    s.max_us = samples_us[0];
    for (uint32_t v : samples_us) {
        sum += v;
        if (v < s.min_us) s.min_us = v;
        if (v > s.max_us) s.max_us = v;
    }
    s.mean_us = sum / double(samples_us.size());
    double sq = 0;
    for (uint32_t v : samples_us) {
        double d = double(v) - s.mean_us;
        sq += d * d;
    }
    s.std_us = std::sqrt(sq / double(samples_us.size()));
    return s;
}

uint32_t cycles_to_us(uint64_t cycles, uint32_t cpu_hz) {
    if (cpu_hz == 0) return 0;
    return static_cast<uint32_t>((cycles * 1000000ull + cpu_hz / 2) / cpu_hz);
}

}  // namespace hil
