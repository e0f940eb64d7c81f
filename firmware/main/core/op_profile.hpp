// Per-operator timing of one invoke, for `profile`: one event per operator the interpreter runs, in a buffer
// sized to the model when it loads (not a fixed 512 events: 6 KB of heap on a 128 KB part).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "interfaces.hpp"

namespace hil {

class OpProfile {
public:
    // Room for `events` events (the model's operator count plus a margin for nested subgraphs); false when
    // the heap cannot hold them.
    bool reserve(size_t events);
    void clear() { n_ = dropped_ = 0; }
    // An event opened at `cycles`; events past the buffer are counted as dropped, never written.
    uint32_t begin(const char* tag, uint32_t cycles);
    void end(uint32_t handle, uint32_t cycles);
    size_t size() const { return n_; }
    size_t capacity() const { return capacity_; }
    size_t dropped() const { return dropped_; }
    // The recorded events as microseconds at `cpu_hz`; false with the reason when events were dropped.
    bool timings(uint32_t cpu_hz, std::vector<OpTiming>& out, std::string& error) const;

private:
    struct Event {
        const char* tag;
        uint32_t start, end;
    };
    std::unique_ptr<Event[]> events_;
    size_t capacity_ = 0, n_ = 0, dropped_ = 0;
};

}  // namespace hil
