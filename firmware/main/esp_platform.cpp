#include "esp_platform.hpp"

#include <cstdio>
#include <cstdlib>
#include <new>

#include "esp_cpu.h"
#include "esp_heap_caps.h"
#include "esp_rom_sys.h"
#include "esp_mac.h"
#include "esp_private/esp_clk.h"
#include "esp_system.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "sdkconfig.h"

namespace hil::esp {

uint32_t CycleClock::cycles() { return static_cast<uint32_t>(esp_cpu_get_cycle_count()); }

uint32_t CycleClock::cpu_hz() { return static_cast<uint32_t>(esp_clk_cpu_freq()); }

void CycleClock::sleep_ms(uint32_t ms) {
    if (ms) vTaskDelay(pdMS_TO_TICKS(ms) ? pdMS_TO_TICKS(ms) : 1);
}

GpioMarker::GpioMarker(int gpio) : gpio_(gpio) {
    gpio_reset_pin(static_cast<gpio_num_t>(gpio_));
    gpio_set_direction(static_cast<gpio_num_t>(gpio_), GPIO_MODE_OUTPUT);
    gpio_set_level(static_cast<gpio_num_t>(gpio_), 0);
}

void GpioMarker::set(bool high) { gpio_set_level(static_cast<gpio_num_t>(gpio_), high ? 1 : 0); }

UartSerial::UartSerial(uart_port_t port, int rx_buffer) : port_(port) {
    // The console UART is already configured (baud from CONFIG_ESP_CONSOLE_UART_BAUDRATE); only the
    // driver is installed so bytes can be read and written without the VFS layer.
    if (!uart_is_driver_installed(port_)) uart_driver_install(port_, rx_buffer, 0, 0, nullptr, 0);
}

void UartSerial::write(const char* data, size_t len) {
    uart_write_bytes(port_, data, len);
    uart_wait_tx_done(port_, pdMS_TO_TICKS(1000));  // a reply is on the wire before the next command runs
}

int UartSerial::read(char* buf, size_t len, uint32_t timeout_ms) {
    return uart_read_bytes(port_, buf, len, pdMS_TO_TICKS(timeout_ms));
}

void EspSystem::restart() { esp_restart(); }

namespace {
constexpr uint32_t kHeapCaps = MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT;
#if CONFIG_HIL_ARENA_PSRAM
constexpr uint32_t kArenaCaps = MALLOC_CAP_SPIRAM | MALLOC_CAP_8BIT;
#else
constexpr uint32_t kArenaCaps = kHeapCaps;
#endif
}  // namespace

void* EspMemory::alloc_arena(size_t bytes) { return heap_caps_aligned_alloc(16, bytes, kArenaCaps); }
void EspMemory::free_arena(void* arena) { heap_caps_free(arena); }
size_t EspMemory::arena_largest_block() { return heap_caps_get_largest_free_block(kArenaCaps); }
bool EspMemory::arena_shares_heap() const { return kArenaCaps == kHeapCaps; }
size_t EspMemory::heap_largest_block() { return heap_caps_get_largest_free_block(kHeapCaps); }
size_t EspMemory::heap_free() { return heap_caps_get_free_size(kHeapCaps); }
size_t EspMemory::heap_min_free() { return heap_caps_get_minimum_free_size(kHeapCaps); }

const char* reset_reason() {
    switch (esp_reset_reason()) {
        case ESP_RST_POWERON: return "power-on";
        case ESP_RST_SW: return "software";
        case ESP_RST_EXT: return "external";
        case ESP_RST_PANIC: return "panic";
        case ESP_RST_INT_WDT:
        case ESP_RST_TASK_WDT:
        case ESP_RST_WDT: return "watchdog";
        case ESP_RST_BROWNOUT: return "brownout";
        case ESP_RST_DEEPSLEEP: return "deepsleep";
        default: return "unknown";
    }
}

namespace {
void out_of_memory() {
    // ROM printf to the console UART: no heap, no driver lock
    esp_rom_printf("hil-fatal out of memory: the heap is exhausted (largest free block %u bytes)\r\n",
                   unsigned(heap_caps_get_largest_free_block(kHeapCaps)));
    abort();
}
}  // namespace

void install_fatal_handlers() { std::set_new_handler(out_of_memory); }

std::string board_id() {
    uint8_t mac[6] = {0};
    esp_read_mac(mac, ESP_MAC_WIFI_STA);
    char buf[18];
    std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
    return buf;
}

}  // namespace hil::esp
