// Host fakes of the platform interfaces: a cycle counter advanced by the fake model, a marker pin that
// records its edges, a deterministic "model" whose output is a checkable function of its input.
#pragma once
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "core/interfaces.hpp"

namespace hil::host {

class FakeClock : public Clock {
public:
    explicit FakeClock(uint32_t hz) : hz_(hz) {}
    uint32_t cycles() override { return cycles_; }
    uint32_t cpu_hz() override { return hz_; }
    void sleep_ms(uint32_t ms) override {
        advance_us(uint64_t(ms) * 1000);
        slept_ms += ms;
    }
    void advance_us(uint64_t us) { cycles_ = uint32_t(cycles_ + us * (hz_ / 1000000u)); }
    void set_cycles(uint32_t c) { cycles_ = c; }
    uint64_t slept_ms = 0;

private:
    uint32_t hz_;
    uint32_t cycles_ = 0;
};

// Records "H"/"L" edges and the invokes between them ("I"), so tests can check the marker brackets
// exactly the timed invokes.
class FakeMarker : public MarkerPin {
public:
    explicit FakeMarker(int gpio) : gpio_(gpio) {}
    void set(bool high) override {
        if (high != high_) events.push_back(high ? 'H' : 'L');
        high_ = high;
    }
    int gpio() const override { return gpio_; }
    bool high() const { return high_; }
    std::string events;

private:
    int gpio_;
    bool high_ = false;
};

struct FakeModelSpec {
    TensorInfo input{{1, 32, 32, 1}, "int8", 0.00392157f, -128, 1024};
    TensorInfo output{{1, 10}, "int8", 0.00390625f, -128, 10};
    std::vector<std::string> ops{"CONV_2D", "MAX_POOL_2D", "CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED",
                                 "SOFTMAX"};
    uint32_t latency_us = 62800;  // per invoke, plus a deterministic jitter of 0..4 us
    uint32_t arena_needs = 0;     // load() fails when the arena is smaller ("arena too small")
    uint32_t arena_used = 30512;
    uint32_t fail_invoke_at = 0;  // 1-based invoke number that fails (0 = never)
};

// output[i] = (sum of input bytes + 31 * i) mod 256: any corruption of the uploaded input shows.
// With a FakeClock, each invoke advances it by spec.latency_us (+ 0..4 us); without one (the bare-metal
// port, firmware/stm32f405) the latency is what the computation really takes on the platform's clock.
class FakeRunner : public ModelRunner {
public:
    FakeRunner(FakeClock& clock, FakeMarker* marker, FakeModelSpec spec)
        : clock_(&clock), marker_(marker), spec_(std::move(spec)) {}
    explicit FakeRunner(FakeModelSpec spec) : clock_(nullptr), marker_(nullptr), spec_(std::move(spec)) {}

    bool load(const uint8_t*, size_t, uint32_t arena_bytes, std::string& error) override {
        loaded_ = false;
        configured_ = arena_bytes;
        if (arena_bytes < spec_.arena_needs) {
            error = "arena too small: needs " + std::to_string(spec_.arena_needs) + " bytes, has " +
                    std::to_string(arena_bytes);
            return false;
        }
        in_.assign(spec_.input.bytes, 0xA5);  // like a fresh arena: not zeros
        out_.assign(spec_.output.bytes, 0);
        loaded_ = true;
        return true;
    }
    std::vector<std::string> ops() const override { return spec_.ops; }
    TensorInfo input() const override { return loaded_ ? spec_.input : TensorInfo{}; }
    TensorInfo output() const override { return loaded_ ? spec_.output : TensorInfo{}; }
    uint8_t* input_data() override { return in_.data(); }
    const uint8_t* output_data() override { return out_.data(); }
    bool invoke(std::string& error) override {
        ++invokes;
        if (marker_) marker_->events += 'I';
        if (spec_.fail_invoke_at && invokes == spec_.fail_invoke_at) {
            error = "Node CONV_2D (number 0) failed to invoke with status 1";
            return false;
        }
        uint32_t sum = 0;
        for (uint8_t b : in_) sum += b;
        for (size_t i = 0; i < out_.size(); ++i) out_[i] = uint8_t((sum + 31 * i) & 0xFF);
        if (clock_) clock_->advance_us(spec_.latency_us + invokes % 5);
        return true;
    }
    bool profile(std::vector<OpTiming>& ops, std::string& error) override {
        ops.clear();
        const size_t n = spec_.ops.size();
        if (!invoke(error)) return false;
        for (size_t i = 0; i < n; ++i) ops.push_back({spec_.ops[i], uint32_t(spec_.latency_us / n)});
        return true;
    }
    uint32_t arena_configured() const override { return configured_; }
    uint32_t arena_used() const override { return loaded_ ? spec_.arena_used : 0; }

    uint32_t invokes = 0;

private:
    FakeClock* clock_;
    FakeMarker* marker_;
    FakeModelSpec spec_;
    bool loaded_ = false;
    uint32_t configured_ = 0;
    std::vector<uint8_t> in_, out_;
};

class StringSerial : public Serial {
public:
    void write(const char* data, size_t len) override { text.append(data, len); }
    std::string text;
};

class CallbackSystem : public System {
public:
    void restart() override {
        ++restarts;
        if (on_restart) on_restart();
    }
    std::function<void()> on_restart;
    int restarts = 0;
};

}  // namespace hil::host
