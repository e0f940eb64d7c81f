// Reset and exception vectors of the STM32F405 port: copy .data, zero .bss, turn on the FPU, run the
// C++ constructors, call main(). A fault or a return from main() ends a QEMU run through semihosting.
#include <cstdint>

#include "platform.hpp"

extern "C" {
extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
void __libc_init_array();
int main();
void Reset_Handler();
void SysTick_Handler();
void USART1_IRQHandler();
void Default_Handler();
}

extern "C" void Default_Handler() { hil::stm32::fatal_stop("fault: an unexpected exception or interrupt", 100); }

extern "C" void Reset_Handler() {
    // The FPU first: code built with -mfloat-abi=hard may use its registers anywhere (CPACR CP10/CP11).
    hil::stm32::reg(0xE000ED88) |= (0xFu << 20);
    __asm volatile("dsb\n isb" ::: "memory");
    for (uint32_t *src = &_sidata, *dst = &_sdata; dst < &_edata;) *dst++ = *src++;
    for (uint32_t* dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    __libc_init_array();
    const int code = main();
    hil::stm32::semihost_exit(code);  // main() never returns on a board; a self-test ends here
}

namespace {

using Vector = void (*)();
constexpr int kIrqs = 82;  // STM32F405: IRQ 0..81
constexpr int kUsart1Irq = 37;

struct VectorTable {
    uint32_t* stack;
    Vector system[15];  // Reset, NMI, HardFault, MemManage, BusFault, UsageFault, 4 reserved, SVCall,
                        // DebugMon, reserved, PendSV, SysTick
    Vector irq[kIrqs];
};

constexpr VectorTable make_vectors() {
    VectorTable t{};
    t.stack = &_estack;
    for (Vector& v : t.system) v = Default_Handler;
    t.system[0] = Reset_Handler;
    t.system[6] = t.system[7] = t.system[8] = t.system[9] = t.system[12] = nullptr;  // reserved
    t.system[14] = SysTick_Handler;
    for (Vector& v : t.irq) v = Default_Handler;
    t.irq[kUsart1Irq] = USART1_IRQHandler;
    return t;
}

}  // namespace

extern "C" __attribute__((section(".isr_vector"), used)) const VectorTable g_vectors = make_vectors();
