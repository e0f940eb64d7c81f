#include "op_profile.hpp"

#include <new>

#include "stats.hpp"

namespace hil {

bool OpProfile::reserve(size_t events) {
    events_.reset(new (std::nothrow) Event[events]);
    capacity_ = events_ ? events : 0;
    clear();
    return events_ != nullptr;
}

uint32_t OpProfile::begin(const char* tag, uint32_t cycles) {
    if (n_ >= capacity_) {
        ++dropped_;
        return UINT32_MAX;
    }
    events_[n_] = {tag, cycles, cycles};
    return uint32_t(n_++);
}

void OpProfile::end(uint32_t handle, uint32_t cycles) {
    if (handle < n_) events_[handle].end = cycles;
}

bool OpProfile::timings(uint32_t cpu_hz, std::vector<OpTiming>& out, std::string& error) const {
    out.clear();
    if (dropped_) {
        error = "profile recorded " + std::to_string(n_) + " operator events and dropped " + std::to_string(dropped_) +
                " (the buffer holds " + std::to_string(capacity_) + "): per-operator times would be incomplete";
        return false;
    }
    out.reserve(n_);
    for (size_t i = 0; i < n_; ++i)
        out.push_back({events_[i].tag ? events_[i].tag : "?", cycles_to_us(events_[i].end - events_[i].start, cpu_hz)});
    return true;
}

}  // namespace hil
