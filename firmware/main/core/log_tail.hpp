// The first words a library logs while something fails (TFLM's MicroPrintf through its DebugLog callback),
// kept so the refusal can say why: a fixed buffer (nothing allocated inside the library's call), one line out.
#pragma once
#include <cstddef>
#include <string>

namespace hil {

class LogTail {
public:
    static constexpr size_t kCapacity = 240;
    void clear() { len_ = 0; }
    // Appends `text`; what does not fit is dropped (the first message is usually the cause).
    void append(const char* text);
    // What was logged since clear(), on one line: line breaks become "; ", runs of spaces one space.
    std::string text() const;

private:
    char buf_[kCapacity] = {};
    size_t len_ = 0;
};

// The log TFLM's DebugLog callback fills (tflm_log_callback): cleared and read by the model runner.
LogTail& tflm_log();

}  // namespace hil

// The callback to register with TFLM (RegisterDebugLogCallback on cortex_m_generic builds).
extern "C" void hil_tflm_log_callback(const char* text);
