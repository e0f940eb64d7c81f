// The small interfaces the protocol core needs from the platform: ESP-IDF + TFLM on the board
// (firmware/main/*.cpp), fakes on the host (firmware/host/). Nothing here includes ESP-IDF or TFLM.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace hil {

// The CPU cycle counter and the CPU clock it runs at (esp_cpu_get_cycle_count on the board).
class Clock {
public:
    virtual ~Clock() = default;
    virtual uint32_t cycles() = 0;  // wraps; differences are taken modulo 2^32
    virtual uint32_t cpu_hz() = 0;  // the actual CPU frequency, used to convert cycles to microseconds
    virtual void sleep_ms(uint32_t ms) = 0;
};

// The GPIO a scope or power analyser triggers on: high exactly around each timed Invoke().
class MarkerPin {
public:
    virtual ~MarkerPin() = default;
    virtual void set(bool high) = 0;
    virtual int gpio() const = 0;
};

// Where reply and log lines go (the console UART on the board, stdout on the host).
class Serial {
public:
    virtual ~Serial() = default;
    virtual void write(const char* data, size_t len) = 0;
};

// The memory a model is given: the tensor arena, and the heap the protocol's replies and uploads come from
// (newlib's heap on the STM32 port, where both are one heap; internal RAM or PSRAM on ESP-IDF). Device sizes
// the arena with it and checks, when a model loads, that the protocol keeps what it needs (core/memory.hpp).
class Memory {
public:
    virtual ~Memory() = default;
    virtual void* alloc_arena(size_t bytes) = 0;  // 16-byte aligned; nullptr when it does not fit
    virtual void free_arena(void* arena) = 0;
    virtual size_t arena_largest_block() = 0;  // the largest arena alloc_arena can give now
    virtual bool arena_shares_heap() const = 0;  // the arena comes out of the protocol's heap
    virtual size_t heap_largest_block() = 0;  // the largest block the protocol's next allocation can get
    virtual size_t heap_free() = 0;
    virtual size_t heap_min_free() = 0;  // the lowest heap_free() since boot (newlib: the untouched tail)
};

// Restart of the whole device after the `reset` reply (esp_restart on the board).
class System {
public:
    virtual ~System() = default;
    virtual void restart() = 0;
};

struct TensorInfo {
    std::vector<int32_t> shape;
    std::string dtype;  // "int8", "uint8", "int16", "float32", ...
    float scale = 0.0f;
    int32_t zero_point = 0;
    uint32_t bytes = 0;
};

struct OpTiming {
    std::string op;
    uint32_t us = 0;
};

// The model runtime (TFLM MicroInterpreter on the board).
class ModelRunner {
public:
    virtual ~ModelRunner() = default;
    // Load a flatbuffer into the 16-byte aligned `arena` of `arena_bytes` (owned by the caller, which frees it
    // only after unload()); false with a one-line reason on failure (unsupported operator, arena too small, ...).
    virtual bool load(const uint8_t* flatbuffer, size_t length, uint8_t* arena, uint32_t arena_bytes,
                      std::string& error) = 0;
    // Forget the model and stop using the arena (before the caller frees it).
    virtual void unload() = 0;
    // Operator names in execution order; known even when load() failed after parsing the model.
    virtual std::vector<std::string> ops() const = 0;
    virtual TensorInfo input() const = 0;   // bytes == 0 when unknown
    virtual TensorInfo output() const = 0;
    virtual uint8_t* input_data() = 0;
    virtual const uint8_t* output_data() = 0;
    virtual bool invoke(std::string& error) = 0;
    // One invoke with per-operator timing (TFLM MicroProfiler on the board).
    virtual bool profile(std::vector<OpTiming>& ops, std::string& error) = 0;
    virtual uint32_t arena_configured() const = 0;
    virtual uint32_t arena_used() const = 0;
};

// The firmware's version string (`firmware` in hello and version), the same for every port.
constexpr const char* kFirmwareVersion = "0.2.0";

struct BoardInfo {
    std::string firmware = kFirmwareVersion;
    std::string board = "esp32";
    std::string board_id;
    bool simulated = false;
};

}  // namespace hil
