// Unit tests of the portable core (firmware/main/core) on the host; run by tests/firmware/test_core_unit.py.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/base64.hpp"
#include "core/crc32.hpp"
#include "core/device.hpp"
#include "core/fatal.hpp"
#include "core/log_tail.hpp"
#include "core/memory.hpp"
#include "core/op_profile.hpp"
#include "core/json_writer.hpp"
#include "core/model_image.hpp"
#include "core/model_ops.hpp"
#include "core/sha256.hpp"
#include "core/stats.hpp"
#include "fakes.hpp"
#include "tinytest.hpp"

using namespace hil;
using namespace hil::host;

namespace {
const uint8_t* u8(const char* s) { return reinterpret_cast<const uint8_t*>(s); }

// A device on fakes, with helpers to send a line and get the last reply line. The image asks for `arena`; the
// heap holds `heap` bytes, shared with the arena or not (PSRAM), and a load takes `load_use` of it besides.
struct Bench {
    explicit Bench(FakeModelSpec spec = {}, uint32_t arena = 65536, size_t heap = 16u << 20, bool shared = true,
                   size_t load_use = 0)
        : clock(240000000u), marker(4), runner(clock, &marker, spec), memory(heap, shared),
          device(BoardInfo{}, clock, marker, runner, serial, system, memory) {
        memory.load_use = load_use;
        const uint8_t fb[40] = {1, 2, 3};
        image = make_model_image(fb, sizeof fb, arena);
        device.load_model_image(image.data(), image.size(), 65536);
        system.on_restart = [this] { device.announce_ready(); };
    }
    std::string send(const std::string& line) {
        serial.text.clear();
        std::string l = line + "\n";
        device.feed(l.data(), l.size());
        return serial.text;
    }
    FakeClock clock;
    FakeMarker marker;
    FakeRunner runner;
    StringSerial serial;
    CallbackSystem system;
    FakeMemory memory;
    Device device;
    std::vector<uint8_t> image;
};

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// A command line with its own CRC (docs/protocol.md, Transport): ` *` and the CRC32 of the line.
std::string sign(const std::string& line) { return line + " *" + crc32_hex(crc32(u8(line.c_str()), line.size())); }

// `text` is exactly one version 2 reply line: `@hil {json}*crc32\r\n`, the CRC32 of the JSON text in 8 lowercase hex
// digits. Checked digit by digit here (not with crc32_hex), the CRC itself with the zlib-checked crc32().
bool valid_reply_line(const std::string& text) {
    const std::string head = "@hil ";
    if (text.size() < head.size() + 2 + 9 + 2 || text.compare(0, head.size(), head) != 0) return false;
    if (text.compare(text.size() - 2, 2, "\r\n") != 0 || text.find('\n') != text.size() - 1) return false;
    const size_t star = text.size() - 2 - 9;
    if (text[star] != '*' || text[head.size()] != '{' || text[star - 1] != '}') return false;
    uint32_t crc = 0;
    for (size_t i = star + 1; i < star + 9; ++i) {
        const char c = text[i];
        if (c >= '0' && c <= '9') crc = (crc << 4) | uint32_t(c - '0');
        else if (c >= 'a' && c <= 'f') crc = (crc << 4) | uint32_t(c - 'a' + 10);
        else return false;  // uppercase too: the device writes lowercase
    }
    const std::string json = text.substr(head.size(), star - head.size());
    return crc32(u8(json.c_str()), json.size()) == crc;
}
}  // namespace

TEST("crc32 matches zlib") {
    CHECK_EQ(crc32(u8("123456789"), 9), 0xCBF43926u);
    CHECK_EQ(crc32(u8(""), 0), 0u);
    // incremental == one shot
    uint32_t c = crc32_update(0, u8("1234"), 4);
    CHECK_EQ(crc32_update(c, u8("56789"), 5), 0xCBF43926u);
    CHECK_EQ(crc32_hex(0x0a1b2c3du), std::string("0a1b2c3d"));
}

TEST("base64 RFC 4648 vectors round-trip") {
    const char* plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char* enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; ++i) {
        CHECK_EQ(base64_encode(u8(plain[i]), std::strlen(plain[i])), std::string(enc[i]));
        std::vector<uint8_t> out;
        CHECK(base64_decode(enc[i], std::strlen(enc[i]), out));
        CHECK_EQ(std::string(out.begin(), out.end()), std::string(plain[i]));
    }
    std::vector<uint8_t> all(256);
    for (int i = 0; i < 256; ++i) all[i] = uint8_t(i);
    std::string e = base64_encode(all.data(), all.size());
    std::vector<uint8_t> back;
    CHECK(base64_decode(e.data(), e.size(), back));
    CHECK(back == all);
}

TEST("base64 rejects invalid input") {
    std::vector<uint8_t> out;
    for (const char* bad : {"!!!notbase64!!!", "AAA", "A===", "AA=A", "AA==AAAA", "AB C", "AAAAA", "=AAA"})
        CHECK(!base64_decode(bad, std::strlen(bad), out));
}

