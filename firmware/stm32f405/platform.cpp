#include "platform.hpp"

#include <malloc.h>

#include <cerrno>
#include <cstdlib>
#include <new>

#include "core/fatal.hpp"

extern "C" char end, _heap_limit;  // stm32f405.ld: the heap's start and end

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

char* g_brk = &end;
size_t g_min_tail = SIZE_MAX;  // the smallest the never-used tail of the heap has been
size_t g_sbrk_refused = 0;      // the last request _sbrk could not serve

Serial* g_fatal_serial = nullptr;

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

void* NewlibMemory::alloc_arena(size_t bytes) { return memalign(16, (bytes + 15u) & ~size_t(15)); }

void NewlibMemory::free_arena(void* arena) { std::free(arena); }

size_t NewlibMemory::heap_largest_block() { return size_t(&_heap_limit - g_brk); }

size_t NewlibMemory::heap_free() { return size_t(&_heap_limit - g_brk) + size_t(mallinfo().fordblks); }

size_t NewlibMemory::heap_min_free() {
    const size_t tail = size_t(&_heap_limit - g_brk);
    return g_min_tail < tail ? g_min_tail : tail;
}

void fatal_stop(const char* reason, int code) {
    if (g_fatal_serial) write_fatal(*g_fatal_serial, reason);
    semihost_exit(code);
}

namespace {
[[noreturn]] void out_of_memory() {
    char reason[96] = "out of memory: the heap is exhausted";
    if (g_sbrk_refused) {
        // no snprintf: it may allocate, and newlib-nano's is large
        const char* head = "out of memory: the heap could not grow by ";
        size_t n = 0;
        for (const char* p = head; *p; ++p) reason[n++] = *p;
        char digits[12];
        size_t d = 0;
        for (size_t v = g_sbrk_refused; v && d < sizeof digits; v /= 10) digits[d++] = char('0' + v % 10);
        while (d) reason[n++] = digits[--d];
        for (const char* p = " bytes"; *p; ++p) reason[n++] = *p;
        reason[n] = 0;
    }
    fatal_stop(reason, 102);
}
}  // namespace

void install_fatal_handlers(Serial& serial) {
    g_fatal_serial = &serial;
    std::set_new_handler(out_of_memory);
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
    using hil::stm32::g_brk;
    if (increment > 0 && increment > &_heap_limit - g_brk) {
        hil::stm32::g_sbrk_refused = size_t(increment);
        errno = ENOMEM;
        return reinterpret_cast<void*>(-1);
    }
    char* previous = g_brk;
    g_brk += increment;
    const size_t tail = size_t(&_heap_limit - g_brk);
    if (tail < hil::stm32::g_min_tail) hil::stm32::g_min_tail = tail;
    return previous;
}

// abort() (libstdc++'s terminate, a failed assert) and exit(): the reason on the console, then QEMU exits
// with the code instead of spinning forever in newlib's _exit.
extern "C" void abort() { hil::stm32::fatal_stop("abort() called", 134); }

extern "C" void _exit(int code) {
    hil::stm32::fatal_stop("exit() called", code == 0 ? 1 : code);
}
