#include "log_tail.hpp"

namespace hil {

void LogTail::append(const char* text) {
    if (!text) return;
    while (*text && len_ < kCapacity) buf_[len_++] = *text++;
    if (*text) {  // cut short: mark it, so a reader knows there was more
        for (size_t i = kCapacity - 3; i < kCapacity; ++i) buf_[i] = '.';
        len_ = kCapacity;
    }
}

std::string LogTail::text() const {
    std::string out;
    bool space = false, brk = false;
    for (size_t i = 0; i < len_; ++i) {
        const char c = buf_[i];
        if (c == '\n' || c == '\r') {
            brk = !out.empty();
            space = false;
            continue;
        }
        if (c == ' ' || c == '\t') {
            space = !out.empty();
            continue;
        }
        if (brk) out += "; ";
        else if (space) out += ' ';
        brk = space = false;
        out += c;
    }
    return out;
}

LogTail& tflm_log() {
    static LogTail log;
    return log;
}

}  // namespace hil

extern "C" void hil_tflm_log_callback(const char* text) { hil::tflm_log().append(text); }
