// JSON numbers under the firmware's printf configuration (newlib-nano without _printf_float): one JSON
// line per value, written by the core's JsonWriter, then the same value through snprintf("%.9g") to show
// what printf itself does in this build. Exits through semihosting; tests/firmware/test_stm32_qemu.py
// parses every line.
#include <cmath>
#include <cstdio>

#include "core/json_writer.hpp"
#include "platform.hpp"

int main() {
    hil::stm32::UsartSerial serial;
    const double values[] = {0.0,        1e-9,  3.25,   -0.5,         double(0.00392156886f), double(0.00390625f),
                             62801.0,    1e20,  -1e-30, 123456789.0,  1234567890.0,           0.1,
                             std::nan(""), HUGE_VAL, double(3.4028235e38f), double(1.17549435e-38f)};
    int index = 0;
    for (double v : values) {
        hil::JsonWriter w;
        w.begin_object().field("i", index++).key("v").value(v).key("fixed1").value(v, 1).end_object();
        const std::string line = "@json " + w.str() + "\r\n";
        serial.write(line.data(), line.size());
    }
    char printf_g[40];
    std::snprintf(printf_g, sizeof printf_g, "%.9g", 3.25);
    const std::string line = std::string("@printf-g ") + printf_g + "\r\n";
    serial.write(line.data(), line.size());
    return 0;
}
