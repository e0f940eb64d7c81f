#include "json_writer.hpp"

#include <cmath>
#include <cstdio>

namespace hil {

void JsonWriter::separator() {
    if (after_key_) {
        after_key_ = false;
        return;
    }
    if (!first_.empty()) {
        if (!first_.back()) out_ += ',';
        first_.back() = false;
    }
}

JsonWriter& JsonWriter::begin_object() {
    separator();
    out_ += '{';
    first_.push_back(true);
    return *this;
}

JsonWriter& JsonWriter::end_object() {
    out_ += '}';
    first_.pop_back();
    return *this;
}

JsonWriter& JsonWriter::begin_array() {
    separator();
    out_ += '[';
    first_.push_back(true);
    return *this;
}

JsonWriter& JsonWriter::end_array() {
    out_ += ']';
    first_.pop_back();
    return *this;
}

JsonWriter& JsonWriter::key(const char* name) {
    value(name);
    out_ += ':';
    after_key_ = true;
    return *this;
}

JsonWriter& JsonWriter::value(const char* s) {
    separator();
    out_ += '"';
    for (const char* p = s; *p; ++p) {
        unsigned char c = static_cast<unsigned char>(*p);
        switch (c) {
            case '"': out_ += "\\\""; break;
            case '\\': out_ += "\\\\"; break;
            case '\n': out_ += "\\n"; break;
            case '\r': out_ += "\\r"; break;
            case '\t': out_ += "\\t"; break;
            default:
                if (c < 0x20 || c >= 0x7F) {
                    // Keep the reply line printable ASCII: escape control and non-ASCII bytes.
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out_ += buf;
                } else {
                    out_ += static_cast<char>(c);
                }
        }
    }
    out_ += '"';
    return *this;
}

JsonWriter& JsonWriter::value(const std::string& s) { return value(s.c_str()); }

JsonWriter& JsonWriter::value(bool b) {
    separator();
    out_ += b ? "true" : "false";
    return *this;
}

JsonWriter& JsonWriter::integer(int64_t v) {
    separator();
    out_ += std::to_string(static_cast<long long>(v));
    return *this;
}

JsonWriter& JsonWriter::value(double v, int decimals) {
    separator();
    if (!std::isfinite(v)) {
        out_ += "null";  // JSON has no NaN/Inf
        return *this;
    }
    char buf[40];
    if (decimals >= 0) {
        std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    } else {
        std::snprintf(buf, sizeof buf, "%.9g", v);
        // "%g" may print an integer-looking value ("62801"); keep it a JSON float.
        bool has_mark = false;
        for (char* p = buf; *p; ++p)
            if (*p == '.' || *p == 'e' || *p == 'n' || *p == 'i') has_mark = true;
        out_ += buf;
        if (!has_mark) out_ += ".0";
        return *this;
    }
    out_ += buf;
    return *this;
}

JsonWriter& JsonWriter::raw(const std::string& json) {
    separator();
    out_ += json;
    return *this;
}

std::string crc32_hex(uint32_t crc) {
    char buf[9];
    std::snprintf(buf, sizeof buf, "%08x", static_cast<unsigned>(crc));
    return buf;
}

}  // namespace hil
