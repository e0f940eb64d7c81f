// The benchmark firmware on a bare-metal STM32F405 (Cortex-M4F; QEMU's netduinoplus2): the portable
// protocol core (main/core) over USART1, SysTick timing and the model partition in flash at 0x08080000.
// The model runtime is the host tests' fake (host/fakes.hpp: a deterministic computation over the input,
// timed for real on SysTick) unless the build links TFLM (TFLM_DIR: main/tflm_runner.cpp).
#include <cstdint>

#include "core/device.hpp"
#include "core/model_ops.hpp"
#include "platform.hpp"

#if HIL_TFLM
#include "tflm_runner.hpp"
#else
#include "fakes.hpp"
#endif

#ifndef HIL_FAKE_LEAK_PER_INVOKE
#define HIL_FAKE_LEAK_PER_INVOKE 0u
#endif

#ifndef HIL_ARENA_DEFAULT_BYTES
#define HIL_ARENA_DEFAULT_BYTES 65536u
#endif

extern "C" const uint8_t __model_start[];  // stm32f405.ld: the model partition
extern "C" const uint8_t __model_size[];   // its size is the symbol's address

int main() {
    static hil::stm32::SysTickClock clock;
    static hil::stm32::GpioMarker marker;
    static hil::stm32::UsartSerial serial;
    static hil::stm32::ResetSystem system;
    static hil::stm32::NewlibMemory memory;
    hil::stm32::install_fatal_handlers(serial);
#if HIL_TFLM
    static hil::TflmRunner runner(clock);
#else
    hil::host::FakeModelSpec spec;
    spec.latency_us = 0;  // no made-up per-operator times: the fake's invoke is timed for real on SysTick
    spec.ops_from_model = true;
    spec.leak_per_invoke = HIL_FAKE_LEAK_PER_INVOKE;  // tests/firmware: heap exhaustion after a load
    static hil::host::FakeRunner runner{spec};
#endif

    hil::BoardInfo board;
    board.firmware = hil::kFirmwareVersion;
    board.board = "stm32f405";
    board.board_id = "00:00:00:00:00:00";  // QEMU maps no unique-ID area (0x1FFF7A10)
    board.simulated = HIL_SIMULATED != 0;

    static hil::Device device(board, clock, marker, runner, serial, system, memory);
    device.set_operator_check(&hil::firmware_operators(), hil::firmware_has_tflm_compression());
    device.load_model_image(__model_start, reinterpret_cast<uintptr_t>(__model_size), HIL_ARENA_DEFAULT_BYTES);
    device.announce_ready();

    static char buf[256];
    for (;;) {
        const size_t n = serial.read(buf, sizeof buf);
        device.feed(buf, n);
    }
}
