// Host fakes of the platform interfaces: a cycle counter advanced by the fake model, a marker pin that
// records its edges, a deterministic "model" whose output is a checkable function of its input.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "core/interfaces.hpp"
#include "core/model_ops.hpp"

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
    uint32_t leak_per_invoke = 0;  // bytes each invoke takes from the heap and never gives back (a leak)
    bool ops_from_model = false;   // the operators are the flatbuffer's (a real model), not `ops`
};

// output[i] = (sum of input bytes + 31 * i) mod 256: any corruption of the uploaded input shows.
// With a FakeClock, each invoke advances it by spec.latency_us (+ 0..4 us); without one (the bare-metal
// port, firmware/stm32f405) the latency is what the computation really takes on the platform's clock.
class FakeRunner : public ModelRunner {
public:
    FakeRunner(FakeClock& clock, FakeMarker* marker, FakeModelSpec spec)
        : clock_(&clock), marker_(marker), spec_(std::move(spec)) {}
    explicit FakeRunner(FakeModelSpec spec) : clock_(nullptr), marker_(nullptr), spec_(std::move(spec)) {}

    bool load(const uint8_t* flatbuffer, size_t length, uint8_t* arena, uint32_t arena_bytes,
              std::string& error) override {
        unload();
        configured_ = arena_bytes;
        if (arena_bytes < spec_.arena_needs) {
            error = "arena too small: needs " + std::to_string(spec_.arena_needs) + " bytes, has " +
                    std::to_string(arena_bytes);
            return false;
        }
        if (spec_.ops_from_model) {
            std::string ignored;
            if (!model_operator_names(flatbuffer, length, model_ops_, ignored)) model_ops_.clear();
        }
        // the tensors live in the arena, as TFLM's do: the heap holds nothing of the model
        const size_t in_bytes = spec_.input.bytes, out_bytes = spec_.output.bytes;
        if (size_t(arena_bytes) < in_bytes + out_bytes) {
            error = "arena too small: needs " + std::to_string(in_bytes + out_bytes) + " bytes, has " +
                    std::to_string(arena_bytes);
            return false;
        }
        in_ = arena;
        out_ = arena + in_bytes;
        std::fill(in_, in_ + in_bytes, uint8_t(0xA5));  // like a fresh arena: not zeros
        std::fill(out_, out_ + out_bytes, uint8_t(0));
        loaded_ = true;
        return true;
    }
    void unload() override {
        loaded_ = false;
        model_ops_.clear();
        in_ = out_ = nullptr;
    }
    std::vector<std::string> ops() const override { return model_ops_.empty() ? spec_.ops : model_ops_; }
    TensorInfo input() const override { return loaded_ ? spec_.input : TensorInfo{}; }
    TensorInfo output() const override { return loaded_ ? spec_.output : TensorInfo{}; }
    uint8_t* input_data() override { return in_; }
    const uint8_t* output_data() override { return out_; }
    bool invoke(std::string& error) override {
        ++invokes;
        if (marker_) marker_->events += 'I';
        if (spec_.fail_invoke_at && invokes == spec_.fail_invoke_at) {
            error = "Node CONV_2D (number 0) failed to invoke with status 1";
            return false;
        }
        if (spec_.leak_per_invoke) {  // operator new: on a board, out of heap ends in the new-handler
            leaked_.emplace_back(new uint8_t[spec_.leak_per_invoke]);
            leaked_.back()[0] = 1;
        }
        uint32_t sum = 0;
        for (size_t i = 0; i < spec_.input.bytes; ++i) sum += in_[i];
        for (size_t i = 0; i < spec_.output.bytes; ++i) out_[i] = uint8_t((sum + 31 * i) & 0xFF);
        if (clock_) clock_->advance_us(spec_.latency_us + invokes % 5);
        return true;
    }
    bool profile(std::vector<OpTiming>& ops, std::string& error) override {
        ops.clear();
        const std::vector<std::string> names = this->ops();
        const size_t n = names.size();
        if (!invoke(error)) return false;
        for (size_t i = 0; i < n; ++i) ops.push_back({names[i], uint32_t(spec_.latency_us / n)});
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
    uint8_t* in_ = nullptr;  // in the caller's arena
    uint8_t* out_ = nullptr;
    std::vector<std::string> model_ops_;
    std::vector<std::unique_ptr<uint8_t[]>> leaked_;
};

// A heap of `heap_bytes` on the host: arenas come out of it (shared) or from elsewhere (like PSRAM);
// `protocol_use` and `load_use` stand for what the protocol and a loaded runner hold outside the arena.
class FakeMemory : public Memory {
public:
    explicit FakeMemory(size_t heap_bytes = 16u << 20, bool shared = true) : heap_(heap_bytes), shared_(shared) {}
    void* alloc_arena(size_t bytes) override {
        if (bytes > arena_largest_block()) return nullptr;
        void* p = ::operator new(bytes, std::align_val_t(16), std::nothrow);
        if (p) {
            arenas_.push_back({p, bytes});
            note();
        }
        return p;
    }
    void free_arena(void* p) override {
        for (size_t i = 0; i < arenas_.size(); ++i)
            if (arenas_[i].first == p) arenas_.erase(arenas_.begin() + std::ptrdiff_t(i));
        ::operator delete(p, std::align_val_t(16));
    }
    size_t arena_largest_block() override { return shared_ ? heap_free() : (64u << 20); }
    bool arena_shares_heap() const override { return shared_; }
    size_t heap_largest_block() override { return heap_free(); }
    size_t heap_free() override {
        size_t used = protocol_use + load_use * arenas_.size();
        if (shared_)
            for (const auto& a : arenas_) used += a.second;
        return used >= heap_ ? 0 : heap_ - used;
    }
    size_t heap_min_free() override {
        note();
        return min_free_;
    }
    size_t arena_bytes() const {
        size_t n = 0;
        for (const auto& a : arenas_) n += a.second;
        return n;
    }
    size_t protocol_use = 0;
    size_t load_use = 0;  // heap a model load takes besides its arena (the runner's own buffers), per arena

private:
    void note() { min_free_ = std::min(min_free_, heap_free()); }
    size_t heap_;
    bool shared_;
    size_t min_free_ = SIZE_MAX;
    std::vector<std::pair<void*, size_t>> arenas_;
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
