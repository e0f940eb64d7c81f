#include "esp_platform.hpp"

#include <cstdio>

#include "esp_cpu.h"
#include "esp_mac.h"
#include "esp_private/esp_clk.h"
#include "esp_system.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"

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

std::string board_id() {
    uint8_t mac[6] = {0};
    esp_read_mac(mac, ESP_MAC_WIFI_STA);
    char buf[18];
    std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
    return buf;
}

}  // namespace hil::esp
