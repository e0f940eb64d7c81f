// The STM32F405 implementations of the core's platform interfaces (core/interfaces.hpp): USART1 (the
// UART QEMU's first -serial connects to), SysTick as the cycle counter, a GPIO marker, a system reset,
// and semihosting exit for QEMU runs. Register-level, no vendor HAL.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/interfaces.hpp"

#ifndef HIL_CPU_HZ
#define HIL_CPU_HZ 168000000u  // QEMU netduinoplus2's SYSCLK (the port does not program the PLL)
#endif

namespace hil::stm32 {

inline volatile uint32_t& reg(uintptr_t address) { return *reinterpret_cast<volatile uint32_t*>(address); }

// End the program: under QEMU with -semihosting, QEMU exits with `code` (SYS_EXIT_EXTENDED).
[[noreturn]] void semihost_exit(int code);

// SysTick on the CPU clock, extended to 32 bits by counting its 24-bit wrap-arounds in the interrupt.
class SysTickClock : public Clock {
public:
    SysTickClock();
    uint32_t cycles() override;
    uint32_t cpu_hz() override { return HIL_CPU_HZ; }
    void sleep_ms(uint32_t ms) override;
};

// USART1 on PA9/PA10 at 115200 8N1; received bytes go through a ring buffer filled by the RX interrupt.
// When the buffer is full the interrupt is masked and the byte stays in the data register, so the
// sender is held off (QEMU delivers no byte while RXNE is set) and nothing is lost.
class UsartSerial : public Serial {
public:
    UsartSerial();
    void write(const char* data, size_t len) override;
    // Wait (WFI) until at least one byte is there, then return up to `len` bytes.
    size_t read(char* buf, size_t len);
};

// PA4 high/low through BSRR (GPIO 4, like the ESP32 firmware's default marker pin).
class GpioMarker : public MarkerPin {
public:
    GpioMarker();
    void set(bool high) override;
    int gpio() const override { return 4; }
};

// newlib's heap (malloc over _sbrk, from the end of .bss to the stack's reserve) for the arena and the
// protocol alike. newlib-nano never gives freed chunks back and a growing string leaves a trail of them, so the
// block the next allocation can surely get is the never-used tail above the break: `largest` and the low-water
// mark count the tail only; `free` adds the freed chunks.
class NewlibMemory : public Memory {
public:
    void* alloc_arena(size_t bytes) override;  // memalign(16, ...): newlib-nano has no posix_memalign
    void free_arena(void* arena) override;
    size_t arena_largest_block() override { return heap_largest_block(); }
    bool arena_shares_heap() const override { return true; }
    size_t heap_largest_block() override;
    size_t heap_free() override;
    size_t heap_min_free() override;
};

// Where the last words go when the firmware stops for good: out of memory (the new-handler), abort(), a
// fault. Each prints `hil-fatal REASON` on `serial` and ends the QEMU run through semihosting.
void install_fatal_handlers(Serial& serial);
[[noreturn]] void fatal_stop(const char* reason, int code);

// SCB AIRCR SYSRESETREQ: the whole chip resets (QEMU resets the machine and boots the image again).
class ResetSystem : public System {
public:
    void restart() override;
};

}  // namespace hil::stm32
