// hil_core_host: the firmware's portable core speaking docs/protocol.md on stdin/stdout, with a fake
// clock, marker pin and model. tests/firmware/ runs the protocol vectors and model images against it.
//
//   hil_core_host [--image FILE] [--partition-size N] [--arena-needs N] [--latency-us N] [--cpu-mhz N]
//                 [--input-shape 1,32,32,1] [--input-dtype int8] [--output-shape 1,10] [--output-dtype int8]
//                 [--ops CONV_2D,SOFTMAX] [--check-ops 1]
//
// --check-ops 1: the firmware's operator check (core/model_ops.hpp) against ops.txt, as on the board: the
// image must then hold a real TFLite flatbuffer, and hello lists the operators read from it.
// --image: a model partition dump (model image + padding) validated exactly as on the board;
// without it a small built-in image is loaded.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

#include "core/device.hpp"
#include "core/model_image.hpp"
#include "core/model_ops.hpp"
#include "fakes.hpp"

using namespace hil;
using namespace hil::host;

namespace {

class StdoutSerial : public Serial {
public:
    void write(const char* data, size_t len) override {
        std::fwrite(data, 1, len, stdout);
        std::fflush(stdout);
    }
};

std::vector<int32_t> parse_shape(const std::string& s) {
    std::vector<int32_t> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) out.push_back(std::atoi(item.c_str()));
    return out;
}

std::vector<std::string> parse_list(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ','))
        if (!item.empty()) out.push_back(item);
    return out;
}

uint32_t dtype_size(const std::string& dtype) {
    if (dtype == "int8" || dtype == "uint8") return 1;
    if (dtype == "int16" || dtype == "float16") return 2;
    return 4;
}

uint32_t tensor_bytes(const TensorInfo& t) {
    uint32_t n = dtype_size(t.dtype);
    for (int32_t d : t.shape) n *= uint32_t(d);
    return n;
}

[[noreturn]] void usage(const char* msg) {
    std::fprintf(stderr, "hil_core_host: %s\n", msg);
    std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
    FakeModelSpec spec;
    std::string image_path;
    long partition_size = -1;
    uint32_t cpu_mhz = 240;
    bool check_ops = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (i + 1 >= argc) usage(("missing value for " + a).c_str());
        std::string v = argv[++i];
        if (a == "--image") image_path = v;
        else if (a == "--partition-size") partition_size = std::atol(v.c_str());
        else if (a == "--arena-needs") spec.arena_needs = uint32_t(std::atol(v.c_str()));
        else if (a == "--latency-us") spec.latency_us = uint32_t(std::atol(v.c_str()));
        else if (a == "--cpu-mhz") cpu_mhz = uint32_t(std::atol(v.c_str()));
        else if (a == "--input-shape") spec.input.shape = parse_shape(v);
        else if (a == "--input-dtype") spec.input.dtype = v;
        else if (a == "--output-shape") spec.output.shape = parse_shape(v);
        else if (a == "--output-dtype") spec.output.dtype = v;
        else if (a == "--ops") spec.ops = parse_list(v);
        else if (a == "--check-ops") check_ops = v == "1";
        else usage(("unknown option " + a).c_str());
    }
    for (TensorInfo* t : {&spec.input, &spec.output}) {
        t->bytes = tensor_bytes(*t);
        if (t->dtype == "float32") {
            t->scale = 0.0f;
            t->zero_point = 0;
        }
    }

    std::vector<uint8_t> region;
    if (image_path.empty()) {
        const uint8_t fake_flatbuffer[64] = {0x1c, 0, 0, 0, 'T', 'F', 'L', '3'};
        region = make_model_image(fake_flatbuffer, sizeof fake_flatbuffer, 32768);
    } else {
        std::ifstream f(image_path, std::ios::binary);
        if (!f) usage(("cannot open " + image_path).c_str());
        region.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    }
    size_t region_size = region.size();
    if (partition_size >= 0) {
        region.resize(size_t(partition_size), 0xFF);  // an erased flash tail, or a partition cut short
        region_size = size_t(partition_size);
    }

    FakeClock clock(cpu_mhz * 1000000u);
    FakeMarker marker(4);
    FakeRunner runner(clock, &marker, spec);
    StdoutSerial serial;
    CallbackSystem system;
    BoardInfo board;
    board.board = "host-core";
    board.board_id = "00:00:00:00:00:00";
    board.simulated = true;
    FakeMemory memory;
    Device device(board, clock, marker, runner, serial, system, memory);
    system.on_restart = [&device] { device.announce_ready(); };

    if (check_ops) device.set_operator_check(&firmware_operators(), firmware_has_tflm_compression());
    device.announce_ready();
    device.load_model_image(region.data(), region_size, 65536);

    char buf[4096];
    for (;;) {
        ssize_t n = ::read(0, buf, sizeof buf);
        if (n <= 0) break;
        device.feed(buf, size_t(n));
    }
    return 0;
}
