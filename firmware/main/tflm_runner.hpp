// The TFLite Micro model runner, a thin adapter: MicroInterpreter over a model mapped from flash, in the arena
// the core allocates (core/memory.hpp), an op resolver generated from ops.txt, per-op timing for `profile` into
// the core's OpProfile, TFLM's log into the core's LogTail. Everything that does not need TFLM is in the core,
// where the host tests and QEMU cover it. Shared by the ESP-IDF app and the STM32F405 port (TFLM_DIR).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/interfaces.hpp"

namespace hil {

class TflmRunner : public ModelRunner {
public:
    explicit TflmRunner(Clock& clock);
    ~TflmRunner() override;
    bool load(const uint8_t* flatbuffer, size_t length, uint8_t* arena, uint32_t arena_bytes,
              std::string& error) override;
    void unload() override;
    std::vector<std::string> ops() const override { return ops_; }
    TensorInfo input() const override { return input_; }
    TensorInfo output() const override { return output_; }
    uint8_t* input_data() override;
    const uint8_t* output_data() override;
    bool invoke(std::string& error) override;
    bool profile(std::vector<OpTiming>& ops, std::string& error) override;
    uint32_t arena_configured() const override { return arena_bytes_; }
    uint32_t arena_used() const override;

private:
    struct Impl;
    Clock& clock_;
    std::unique_ptr<Impl> impl_;
    std::vector<std::string> ops_;
    TensorInfo input_, output_;
    uint32_t arena_bytes_ = 0;
};

}  // namespace hil