TEST("sha256 FIPS vectors") {
    CHECK_EQ(sha256_hex(u8(""), 0),
             std::string("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    CHECK_EQ(sha256_hex(u8("abc"), 3),
             std::string("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    const char* two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    CHECK_EQ(sha256_hex(u8(two), std::strlen(two)),
             std::string("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
    std::vector<uint8_t> million(1000000, 'a');
    Sha256 s;
    for (size_t i = 0; i < million.size(); i += 997) s.update(million.data() + i, std::min<size_t>(997, million.size() - i));
    CHECK_EQ(s.hexdigest(), std::string("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"));
}

TEST("latency stats: population std, min, max") {
    LatencyStats s = latency_stats({62811, 62790, 62802});
    CHECK_EQ(s.min_us, 62790u);
    CHECK_EQ(s.max_us, 62811u);
    CHECK(s.mean_us > 62800.99 && s.mean_us < 62801.01);
    CHECK(s.std_us > 8.60 && s.std_us < 8.61);  // the protocol page's example: 8.6
    LatencyStats e = latency_stats({});
    CHECK_EQ(e.max_us, 0u);
    CHECK_EQ(cycles_to_us(240, 240000000u), 1u);
    CHECK_EQ(cycles_to_us(2400000000ull, 240000000u), 10000000u);
    CHECK_EQ(cycles_to_us(119, 240000000u), 0u);
    CHECK_EQ(cycles_to_us(120, 240000000u), 1u);  // rounds to nearest
}

TEST("json writer escapes and nests") {
    JsonWriter w;
    w.begin_object().field("a", "x\"y\\z\n").key("l").begin_array().value(1).value(int64_t(-2)).end_array();
    w.key("f").value(2.0).key("o").begin_object().field("b", false).end_object().end_object();
    CHECK_EQ(w.str(), std::string("{\"a\":\"x\\\"y\\\\z\\n\",\"l\":[1,-2],\"f\":2.0,\"o\":{\"b\":false}}"));
    JsonWriter c;
    c.begin_object().field("s", std::string("\x01\xff")).end_object();
    CHECK_EQ(c.str(), std::string("{\"s\":\"\\u0001\\u00ff\"}"));
}

TEST("model image: valid image parses") {
    const uint8_t fb[100] = {7};
    std::vector<uint8_t> img = make_model_image(fb, sizeof fb, 4096);
    CHECK_EQ(img.size(), kImageHeaderSize + 100);
    img.resize(4096, 0xFF);  // partition padding
    ModelImage m;
    std::string err;
    CHECK(parse_model_image(img.data(), img.size(), m, err));
    CHECK_EQ(m.length, 100u);
    CHECK_EQ(m.arena_hint, 4096u);
    CHECK_EQ(m.crc32, crc32(fb, sizeof fb));
    CHECK(m.flatbuffer == img.data() + kImageHeaderSize);
}

TEST("model image: every corruption is refused with its reason") {
    const uint8_t fb[100] = {7};
    const std::vector<uint8_t> good = make_model_image(fb, sizeof fb, 4096);
    ModelImage m;
    std::string err;

    std::vector<uint8_t> erased(4096, 0xFF);
    CHECK(!parse_model_image(erased.data(), erased.size(), m, err));
    CHECK(has(err, "erased"));

    std::vector<uint8_t> img = good;
    img[kImageHeaderSize + 50] ^= 0x01;  // one flipped bit in the flatbuffer
    CHECK(!parse_model_image(img.data(), img.size(), m, err));
    CHECK(has(err, "model image CRC mismatch"));
    CHECK(has(err, crc32_hex(crc32(fb, sizeof fb))));

    img = good;
    img[9] ^= 0x01;  // length field: caught by the header CRC
    CHECK(!parse_model_image(img.data(), img.size(), m, err));
    CHECK(has(err, "header CRC"));

    img = good;
    img[0] = 'X';
    CHECK(!parse_model_image(img.data(), img.size(), m, err));
    CHECK(has(err, "bad magic"));

    CHECK(!parse_model_image(good.data(), 16, m, err));
    CHECK(has(err, "too small"));
    CHECK(!parse_model_image(nullptr, 0, m, err));

    // the image is cut short by a smaller partition: refused before reading past the region
    CHECK(!parse_model_image(good.data(), good.size() - 1, m, err));
    CHECK(has(err, "exceeds the partition"));
}

TEST("model image: unsupported version") {
    const uint8_t fb[8] = {1};
    std::vector<uint8_t> img = make_model_image(fb, sizeof fb, 0);
    img[4] = 2;
    const uint32_t hc = crc32(img.data(), 28);
    for (int i = 0; i < 4; ++i) img[28 + i] = uint8_t(hc >> (8 * i));
    ModelImage m;
    std::string err;
    CHECK(!parse_model_image(img.data(), img.size(), m, err));
    CHECK(has(err, "format version 2"));
}

TEST("argument parsing is strict") {
    uint32_t v = 0;
    CHECK(parse_uint("1000", 1000, v) && v == 1000);
    CHECK(!parse_uint("1001", 1000, v));
    CHECK(!parse_uint("-1", 1000, v));
    CHECK(!parse_uint("+1", 1000, v));
    CHECK(!parse_uint("1x", 1000, v));
    CHECK(!parse_uint("99999999999", 0xFFFFFFFFu, v));
    CHECK(!parse_uint("", 10, v));
    CHECK(parse_crc32("CBF43926", v) && v == 0xCBF43926u);
    CHECK(!parse_crc32("xyz", v));
    CHECK(!parse_crc32("123456789", v));
    CHECK(!parse_crc32("1234567", v));
    CHECK_EQ(split_tokens("  infer  3 1 ").size(), size_t(3));
}

TEST("marker is high exactly around each timed invoke, not warm-ups") {
    Bench b;
    std::string r = b.send("infer 3 2 5");
    CHECK(has(r, "\"ok\":true"));
    CHECK_EQ(b.marker.events, std::string("IIHILHILHIL"));
    CHECK(!b.marker.high());
    CHECK_EQ(b.clock.slept_ms, uint64_t(15));  // GAP_MS after each timed inference
    CHECK(has(r, "\"n\":3,\"warmup\":2,\"gap_ms\":5"));
    CHECK(has(r, "\"cpu_mhz\":240"));
}

TEST("infer latencies come from the cycle counter, across its wrap-around") {
    FakeModelSpec spec;
    spec.latency_us = 50000;
    Bench b(spec);
    b.clock.set_cycles(0xFFFFFFFFu - 1000);  // wraps during the first timed invoke
    std::string r = b.send("infer 2");
    // the fake adds invokes % 5 us: invokes 1 and 2
    CHECK(has(r, "\"latency_us\":[50001,50002]"));
    CHECK(has(r, "\"mean_us\":50001.5"));
    CHECK(has(r, "\"std_us\":0.5"));
}

TEST("an invoke failure is E_INVOKE and leaves the marker low") {
    FakeModelSpec spec;
    spec.fail_invoke_at = 2;
    Bench b(spec);
    std::string r = b.send("infer 3");
    CHECK(has(r, "\"code\":\"E_INVOKE\""));
    CHECK(!b.marker.high());
    CHECK(has(b.send("version"), "\"ok\":true"));
}

TEST("an inference longer than 10 s is E_INVOKE") {
    FakeModelSpec spec;
    spec.latency_us = 10000001;
    Bench b(spec);
    CHECK(has(b.send("infer 1"), "longer than the 10 s limit"));
}

TEST("upload, run: the output is computed from the uploaded input") {
    FakeModelSpec spec;
    spec.input = TensorInfo{{1, 4}, "int8", 0.5f, 0, 4};
    spec.output = TensorInfo{{1, 2}, "int8", 0.5f, 0, 2};
    Bench b(spec);
    const uint8_t in[4] = {1, 2, 3, 4};
    const std::string crc = crc32_hex(crc32(in, 4));
    CHECK(has(b.send("input 4 " + crc), "\"chunk_max\":750"));
    std::string r = b.send("data " + base64_encode(in, 2));
    CHECK(has(r, "\"received\":2,\"bytes\":4}"));
    r = b.send("data " + base64_encode(in + 2, 2));
    CHECK(has(r, "\"complete\":true,\"crc32\":\"" + crc + "\""));
    r = b.send("run");
    const uint8_t out[2] = {10, 41};  // sum 10, then 10 + 31
    CHECK(has(r, "\"output\":\"" + base64_encode(out, 2) + "\""));
    CHECK(has(r, "\"output_crc32\":\"" + crc32_hex(crc32(out, 2)) + "\""));
    CHECK_EQ(b.marker.events, std::string("HIL"));
    // the stored input survives the arena: a second run gives the same output
    CHECK(has(b.send("run"), base64_encode(out, 2)));
}

TEST("upload errors discard the upload") {
    FakeModelSpec spec;
    spec.input = TensorInfo{{1, 4}, "int8", 0.5f, 0, 4};
    Bench b(spec);
    const uint8_t in[6] = {1, 2, 3, 4, 5, 6};
    const std::string crc = crc32_hex(crc32(in, 4));
    CHECK(has(b.send("input 4 " + crc), "\"ok\":true"));
    CHECK(has(b.send("data " + base64_encode(in, 6)), "E_LENGTH"));
    CHECK(has(b.send("data AAAA"), "E_STATE"));
    CHECK(has(b.send("input 4 " + crc), "\"ok\":true"));
    CHECK(has(b.send("data " + base64_encode(in + 1, 4)), "E_CRC"));
    CHECK(has(b.send("run"), "E_STATE"));
    CHECK(has(b.send("data"), "E_STATE"));
    CHECK(has(b.send("input 4"), "E_ARGS"));
    CHECK(has(b.send("input 4 " + crc), "\"ok\":true"));
    CHECK(has(b.send("data"), "E_ARGS"));
    std::vector<uint8_t> big(751, 0);
    CHECK(has(b.send("input 4 " + crc), "\"ok\":true"));
    CHECK(has(b.send("data " + base64_encode(big.data(), big.size())), "exceeds chunk_max"));
}

TEST("line framing: CRLF, split feeds, overlong line, blank line") {
    Bench b;
    b.serial.text.clear();
    b.device.feed("vers", 4);
    CHECK(b.serial.text.empty());
    b.device.feed("ion\r\n", 5);
    CHECK(has(b.serial.text, "@hil {\"ok\":true,\"cmd\":\"version\""));
    CHECK(b.serial.text.size() >= 2 && b.serial.text.substr(b.serial.text.size() - 2) == "\r\n");

    std::string exactly(1024, 'x');
    CHECK(has(b.send(exactly), "E_UNKNOWN_CMD"));
    CHECK(has(b.send(exactly + "\r"), "E_UNKNOWN_CMD"));  // the \r does not count
    std::string too_long(1025, 'x');
    std::string r = b.send(too_long);
    CHECK(has(r, "\"cmd\":\"?\""));
    CHECK(has(r, "E_LINE_TOO_LONG"));
    b.serial.text.clear();
    std::string huge(100000, 'y');
    b.device.feed(huge.data(), huge.size());
    CHECK(b.serial.text.empty());
    b.device.feed("\nversion\n", 9);
    CHECK(has(b.serial.text, "E_LINE_TOO_LONG"));
    CHECK(has(b.serial.text, "\"cmd\":\"version\""));
    CHECK(b.send("").empty());
}

TEST("reset replies, restarts and forgets the upload") {
    FakeModelSpec spec;
    spec.input = TensorInfo{{1, 4}, "int8", 0.5f, 0, 4};
    Bench b(spec);
    const uint8_t in[4] = {0, 0, 0, 0};
    b.send("input 4 " + crc32_hex(crc32(in, 4)));
    CHECK(has(b.send("data " + base64_encode(in, 4)), "\"complete\":true"));
    std::string r = b.send("reset");
    CHECK_EQ(r.find("@hil {\"ok\":true,\"cmd\":\"reset\"}"), size_t(0));
    CHECK(has(r, "hil-ready protocol=2"));
    CHECK_EQ(b.system.restarts, 1);
    CHECK(has(b.send("run"), "E_STATE"));
}

TEST("hello reports model, arena, tensors and ops") {
    Bench b;
    std::string r = b.send("hello");
    CHECK(has(r, "\"ok\":true,\"cmd\":\"hello\",\"protocol\":2,\"firmware\":\"0.2.0\""));
    const uint8_t fb[40] = {1, 2, 3};
    CHECK(has(r, "\"crc32\":\"" + crc32_hex(crc32(fb, 40)) + "\""));
    CHECK(has(r, "\"sha256\":\"" + sha256_hex(fb, 40) + "\",\"bytes\":40"));
    CHECK(has(r, "\"arena\":{\"configured\":65536,\"used\":30512,\"requested\":65536}"));
    CHECK(has(r, "\"input\":{\"shape\":[1,32,32,1],\"dtype\":\"int8\""));
    CHECK(has(r, "\"zero_point\":-128,\"bytes\":1024"));
    CHECK(has(r, "\"ops\":[\"CONV_2D\",\"MAX_POOL_2D\""));
    CHECK(has(r, "\"marker_gpio\":4"));
}

TEST("a model TFLM refuses: hello says why, with what is known; commands are E_MODEL") {
    FakeModelSpec spec;
    spec.arena_needs = 30512;
    Bench b(spec, 16384);
    std::string r = b.send("hello");
    CHECK(has(r, "\"ok\":false"));
    CHECK(has(r, "\"code\":\"E_MODEL\""));
    CHECK(has(r, "arena too small: needs 30512 bytes, has 16384"));
    CHECK(has(r, "\"ops\":[\"CONV_2D\""));
    CHECK(has(r, "\"model\":{\"crc32\""));
    CHECK(has(b.send("infer 1"), "E_MODEL"));
    CHECK(has(b.send("run"), "E_MODEL"));
    CHECK(has(b.send("profile"), "E_MODEL"));
    CHECK(has(b.send("input 1024 00000000"), "E_MODEL"));
    CHECK(has(b.send("version"), "\"ok\":true"));
}

TEST("a corrupt image: hello says so and nothing crashes") {
    Bench b;
    std::vector<uint8_t> img = b.image;
    img[kImageHeaderSize + 3] ^= 0xFF;
    b.device.load_model_image(img.data(), img.size(), 65536);
    std::string r = b.send("hello");
    CHECK(has(r, "\"ok\":false"));
    CHECK(has(r, "model image CRC mismatch"));
    CHECK(!has(r, "\"model\":"));
    CHECK(has(b.send("infer 1"), "E_MODEL"));
}

TEST("profile lists every op in order and the total") {
    Bench b;
    std::string r = b.send("profile");
    CHECK(has(r, "{\"index\":0,\"op\":\"CONV_2D\",\"us\":8971}"));
    CHECK(has(r, "{\"index\":6,\"op\":\"SOFTMAX\""));
    CHECK(has(r, "\"total_us\":62801"));
}

TEST("unknown command and extra arguments") {
    Bench b;
    std::string r = b.send("frobnicate 1 2");
    CHECK(has(r, "\"cmd\":\"frobnicate\",\"code\":\"E_UNKNOWN_CMD\""));
    CHECK(has(b.send("version 1"), "E_ARGS"));
    CHECK(has(b.send("run 1"), "E_ARGS"));
    CHECK(has(b.send("infer 2 1 2 9"), "E_ARGS"));
}

int main(int argc, char** argv) { return tinytest::run_all(argc, argv); }

TEST("json numbers need no printf float support and match %.9g") {
    // The values of the issue (newlib-nano printed "scale":.0), and the scales the protocol carries.
    CHECK_EQ(format_json_number(0.0), std::string("0.0"));
    CHECK_EQ(format_json_number(1e-9), std::string("1e-09"));
    CHECK_EQ(format_json_number(3.25), std::string("3.25"));
    CHECK_EQ(format_json_number(-0.5), std::string("-0.5"));
    CHECK_EQ(format_json_number(62801.0), std::string("62801.0"));
    CHECK_EQ(format_json_number(double(0.00392156886f)), std::string("0.00392156886"));
    CHECK_EQ(format_json_number(double(0.00390625f)), std::string("0.00390625"));
    CHECK_EQ(format_json_number(1e20), std::string("1e+20"));
    CHECK_EQ(format_json_number(123456789.0), std::string("123456789.0"));
    CHECK_EQ(format_json_number(1234567890.0), std::string("1.23456789e+09"));
    CHECK_EQ(format_json_number(0.0001), std::string("0.0001"));
    CHECK_EQ(format_json_number(0.00001), std::string("1e-05"));
    CHECK_EQ(format_json_number(999999999.5), std::string("1e+09"));
    CHECK_EQ(format_json_number(std::nan("")), std::string("null"));
    CHECK_EQ(format_json_number(-HUGE_VAL), std::string("null"));
    CHECK_EQ(format_json_number(62801.25, 1), std::string("62801.2"));  // ties to even, as printf
    CHECK_EQ(format_json_number(62801.35, 1), std::string("62801.4"));
    CHECK_EQ(format_json_number(-0.04, 1), std::string("0.0"));
    CHECK_EQ(format_json_number(-2.5, 1), std::string("-2.5"));
    CHECK_EQ(format_json_number(7.0, 0), std::string("7"));
    // Against the host's printf over float32 values of every magnitude: the text parses back to the
    // same float32, and is printf's own text (ties round to even as in printf; allow 1 in 10,000 to differ
    // in the last digit, from a libm's rounding of the scaling).
    uint32_t state = 12345u, differ = 0, total = 0;
    for (int i = 0; i < 200000; ++i) {
        state = state * 1664525u + 1013904223u;
        const uint32_t bits = (state & 0x807FFFFFu) | (uint32_t(1 + (state >> 8) % 253) << 23);
        float f;
        std::memcpy(&f, &bits, 4);
        const std::string ours = format_json_number(double(f));
        char want[40];
        std::snprintf(want, sizeof want, "%.9g", double(f));
        ++total;
        if (ours.compare(0, std::strlen(want), want) != 0) ++differ;
        if (std::strtof(ours.c_str(), nullptr) != f) {
            CHECK_EQ(ours, std::string(want));
            break;
        }
    }
    CHECK(differ * 10000 < total);
}

TEST("operator check: custom operators by custom code, TFLM_DECODE needs compression") {
    const std::vector<std::string> supported{"CONV_2D", "FULLY_CONNECTED", "TFLM_DECODE"};
    std::string error;
    CHECK(check_operators({"TFLM_DECODE", "CONV_2D"}, supported, true, error));
    CHECK(!check_operators({"CONV_2D", "CUSTOM"}, supported, true, error));
    CHECK_EQ(error, std::string("unsupported operator CUSTOM (not in the firmware's ops.txt)"));
    CHECK(!check_operators({"TFLM_DECODE"}, {"CONV_2D"}, false, error));
    CHECK(has(error, "USE_TFLM_COMPRESSION"));
    CHECK_EQ(std::string(builtin_operator_name(3)), std::string("CONV_2D"));
    CHECK_EQ(std::string(builtin_operator_name(32)), std::string("CUSTOM"));
    CHECK(builtin_operator_name(-1) == nullptr);
    CHECK(builtin_operator_name(100000) == nullptr);
    // The firmware's list comes from ops.txt, TFLM_DECODE included in this (fake-runtime) build.
    const auto& fw = firmware_operators();
    CHECK(firmware_has_tflm_compression());
    CHECK(std::find(fw.begin(), fw.end(), "TFLM_DECODE") != fw.end());
    CHECK(std::find(fw.begin(), fw.end(), "CONV_2D") != fw.end());
    CHECK(std::find(fw.begin(), fw.end(), "CUSTOM") == fw.end());
    // Malformed flatbuffers are refused, never read out of bounds (ASan watches).
    std::vector<std::string> ops;
    const uint8_t junk[16] = {0xff, 0xff, 0xff, 0x7f, 'T', 'F', 'L', '3'};
    CHECK(!model_operator_names(junk, sizeof junk, ops, error));
    CHECK(ops.empty());
    CHECK(!model_operator_names(junk, 4, ops, error));
}

TEST("every reply line ends in the CRC32 of its JSON text") {
    Bench b;
    // docs/protocol.md's example, byte for byte (BoardInfo{}: firmware 0.2.0, board esp32)
    CHECK_EQ(b.send("version"), std::string("@hil {\"ok\":true,\"cmd\":\"version\",\"protocol\":2,"
                                            "\"firmware\":\"0.2.0\",\"board\":\"esp32\"}*2747703d\r\n"));
    // an error reply (CRC from Python's zlib.crc32)
    CHECK_EQ(b.send("frobnicate"),
             std::string("@hil {\"ok\":false,\"cmd\":\"frobnicate\",\"code\":\"E_UNKNOWN_CMD\",\"error\":\"unknown "
                         "command 'frobnicate' (commands: version hello sync infer input data run profile reset)\"}"
                         "*60826df1\r\n"));
    CHECK_EQ(b.send("sync 17"),
             std::string("@hil {\"ok\":true,\"cmd\":\"sync\",\"token\":17,\"protocol\":2}*2f2d3c90\r\n"));
    for (const char* line : {"hello", "infer 3 1 0", "profile", "run", "input 1 00000000", "data AAAA", "sync",
                             "version 1", "version *00000000", "*", "\x01\x7f\xff"}) {
        const std::string r = b.send(line);
        CHECK(valid_reply_line(r));
        if (!valid_reply_line(r)) std::fprintf(stderr, "  reply to '%s': %s", line, r.c_str());
    }
    CHECK(valid_reply_line(b.send(std::string(1025, 'x'))));  // E_LINE_TOO_LONG
    std::string r = b.send("version");
    r[20] ^= 0x01;  // one flipped bit anywhere in the JSON text is caught
    CHECK(!valid_reply_line(r));
    // the boot line is a log line, not a reply: no CRC
    b.serial.text.clear();
    b.device.announce_ready();
    CHECK_EQ(b.serial.text, std::string("hil-ready protocol=2\r\n"));
}

TEST("a signed command line executes as the command without its suffix") {
    Bench b;
    CHECK(has(b.send(sign("version")), "\"ok\":true,\"cmd\":\"version\",\"protocol\":2"));
    // the protocol page's examples, CRCs from zlib
    std::string r = b.send("infer 10 2 5 *0da420aa");
    CHECK(has(r, "\"ok\":true,\"cmd\":\"infer\",\"n\":10,\"warmup\":2,\"gap_ms\":5"));
    CHECK_EQ(b.runner.invokes, 12u);
    CHECK(has(b.send("sync 17 *25fd3c5d"), "\"token\":17"));
    // uppercase hex, trailing spaces after the suffix, CRLF
    CHECK(has(b.send("sync 17 *25FD3C5D"), "\"ok\":true,\"cmd\":\"sync\",\"token\":17"));
    CHECK(has(b.send("sync 17 *25fd3c5d   "), "\"ok\":true,\"cmd\":\"sync\",\"token\":17"));
    CHECK(has(b.send("sync 17 *25fd3c5d \r"), "\"ok\":true,\"cmd\":\"sync\",\"token\":17"));
    CHECK(has(b.send(sign("reset")), "\"ok\":true,\"cmd\":\"reset\""));
    CHECK_EQ(b.system.restarts, 1);
    // the CRC covers every byte before the suffix's space, extra spaces included
    CHECK(has(b.send(sign("version ")), "\"ok\":true,\"cmd\":\"version\""));
    CHECK(has(b.send(sign(" infer  1")), "\"ok\":true,\"cmd\":\"infer\",\"n\":1"));
    // the command after stripping is parsed as usual
    CHECK(has(b.send(sign("infer 0")), "\"cmd\":\"infer\",\"code\":\"E_ARGS\""));
    CHECK(has(b.send(sign("frobnicate")), "\"cmd\":\"frobnicate\",\"code\":\"E_UNKNOWN_CMD\""));
    // only the last token counts: a '*' elsewhere is an argument
    CHECK(has(b.send("infer *3 1"), "\"cmd\":\"infer\",\"code\":\"E_ARGS\""));
    CHECK(has(b.send(sign("data *")), "\"cmd\":\"data\",\"code\":\"E_STATE\""));
}

TEST("a line CRC that does not match executes nothing") {
    Bench b;
    b.serial.text.clear();
    std::string r = b.send("reset *00000000");
    CHECK(has(r, "{\"ok\":false,\"cmd\":\"?\",\"code\":\"E_LINE_CRC\",\"error\":\"command line CRC mismatch"));
    CHECK(!has(r, "hil-ready"));
    CHECK_EQ(b.system.restarts, 0);
    const uint32_t cycles = b.clock.cycles();
    r = b.send("infer 1 *00000000");
    CHECK(has(r, "\"cmd\":\"?\",\"code\":\"E_LINE_CRC\""));
    CHECK_EQ(b.runner.invokes, 0u);
    CHECK_EQ(b.clock.cycles(), cycles);
    CHECK(b.marker.events.empty());
    // a valid CRC of another line; one flipped bit in the command; the CRC of the line with its space
    const std::string infer2 = sign("infer 2");
    CHECK(has(b.send("infer 1" + infer2.substr(7)), "E_LINE_CRC"));
    std::string flipped = sign("infer 1");
    flipped[6] = '3';
    CHECK(has(b.send(flipped), "E_LINE_CRC"));
    CHECK(has(b.send("infer 1 *" + crc32_hex(crc32(u8("infer 1 "), 8))), "E_LINE_CRC"));
    CHECK_EQ(b.runner.invokes, 0u);
    // an upload in progress is untouched by a refused line
    FakeModelSpec spec;
    spec.input = TensorInfo{{1, 4}, "int8", 0.5f, 0, 4};
    Bench u(spec);
    const uint8_t in[4] = {9, 8, 7, 6};
    CHECK(has(u.send("input 4 " + crc32_hex(crc32(in, 4))), "\"ok\":true"));
    CHECK(has(u.send("input 4 00000000 *00000000"), "E_LINE_CRC"));
    CHECK(has(u.send("data " + base64_encode(in, 4) + " *00000000"), "E_LINE_CRC"));
    CHECK(has(u.send("data " + base64_encode(in, 4)), "\"complete\":true"));
}

TEST("malformed line CRC suffixes are E_LINE_CRC") {
    Bench b;
    const char* bad[] = {
        "infer 3 *12",         // too short
        "infer 3 *zzzzzzzz",   // not hex
        "*",                   // a lone '*'
        "infer 3 *",           // '*' without digits
        "*cbf43926",           // no command before it
        " *cbf43926",          // no byte before the space
        "version *123456789",  // 9 digits
        "version **1234567",   // '*' in the digits
        "version *0x123456",   // a prefix
        "version *-1234567",
        "version*00000000 *zz",
        "infer 1 *00000000x",
    };
    for (const char* line : bad) {
        const std::string r = b.send(line);
        CHECK(has(r, "{\"ok\":false,\"cmd\":\"?\",\"code\":\"E_LINE_CRC\",\"error\":\"malformed command line CRC"));
        CHECK(valid_reply_line(r));
        if (!has(r, "E_LINE_CRC")) std::fprintf(stderr, "  '%s' -> %s", line, r.c_str());
    }
    CHECK_EQ(b.runner.invokes, 0u);
    // spaces alone are still a blank line: no reply
    CHECK(b.send("   ").empty());
}

TEST("check_line_crc: the command's length, the CRCs") {
    size_t n = 0;
    uint32_t got = 0, want = 0;
    CHECK(check_line_crc("version", n, got, want) == LineCrc::kNone && n == 7);
    CHECK(check_line_crc("version  ", n, got, want) == LineCrc::kNone && n == 7);
    CHECK(check_line_crc("", n, got, want) == LineCrc::kNone && n == 0);
    CHECK(check_line_crc("sync 17 *25fd3c5d", n, got, want) == LineCrc::kValid && n == 7);
    CHECK(check_line_crc("sync 17 *25FD3c5D  ", n, got, want) == LineCrc::kValid && n == 7);
    CHECK(check_line_crc("sync 18 *25fd3c5d", n, got, want) == LineCrc::kMismatch);
    CHECK_EQ(got, 0x25fd3c5du);
    CHECK_EQ(want, crc32(u8("sync 18"), 7));
    CHECK(check_line_crc("x *cbf43926", n, got, want) == LineCrc::kMismatch);
    CHECK(check_line_crc("123456789 *cbf43926", n, got, want) == LineCrc::kValid && n == 9);
    CHECK(check_line_crc("*cbf43926", n, got, want) == LineCrc::kMalformed);
    CHECK(check_line_crc("sync *2", n, got, want) == LineCrc::kMalformed);
}

TEST("sync echoes its token and changes nothing") {
    FakeModelSpec spec;
    spec.input = TensorInfo{{1, 4}, "int8", 0.5f, 0, 4};
    spec.output = TensorInfo{{1, 2}, "int8", 0.5f, 0, 2};
    Bench b(spec);
    CHECK(has(b.send("sync 0"), "{\"ok\":true,\"cmd\":\"sync\",\"token\":0,\"protocol\":2}*"));
    CHECK(has(b.send("sync 4294967295"), "{\"ok\":true,\"cmd\":\"sync\",\"token\":4294967295,\"protocol\":2}*"));
    for (const char* bad : {"sync", "sync x", "sync 4294967296", "sync 99999999999", "sync -1", "sync +1", "sync 1 2",
                            "sync 0x10"})
        CHECK(has(b.send(bad), "{\"ok\":false,\"cmd\":\"sync\",\"code\":\"E_ARGS\""));
    // a pending upload stays pending across sync (signed or not), and completes
    const uint8_t in[4] = {1, 2, 3, 4};
    const std::string crc = crc32_hex(crc32(in, 4));
    CHECK(has(b.send("input 4 " + crc), "\"ok\":true"));
    CHECK(has(b.send("data " + base64_encode(in, 2)), "\"received\":2,\"bytes\":4}"));
    CHECK(has(b.send("sync 7"), "\"token\":7"));
    CHECK(has(b.send(sign("sync 8")), "\"token\":8"));
    CHECK(has(b.send("sync"), "E_ARGS"));
    CHECK(has(b.send("data " + base64_encode(in + 2, 2)),
              "\"received\":4,\"bytes\":4,\"complete\":true,\"crc32\":\"" + crc + "\""));
    const uint8_t out[2] = {10, 41};
    CHECK(has(b.send("run"), base64_encode(out, 2)));
    // ... and sync without an upload neither loads nor clears anything
    CHECK(has(b.send("sync 9"), "\"ok\":true"));
    CHECK(has(b.send("run"), base64_encode(out, 2)));
    CHECK(has(b.send("data AAAA"), "E_STATE"));
    CHECK_EQ(b.system.restarts, 0);
}


// --- memory: the arena against the heap, the protocol's reserve ------------------------------------------

TEST("fit_arena: the whole request when it fits beside the reserve, else the most that does, else a reason") {
    std::string error;
    CHECK_EQ(fit_arena(50000, 100000, true, 20000, error), 50000u);
    CHECK_EQ(fit_arena(90000, 100000, true, 20000, error), 80000u);   // cut to what leaves the reserve
    CHECK_EQ(fit_arena(90000, 100007, true, 20000, error), 80000u);   // rounded down to 16
    CHECK_EQ(fit_arena(90000, 100000, false, 20000, error), 90000u);  // PSRAM: the reserve is elsewhere
    CHECK(error.empty());
    CHECK_EQ(fit_arena(90000, 20500, true, 20000, error), 0u);
    CHECK(has(error, "largest free block is 20500 bytes and the protocol keeps 20000; the model asks for 90000"));
}

TEST("shrink_arena: down by the deficit while TFLM's measured use still fits") {
    CHECK_EQ(shrink_arena(100000, 60000, 10000), 90000u);
    CHECK_EQ(shrink_arena(100000, 60000, 10001), 89984u);  // rounded down to 16: the whole deficit comes back
    CHECK_EQ(shrink_arena(100000, 95000, 10000), 0u);      // the model needs more than would remain
    CHECK_EQ(shrink_arena(1000, 0, 5000), 0u);
}

TEST("protocol_reserve grows with the input, the output and the operator count") {
    const uint32_t base = protocol_reserve(0, 0, 0);
    CHECK(base >= 2048u);
    CHECK_EQ(protocol_reserve(1000, 0, 0), base + 1000u);
    CHECK_EQ(protocol_reserve(0, 100, 0), base + 600u);
    CHECK(protocol_reserve(0, 0, 10) > base);
}


TEST("an arena hint larger than the heap allows is cut to fit beside the reserve, and hello says so") {
    FakeModelSpec spec;  // input 1024 B, output 10 B, 7 operators
    const uint32_t reserve = protocol_reserve(1024, 10, 7);
    Bench b(spec, 120000, 100000);
    CHECK(b.device.model_ok());
    const std::string r = b.send("hello");
    // the first fit kept no room for the tensors' buffers: the arena was then shrunk until the reserve fits
    const uint32_t cut = uint32_t((100000 - reserve) & ~size_t(15));
    CHECK(has(r, "\"configured\":" + std::to_string(cut) + ",\"used\":30512,\"requested\":120000"));
    CHECK(b.memory.heap_largest_block() >= reserve);
    CHECK(has(r, "\"reserve\":" + std::to_string(reserve)));
}

namespace {
// The runner's arena use, and what it needs, set to `arena_used`.
FakeModelSpec using_arena(uint32_t arena_used) {
    FakeModelSpec s;
    s.arena_used = s.arena_needs = arena_used;
    return s;
}
}  // namespace

TEST("a model that leaves the protocol less than its reserve is refused at load, not left to abort later") {
    // 60,000 + 35,000 of 100,000: the reserve does not fit, and TFLM needs 59,000 of the arena
    Bench b(using_arena(59000), 60000, 100000, true, 35000);
    CHECK(!b.device.model_ok());
    CHECK(has(b.device.model_error(), "out of heap with this model loaded: the largest free block is 5000 bytes"));
    CHECK(has(b.device.model_error(), "of which TFLM uses 59000"));
    CHECK_EQ(b.memory.arena_bytes(), size_t(0));  // nothing kept allocated
    CHECK(has(b.device.model_error(), "the protocol needs " + std::to_string(protocol_reserve(1024, 10, 7))));
    CHECK(has(b.send("infer 1"), "E_MODEL"));
}

TEST("short of the reserve after a load, the arena shrinks to what TFLM measured it uses") {
    Bench b(using_arena(30000), 60000, 100000, true, 35000);
    CHECK(b.device.model_ok());
    const uint32_t reserve = protocol_reserve(1024, 10, 7);
    CHECK_EQ(b.runner.arena_configured(), uint32_t((100000 - 35000 - reserve) & ~size_t(15)));
    CHECK(b.memory.heap_largest_block() >= reserve);
}

TEST("a model refused in an arena cut to fit says so, with the sizes") {
    FakeModelSpec spec;
    spec.arena_needs = 95000;
    Bench b(spec, 120000, 100000);
    CHECK(!b.device.model_ok());
    CHECK(has(b.device.model_error(), "arena too small: needs 95000 bytes"));
    CHECK(has(b.device.model_error(), "(the arena was cut from the requested 120000 bytes: the heap's largest block "
                                      "is 100000 and the load and the protocol keep " +
                                          std::to_string(load_reserve(0, 0, 0)) + ")"));
}

TEST("with the arena in other memory (PSRAM) the hint is kept whole") {
    Bench b(FakeModelSpec{}, 200000, 20000, false);
    CHECK(b.device.model_ok());
    CHECK(has(b.send("hello"), "\"configured\":200000"));
}

TEST("reloading a model frees the previous arena") {
    Bench b(FakeModelSpec{}, 50000, 1000000);
    CHECK_EQ(b.memory.arena_bytes(), size_t(50000));
    b.device.load_model_image(b.image.data(), b.image.size(), 65536);
    CHECK_EQ(b.memory.arena_bytes(), size_t(50000));
}

// --- op_profile, log_tail, fatal ----------------------------------------------------------------------------

TEST("OpProfile: events up to its size; beyond it profile fails instead of dropping times silently") {
    OpProfile p;
    CHECK(p.reserve(2));
    const uint32_t a = p.begin("CONV_2D", 100);
    const uint32_t b = p.begin("SOFTMAX", 340);
    p.end(b, 580);
    p.end(a, 820);
    std::vector<OpTiming> t;
    std::string error;
    CHECK(p.timings(240000000u, t, error));
    CHECK_EQ(t.size(), size_t(2));
    CHECK_EQ(t[0].op, std::string("CONV_2D"));
    CHECK_EQ(t[0].us, 3u);  // 720 cycles at 240 MHz
    CHECK_EQ(t[1].us, 1u);
    p.end(p.begin("ADD", 0), 10);  // a third event: dropped
    CHECK_EQ(p.dropped(), size_t(1));
    CHECK(!p.timings(240000000u, t, error));
    CHECK(has(error, "dropped 1 (the buffer holds 2)"));
    p.clear();
    CHECK(p.timings(240000000u, t, error) && t.empty());
}

TEST("TFLM's log reaches the refusal through the DebugLog callback, on one line") {
    tflm_log().clear();
    hil_tflm_log_callback("Failed to allocate tail memory. Requested: 8224, available 1024, missing: 7200\n");
    hil_tflm_log_callback("Failed starting model allocation.\n");
    CHECK_EQ(tflm_log().text(), std::string("Failed to allocate tail memory. Requested: 8224, available 1024, "
                                            "missing: 7200; Failed starting model allocation."));
    tflm_log().clear();
    CHECK(tflm_log().text().empty());
    const std::string long_text(LogTail::kCapacity + 50, 'x');
    hil_tflm_log_callback(long_text.c_str());
    const std::string kept = tflm_log().text();
    CHECK_EQ(kept.size(), LogTail::kCapacity);
    CHECK_EQ(kept.substr(kept.size() - 3), std::string("..."));
    tflm_log().clear();
}

TEST("a fatal stop is one hil-fatal line, written without the heap, cut to its buffer") {
    StringSerial serial;
    write_fatal(serial, "out of memory\nnew failed");
    CHECK_EQ(serial.text, std::string("hil-fatal out of memory new failed\r\n"));
    char buf[16];
    const size_t n = format_fatal(buf, sizeof buf, "abort() called");
    CHECK_EQ(std::string(buf, n), std::string("hil-fatal abor\r\n"));
}

TEST("the boot line names the reset reason when the platform knows it") {
    Bench b;
    b.serial.text.clear();
    b.device.announce_ready("panic");
    CHECK_EQ(b.serial.text, std::string("hil-ready protocol=2 reset=panic\r\n"));
    b.serial.text.clear();
    b.device.announce_ready();
    CHECK_EQ(b.serial.text, std::string("hil-ready protocol=2\r\n"));
}
