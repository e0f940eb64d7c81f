// ESP-IDF implementations of the core's platform interfaces (core/interfaces.hpp). Thin by design:
// everything testable lives in core/ and runs on the host.
#pragma once
#include "core/interfaces.hpp"
#include "driver/gpio.h"
#include "driver/uart.h"

namespace hil::esp {

// esp_cpu_get_cycle_count() and the actual CPU frequency (esp_clk_cpu_freq()).
class CycleClock : public Clock {
public:
    uint32_t cycles() override;
    uint32_t cpu_hz() override;
    void sleep_ms(uint32_t ms) override;
};

class GpioMarker : public MarkerPin {
public:
    explicit GpioMarker(int gpio);
    void set(bool high) override;
    int gpio() const override { return gpio_; }

private:
    int gpio_;
};

// The console UART through the UART driver (no VFS newline translation: replies end in "\r\n" as written).
class UartSerial : public Serial {
public:
    explicit UartSerial(uart_port_t port, int rx_buffer);
    void write(const char* data, size_t len) override;
    int read(char* buf, size_t len, uint32_t timeout_ms);

private:
    uart_port_t port_;
};

class EspSystem : public System {
public:
    void restart() override;
};

// heap_caps: the arena in internal RAM or PSRAM (CONFIG_HIL_ARENA_PSRAM), the protocol in internal RAM.
class EspMemory : public Memory {
public:
    void* alloc_arena(size_t bytes) override;
    void free_arena(void* arena) override;
    size_t arena_largest_block() override;
    bool arena_shares_heap() const override;
    size_t heap_largest_block() override;
    size_t heap_free() override;
    size_t heap_min_free() override;
};

// esp_reset_reason() as the boot line's `reset=` word: power-on, software, external, panic, watchdog,
// brownout, deepsleep or unknown (docs/protocol.md, "Fatal stops").
const char* reset_reason();

// Out of memory in operator new: `hil-fatal out of memory` on the console, then abort() (a panic and a reboot
// whose boot line says reset=panic).
void install_fatal_handlers();

// The factory MAC as "aa:bb:cc:dd:ee:ff" (hello's board_id).
std::string board_id();

}  // namespace hil::esp
