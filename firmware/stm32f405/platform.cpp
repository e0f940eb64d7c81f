#include "platform.hpp"

#include <cerrno>

namespace hil::stm32 {

namespace {

// Cortex-M4 system registers.
constexpr uintptr_t kSysTickCsr = 0xE000E010, kSysTickRvr = 0xE000E014, kSysTickCvr = 0xE000E018;
constexpr uintptr_t kScbIcsr = 0xE000ED04, kScbAircr = 0xE000ED0C, kNvicIser1 = 0xE000E104;
constexpr uint32_t kIcsrPendStSet = 1u << 26;
// STM32F405 peripherals.
constexpr uintptr_t kRccAhb1Enr = 0x40023830, kRccApb2Enr = 0x40023844;
constexpr uintptr_t kGpioA = 0x40020000;  // MODER +0x00, BSRR +0x18, AFRH +0x24
constexpr uintptr_t kUsart1 = 0x40011000;  // SR +0x00, DR +0x04, BRR +0x08, CR1 +0x0C
constexpr uint32_t kSrRxne = 1u << 5, kSrTxe = 1u << 7;
constexpr uint32_t kCr1Ue = 1u << 13, kCr1Rxneie = 1u << 5, kCr1Te = 1u << 3, kCr1Re = 1u << 2;
constexpr uint32_t kUsart1Irq = 37;
constexpr uint32_t kBaud = 115200;

volatile uint32_t g_wraps = 0;

constexpr size_t kRxSize = 2048;  // > kMaxLine + 2, so a whole command line fits
char g_rx[kRxSize];
volatile size_t g_rx_head = 0, g_rx_tail = 0;  // written by the interrupt / by read()

}  // namespace

[[noreturn]] void semihost_exit(int code) {
    // SYS_EXIT_EXTENDED (0x20) with ADP_Stopped_ApplicationExit and the exit code.
    static uint32_t block[2];
    block[0] = 0x20026;
    block[1] = uint32_t(code);
    register uint32_t r0 __asm("r0") = 0x20;
    register uint32_t* r1 __asm("r1") = block;
    __asm volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    for (;;) __asm volatile("wfi");
}

SysTickClock::SysTickClock() {
    reg(kSysTickRvr) = 0x00FFFFFFu;
    reg(kSysTickCvr) = 0;
    reg(kSysTickCsr) = 0x7;  // processor clock, interrupt on wrap, enable
}

uint32_t SysTickClock::cycles() {
    uint32_t wraps, value;
    bool pending;
    do {
        wraps = g_wraps;
        value = reg(kSysTickCvr);
        pending = (reg(kScbIcsr) & kIcsrPendStSet) != 0;
    } while (wraps != g_wraps);
    // A wrap whose interrupt has not run yet: the counter already restarted from the top.
    if (pending && value > 0x00800000u) ++wraps;
    return (wraps << 24) + (0x00FFFFFFu - value);
}

void SysTickClock::sleep_ms(uint32_t ms) {
    const uint32_t start = cycles();
    const uint64_t wait = uint64_t(ms) * (HIL_CPU_HZ / 1000u);
    while (uint64_t(uint32_t(cycles() - start)) < wait) {
    }
}

UsartSerial::UsartSerial() {
    reg(kRccAhb1Enr) |= 1u << 0;  // GPIOA
    reg(kRccApb2Enr) |= 1u << 4;  // USART1
    // PA9 (TX) and PA10 (RX): alternate function 7.
    reg(kGpioA + 0x00) = (reg(kGpioA + 0x00) & ~(0xFu << 18)) | (0xAu << 18);
    reg(kGpioA + 0x24) = (reg(kGpioA + 0x24) & ~(0xFFu << 4)) | (0x77u << 4);
    reg(kUsart1 + 0x08) = (HIL_CPU_HZ + kBaud / 2) / kBaud;  // APB2 = SYSCLK at reset (no prescaler)
    reg(kUsart1 + 0x0C) = kCr1Ue | kCr1Te | kCr1Re | kCr1Rxneie;
    reg(kNvicIser1) = 1u << (kUsart1Irq - 32);
}

void UsartSerial::write(const char* data, size_t len) {
    for (size_t i = 0; i < len; ++i) {
        while (!(reg(kUsart1) & kSrTxe)) {
        }
        reg(kUsart1 + 0x04) = uint8_t(data[i]);
    }
}

size_t UsartSerial::read(char* buf, size_t len) {
    for (;;) {
        __asm volatile("cpsid i" ::: "memory");
        if (g_rx_head != g_rx_tail) break;
        __asm volatile("wfi\n cpsie i" ::: "memory");  // an interrupt wakes WFI even while masked
    }
    __asm volatile("cpsie i" ::: "memory");
    size_t n = 0;
    while (n < len && g_rx_tail != g_rx_head) {
        buf[n++] = g_rx[g_rx_tail];
        g_rx_tail = (g_rx_tail + 1) % kRxSize;
    }
    reg(kUsart1 + 0x0C) |= kCr1Rxneie;  // room again: take the byte that may be waiting in DR
    return n;
}

GpioMarker::GpioMarker() {
    reg(kRccAhb1Enr) |= 1u << 0;
    reg(kGpioA + 0x00) = (reg(kGpioA + 0x00) & ~(0x3u << 8)) | (0x1u << 8);  // PA4 output
    set(false);
}

void GpioMarker::set(bool high) { reg(kGpioA + 0x18) = high ? (1u << 4) : (1u << (4 + 16)); }

void ResetSystem::restart() {
    __asm volatile("dsb" ::: "memory");
    reg(kScbAircr) = 0x05FA0004u;  // VECTKEY | SYSRESETREQ
    __asm volatile("dsb" ::: "memory");
    for (;;) {
    }
}

}  // namespace hil::stm32

using hil::stm32::reg;

extern "C" void SysTick_Handler() { hil::stm32::g_wraps = hil::stm32::g_wraps + 1; }

extern "C" void USART1_IRQHandler() {
    using namespace hil::stm32;
    if (!(reg(kUsart1) & kSrRxne)) return;
    const size_t next = (g_rx_head + 1) % kRxSize;
    if (next == g_rx_tail) {  // full: leave the byte in DR and hold the sender off until read() drains
        reg(kUsart1 + 0x0C) &= ~kCr1Rxneie;
        return;
    }
    g_rx[g_rx_head] = char(reg(kUsart1 + 0x04) & 0xFFu);
    g_rx_head = next;
}

// newlib's heap: from the end of .bss up to the stack's reserve (stm32f405.ld).
extern "C" void* _sbrk(ptrdiff_t increment) {
    extern char end, _heap_limit;
    static char* brk = &end;
    if (increment > 0 && increment > &_heap_limit - brk) {
        errno = ENOMEM;
        return reinterpret_cast<void*>(-1);
    }
    char* previous = brk;
    brk += increment;
    return previous;
}
