#include "json_writer.hpp"

#include <cmath>
#include <cstdio>

namespace hil {

namespace {

// Exact powers of ten (every 10^k with k <= 22 is a double), so a*10^k and a/10^k round only once.
const double kPow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                         1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

double scale10(double a, int k) {
    while (k > 22) {
        a *= 1e22;
        k -= 22;
    }
    while (k < -22) {
        a /= 1e22;
        k += 22;
    }
    return k >= 0 ? a * kPow10[k] : a / kPow10[-k];
}

// To nearest, ties to even (as printf rounds an exact binary value that lies halfway).
uint64_t round_even(double x) {
    uint64_t n = uint64_t(std::floor(x));
    const double rest = x - double(n);
    if (rest > 0.5 || (rest == 0.5 && (n & 1u))) ++n;
    return n;
}

void append_uint(std::string& out, uint64_t v, int min_digits) {
    char buf[24];
    int n = 0;
    do {
        buf[n++] = char('0' + int(v % 10));
        v /= 10;
    } while (v || n < min_digits);
    while (n) out += buf[--n];
}

// printf's "%.9g" (9 significant digits, trailing zeros dropped, exponent form below 1e-4 and from 1e9).
void append_g9(std::string& out, double a) {
    int e = int(std::floor(std::log10(a)));
    uint64_t m = round_even(scale10(a, 8 - e));
    if (m >= 1000000000ull) {  // log10 rounded down a power of ten, or rounding carried into a 10th digit
        ++e;
        m = round_even(scale10(a, 8 - e));
    } else if (m < 100000000ull) {
        --e;
        m = round_even(scale10(a, 8 - e));
    }
    char digits[10];
    for (int i = 8; i >= 0; --i) {
        digits[i] = char('0' + int(m % 10));
        m /= 10;
    }
    int len = 9;
    while (len > 1 && digits[len - 1] == '0') --len;
    if (e < -4 || e >= 9) {
        out += digits[0];
        if (len > 1) {
            out += '.';
            out.append(digits + 1, size_t(len - 1));
        }
        out += e < 0 ? "e-" : "e+";
        append_uint(out, uint64_t(e < 0 ? -e : e), 2);
    } else if (e < 0) {
        out += "0.";
        out.append(size_t(-e - 1), '0');
        out.append(digits, size_t(len));
    } else {
        const int int_digits = e + 1;
        out.append(digits, size_t(len < int_digits ? len : int_digits));
        if (len < int_digits) out.append(size_t(int_digits - len), '0');
        if (len > int_digits) {
            out += '.';
            out.append(digits + int_digits, size_t(len - int_digits));
        }
    }
}

}  // namespace

std::string format_json_number(double v, int decimals) {
    if (!std::isfinite(v)) return "null";  // JSON has no NaN/Inf
    std::string out;
    const double a = std::fabs(v);
    if (decimals > 9) decimals = 9;
    if (decimals >= 0 && a * kPow10[decimals] < 1e18) {
        const uint64_t n = round_even(a * kPow10[decimals]);
        if (std::signbit(v) && n) out += '-';
        const uint64_t p = uint64_t(kPow10[decimals]);
        append_uint(out, n / p, 1);
        if (decimals > 0) {
            out += '.';
            append_uint(out, n % p, decimals);
        }
        return out;
    }
    if (a == 0) return std::signbit(v) ? "-0.0" : "0.0";
    if (std::signbit(v)) out += '-';
    append_g9(out, a);
    // An integer-looking value ("62801") stays a JSON float.
    if (out.find_first_of(".e") == std::string::npos) out += ".0";
    return out;
}

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
    out_ += format_json_number(v, decimals);
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
