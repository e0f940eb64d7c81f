// The TFLite Micro model runner: MicroInterpreter over a model mapped from flash, the arena on the heap
// (ESP-IDF: internal RAM or PSRAM by Kconfig), an op resolver generated from ops.txt, per-op timing for
// `profile` on the platform's cycle counter. Shared by the ESP-IDF app and the STM32F405 port (TFLM_DIR).
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
    bool load(const uint8_t* flatbuffer, size_t length, uint32_t arena_bytes, std::string& error) override;
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
