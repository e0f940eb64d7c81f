// A compact JSON object writer for the one-line `@hil {...}` replies (no allocation beyond one string).
#pragma once
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

namespace hil {

class JsonWriter {
public:
    JsonWriter& begin_object();
    JsonWriter& end_object();
    JsonWriter& begin_array();
    JsonWriter& end_array();
    JsonWriter& key(const char* name);
    JsonWriter& value(const std::string& s);
    JsonWriter& value(const char* s);
    JsonWriter& value(bool b);
    // Any integer type (int32_t is `long` on ESP-IDF >= 5, `int` on the host: one template fits both).
    template <typename T, typename std::enable_if<std::is_integral<T>::value && !std::is_same<T, bool>::value,
                                                  int>::type = 0>
    JsonWriter& value(T v) {
        return integer(static_cast<int64_t>(v));
    }
    // A float with enough digits to round-trip a float32 (scales); `decimals` >= 0 fixes the decimals.
    JsonWriter& value(double v, int decimals = -1);
    JsonWriter& raw(const std::string& json);  // an already formatted JSON value

    template <typename T>
    JsonWriter& field(const char* name, const T& v) {
        key(name);
        return value(v);
    }
    const std::string& str() const { return out_; }

private:
    JsonWriter& integer(int64_t v);
    void separator();
    std::string out_;
    std::vector<bool> first_;   // per open container: nothing written in it yet
    bool after_key_ = false;
};

// A JSON number without printf's float support (newlib-nano's printf has none: "%g" printed ".0"):
// `decimals` >= 0 gives fixed decimals (at most 9), -1 gives 9 significant digits like "%.9g" (enough
// to round-trip a float32), with ".0" added to an integer-looking value; NaN and infinities are null.
std::string format_json_number(double v, int decimals = -1);

// The lowercase 8-hex-digit form the protocol uses for CRC32 values.
std::string crc32_hex(uint32_t crc);

}  // namespace hil
