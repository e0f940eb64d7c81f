#include "device.hpp"

#include <algorithm>
#include <cstring>

#include "base64.hpp"
#include "crc32.hpp"
#include "json_writer.hpp"
#include "memory.hpp"
#include "model_image.hpp"
#include "model_ops.hpp"
#include "sha256.hpp"
#include "stats.hpp"

namespace hil {

namespace {
void write_tensor(JsonWriter& w, const char* name, const TensorInfo& t) {
    w.key(name).begin_object();
    w.key("shape").begin_array();
    for (int32_t d : t.shape) w.value(int64_t(d));
    w.end_array();
    w.field("dtype", t.dtype);
    w.key("scale").value(double(t.scale));
    w.field("zero_point", int64_t(t.zero_point));
    w.field("bytes", t.bytes);
    w.end_object();
}

JsonWriter ok_reply(const std::string& cmd) {
    JsonWriter w;
    w.begin_object().field("ok", true).field("cmd", cmd);
    return w;
}
}  // namespace

bool parse_uint(const std::string& s, uint32_t max, uint32_t& out) {
    if (s.empty() || s.size() > 10) return false;
    uint64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return false;
        v = v * 10 + uint64_t(c - '0');
    }
    if (v > max) return false;
    out = uint32_t(v);
    return true;
}

bool parse_crc32(const std::string& s, uint32_t& out) {
    if (s.size() != 8) return false;  // the protocol writes CRC32s as exactly 8 hex digits
    uint32_t v = 0;
    for (char c : s) {
        int d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return false;
        v = (v << 4) | uint32_t(d);
    }
    out = v;
    return true;
}

std::vector<std::string> split_tokens(const std::string& line) {
    std::vector<std::string> out;
    size_t i = 0;
    while (i < line.size()) {
        while (i < line.size() && line[i] == ' ') ++i;
        size_t j = i;
        while (j < line.size() && line[j] != ' ') ++j;
        if (j > i) out.push_back(line.substr(i, j - i));
        i = j;
    }
    return out;
}

LineCrc check_line_crc(const std::string& line, size_t& command_len, uint32_t& got, uint32_t& want) {
    size_t end = line.size();
    while (end > 0 && line[end - 1] == ' ') --end;
    command_len = end;
    size_t token = end;  // where the last token starts
    while (token > 0 && line[token - 1] != ' ') --token;
    if (token == end || line[token] != '*') return LineCrc::kNone;
    // ' ' '*' 8 hex digits, with at least one byte before the space (line[token - 1] is that space)
    if (end - token != 9 || token < 2 || !parse_crc32(line.substr(token + 1, 8), got)) return LineCrc::kMalformed;
    want = crc32(reinterpret_cast<const uint8_t*>(line.data()), token - 1);
    if (got != want) return LineCrc::kMismatch;
    command_len = token - 1;
    return LineCrc::kValid;
}

Device::Device(const BoardInfo& board, Clock& clock, MarkerPin& marker, ModelRunner& runner, Serial& serial,
               System& system, Memory& memory)
    : board_(board), clock_(clock), marker_(marker), runner_(runner), serial_(serial), system_(system),
      memory_(memory) {
    marker_.set(false);
}

Device::~Device() { release_model(); }

void Device::announce_ready(const char* reset_reason) {
    std::string line = "hil-ready protocol=" + std::to_string(kProtocolVersion);
    if (reset_reason && *reset_reason) line += std::string(" reset=") + reset_reason;
    log_line(line);
}

void Device::log_line(const std::string& text) {
    std::string s = text + "\r\n";
    serial_.write(s.data(), s.size());
}

void Device::reply(const std::string& json) {
    // version 2: the CRC32 of the JSON text (from its '{' to its closing '}') after a '*'
    // written in three parts: no second copy of a long reply on the heap
    const uint32_t crc = crc32(reinterpret_cast<const uint8_t*>(json.data()), json.size());
    const std::string tail = "*" + crc32_hex(crc) + "\r\n";
    serial_.write("@hil ", 5);
    serial_.write(json.data(), json.size());
    serial_.write(tail.data(), tail.size());
}

void Device::reply_error(const std::string& cmd, const char* code, const std::string& message) {
    JsonWriter w;
    w.begin_object().field("ok", false).field("cmd", cmd).field("code", code).field("error", message);
    reply(w.end_object().str());
}

void Device::clear_state() {
    discard_upload();
    input_loaded_ = false;
    std::fill(input_.begin(), input_.end(), uint8_t(0));
}

void Device::discard_upload() {
    upload_pending_ = false;
    upload_.clear();
    upload_.shrink_to_fit();
    upload_len_ = 0;
    upload_crc_ = 0;
}

void Device::set_operator_check(const std::vector<std::string>* supported, bool tflm_compression) {
    supported_ops_ = supported;
    tflm_compression_ = tflm_compression;
}

void Device::load_model_image(const uint8_t* region, size_t region_size, uint32_t default_arena,
                              uint32_t arena_override) {
    model_ok_ = false;
    model_known_ = false;
    model_ops_.clear();
    clear_state();
    release_model();
    arena_requested_ = 0;
    ModelImage img;
    std::string error;
    if (!parse_model_image(region, region_size, img, error)) {
        model_error_ = error;
        log_line("hil: " + error);
        return;
    }
    model_known_ = true;
    model_crc_ = img.crc32;
    model_bytes_ = img.length;
    model_sha256_ = sha256_hex(img.flatbuffer, img.length);
    if (supported_ops_) {
        if (!model_operator_names(img.flatbuffer, img.length, model_ops_, error) ||
            !check_operators(model_ops_, *supported_ops_, tflm_compression_, error)) {
            model_error_ = error;
            log_line("hil: " + error);
            return;
        }
    }
    arena_requested_ = arena_override ? arena_override : (img.arena_hint ? img.arena_hint : default_arena);
    uint32_t in_bytes = 0, out_bytes = 0;  // from the flatbuffer: the reserve before TFLM has seen the model
    model_io_bytes(img.flatbuffer, img.length, in_bytes, out_bytes);
    const size_t largest_before = memory_.arena_largest_block();
    const uint32_t kept = load_reserve(in_bytes, out_bytes, model_ops_.size());
    uint32_t bytes = fit_arena(arena_requested_, largest_before, memory_.arena_shares_heap(), kept, error);
    if (!bytes || !load_runner(img.flatbuffer, img.length, bytes, error)) {
        model_error_ = error.empty() ? "model could not be loaded" : error;
        if (bytes && bytes < arena_requested_)
            model_error_ += " (the arena was cut from the requested " + std::to_string(arena_requested_) +
                            " bytes: the heap's largest block is " + std::to_string(largest_before) +
                            " and the load and the protocol keep " + std::to_string(kept) + ")";
        log_line("hil: " + model_error_);
        return;
    }
    // Now that the tensors are known: the input buffer, then the heap the protocol keeps beside the model.
    // Short of it, a shared heap gets the arena back down to what TFLM measured it uses.
    input_.assign(runner_.input().bytes, 0);
    const size_t n_ops = std::max(model_ops_.size(), runner_.ops().size());
    reserve_ = protocol_reserve(runner_.input().bytes, runner_.output().bytes, n_ops);
    size_t largest = memory_.heap_largest_block();
    if (largest < reserve_ && memory_.arena_shares_heap()) {
        const uint32_t smaller = shrink_arena(runner_.arena_configured(), runner_.arena_used(), reserve_ - largest);
        if (smaller && !load_runner(img.flatbuffer, img.length, smaller, error)) {
            model_error_ = "reloading with a " + std::to_string(smaller) + "-byte arena failed: " + error;
            release_model();
            log_line("hil: " + model_error_);
            return;
        }
        if (smaller) {  // load_runner released the first load's buffers
            input_.assign(runner_.input().bytes, 0);
            reserve_ = protocol_reserve(runner_.input().bytes, runner_.output().bytes, n_ops);
        }
        largest = memory_.heap_largest_block();
    }
    if (largest < reserve_) {
        model_error_ = "out of heap with this model loaded: the largest free block is " + std::to_string(largest) +
                       " bytes and the protocol needs " + std::to_string(reserve_) + " (input " +
                       std::to_string(runner_.input().bytes) + " B, output " + std::to_string(runner_.output().bytes) +
                       " B, " + std::to_string(n_ops) + " operators; arena " +
                       std::to_string(runner_.arena_configured()) + " B, of which TFLM uses " +
                       std::to_string(runner_.arena_used()) + ")";
        release_model();
        log_line("hil: " + model_error_);
        return;
    }
    heap_at_load_ = uint32_t(largest);
    model_ok_ = true;
    model_error_.clear();
}

bool Device::load_runner(const uint8_t* flatbuffer, size_t length, uint32_t bytes, std::string& error) {
    release_model();
    arena_ = static_cast<uint8_t*>(memory_.alloc_arena(bytes));
    if (!arena_) {
        error = "an arena of " + std::to_string(bytes) + " bytes does not fit the heap (largest free block " +
                std::to_string(memory_.arena_largest_block()) + " bytes)";
        return false;
    }
    if (runner_.load(flatbuffer, length, arena_, bytes, error)) return true;
    release_model();
    return false;
}

void Device::release_model() {
    runner_.unload();
    if (arena_) memory_.free_arena(arena_);
    arena_ = nullptr;
    input_.clear();
    input_.shrink_to_fit();
    reserve_ = 0;
    heap_at_load_ = 0;
}

void Device::feed(const char* data, size_t len) {
    for (size_t i = 0; i < len; ++i) {
        char c = data[i];
        if (c == '\n') {
            if (!line_.empty() && line_.back() == '\r') line_.pop_back();
            if (overflow_ || line_.size() > kMaxLine) {
                reply_error("?", "E_LINE_TOO_LONG",
                            "command line longer than " + std::to_string(kMaxLine) + " bytes discarded");
            } else {
                handle_line(line_);
            }
            line_.clear();
            overflow_ = false;
            continue;
        }
        if (overflow_) continue;
        if (line_.size() >= kMaxLine + 1) {  // room for a trailing '\r'
            overflow_ = true;
            line_.clear();
            continue;
        }
        line_ += c;
    }
}

void Device::handle_line(const std::string& line) {
    size_t command_len = 0;
    uint32_t got = 0, want = 0;
    switch (check_line_crc(line, command_len, got, want)) {
    case LineCrc::kMalformed:
        return reply_error("?", "E_LINE_CRC",
                           "malformed command line CRC (a line may end with ' *' and 8 hex digits after the "
                           "command); nothing executed");
    case LineCrc::kMismatch:
        return reply_error("?", "E_LINE_CRC",
                           "command line CRC mismatch: the line says " + crc32_hex(got) + ", its bytes give " +
                               crc32_hex(want) + "; nothing executed");
    case LineCrc::kNone:
    case LineCrc::kValid:
        break;
    }
    std::vector<std::string> tokens = split_tokens(line.substr(0, command_len));
    if (tokens.empty()) return;  // a blank line is not a command (hosts send one to flush a partial line)
    const std::string cmd = tokens[0];
    std::vector<std::string> args(tokens.begin() + 1, tokens.end());
    if (cmd == "version") {
        if (!args.empty()) return reply_error(cmd, "E_ARGS", "version takes no arguments");
        cmd_version(cmd);
    } else if (cmd == "hello") {
        if (!args.empty()) return reply_error(cmd, "E_ARGS", "hello takes no arguments");
        cmd_hello(cmd);
    } else if (cmd == "sync") {
        cmd_sync(cmd, args);
    } else if (cmd == "infer") {
        cmd_infer(cmd, args);
    } else if (cmd == "input") {
        cmd_input(cmd, args);
    } else if (cmd == "data") {
        cmd_data(cmd, args);
    } else if (cmd == "run") {
        cmd_run(cmd, args);
    } else if (cmd == "profile") {
        cmd_profile(cmd, args);
    } else if (cmd == "reset") {
        cmd_reset(cmd, args);
    } else {
        std::string shown = cmd.size() > 40 ? cmd.substr(0, 40) + "..." : cmd;
        reply_error(cmd, "E_UNKNOWN_CMD",
                    "unknown command '" + shown +
                        "' (commands: version hello sync infer input data run profile reset)");
    }
}

void Device::cmd_version(const std::string& cmd) {
    JsonWriter w = ok_reply(cmd);
    w.field("protocol", kProtocolVersion).field("firmware", board_.firmware).field("board", board_.board);
    reply(w.end_object().str());
}

void Device::cmd_hello(const std::string& cmd) {
    JsonWriter w;
    w.begin_object().field("ok", model_ok_).field("cmd", cmd);
    if (!model_ok_) w.field("code", "E_MODEL").field("error", model_error_);
    w.field("protocol", kProtocolVersion)
        .field("firmware", board_.firmware)
        .field("board", board_.board)
        .field("board_id", board_.board_id)
        .field("simulated", board_.simulated)
        .field("cpu_mhz", (clock_.cpu_hz() + 500000u) / 1000000u)
        .field("marker_gpio", marker_.gpio());
    if (model_known_) {
        w.key("model").begin_object();
        w.field("crc32", crc32_hex(model_crc_)).field("sha256", model_sha256_).field("bytes", model_bytes_);
        w.end_object();
    }
    w.key("arena").begin_object();
    w.field("configured", runner_.arena_configured()).field("used", runner_.arena_used());
    w.field("requested", arena_requested_);
    w.end_object();
    w.key("heap").begin_object();
    w.field("free", uint32_t(memory_.heap_free())).field("largest", uint32_t(memory_.heap_largest_block()));
    w.field("min_free", uint32_t(memory_.heap_min_free())).field("reserve", reserve_);
    w.field("at_load", heap_at_load_);
    w.end_object();
    const TensorInfo in = runner_.input(), out = runner_.output();
    if (in.bytes) write_tensor(w, "input", in);
    if (out.bytes) write_tensor(w, "output", out);
    const std::vector<std::string> runner_ops = model_ops_.empty() ? runner_.ops() : std::vector<std::string>{};
    const std::vector<std::string>& ops = model_ops_.empty() ? runner_ops : model_ops_;
    if (model_known_ && !ops.empty()) {
        w.key("ops").begin_array();
        for (const auto& op : ops) w.value(op);
        w.end_array();
    }
    reply(w.end_object().str());
}

void Device::cmd_sync(const std::string& cmd, const std::vector<std::string>& args) {
    uint32_t token = 0;
    if (args.size() != 1 || !parse_uint(args[0], 0xFFFFFFFFu, token))
        return reply_error(cmd, "E_ARGS", "usage: sync TOKEN with 0 <= TOKEN <= 4294967295");
    // changes nothing: a pending upload stays pending
    JsonWriter w = ok_reply(cmd);
    w.field("token", token).field("protocol", kProtocolVersion);
    reply(w.end_object().str());
}

bool Device::require_model(const std::string& cmd) {
    if (model_ok_) return true;
    reply_error(cmd, "E_MODEL", model_error_);
    return false;
}

bool Device::timed_invoke(bool marker, uint32_t& us, std::string& error) {
    uint8_t* dst = runner_.input_data();
    if (dst && !input_.empty()) std::memcpy(dst, input_.data(), input_.size());
    if (marker) marker_.set(true);
    const uint32_t c0 = clock_.cycles();
    const bool ok = runner_.invoke(error);
    const uint32_t c1 = clock_.cycles();
    if (marker) marker_.set(false);
    us = cycles_to_us(uint32_t(c1 - c0), clock_.cpu_hz());
    if (!ok) {
        if (error.empty()) error = "Invoke() failed";
        return false;
    }
    if (us > kMaxInferUs) {
        error = "inference took " + std::to_string(us) + " us, longer than the 10 s limit";
        return false;
    }
    return true;
}

void Device::cmd_infer(const std::string& cmd, const std::vector<std::string>& args) {
    uint32_t n = 0, warmup = 0, gap_ms = 0;
    const char* usage = "usage: infer N [W [GAP_MS]] with 1 <= N <= 1000, 0 <= W <= 100, 0 <= GAP_MS <= 1000";
    if (args.empty() || args.size() > 3 || !parse_uint(args[0], 1000, n) || n < 1 ||
        (args.size() > 1 && !parse_uint(args[1], 100, warmup)) ||
        (args.size() > 2 && !parse_uint(args[2], 1000, gap_ms)))
        return reply_error(cmd, "E_ARGS", usage);
    if (!require_model(cmd)) return;
    std::string error;
    uint32_t us = 0;
    for (uint32_t i = 0; i < warmup; ++i)
        if (!timed_invoke(false, us, error)) return reply_error(cmd, "E_INVOKE", error);
    std::vector<uint32_t> lat;
    lat.reserve(n);
    for (uint32_t i = 0; i < n; ++i) {
        if (!timed_invoke(true, us, error)) return reply_error(cmd, "E_INVOKE", error);
        lat.push_back(us);
        if (gap_ms) clock_.sleep_ms(gap_ms);
    }
    const LatencyStats s = latency_stats(lat);
    JsonWriter w = ok_reply(cmd);
    w.field("n", n).field("warmup", warmup).field("gap_ms", gap_ms);
    w.key("latency_us").begin_array();
    for (uint32_t v : lat) w.value(v);
    w.end_array();
    w.key("mean_us").value(s.mean_us, 1);
    w.field("min_us", s.min_us).field("max_us", s.max_us);
    w.key("std_us").value(s.std_us, 1);
    w.field("cpu_mhz", (clock_.cpu_hz() + 500000u) / 1000000u);
    reply(w.end_object().str());
}

void Device::cmd_input(const std::string& cmd, const std::vector<std::string>& args) {
    uint32_t len = 0, crc = 0;
    if (args.size() != 2 || !parse_uint(args[0], 0xFFFFFFFFu, len) || !parse_crc32(args[1], crc))
        return reply_error(cmd, "E_ARGS", "usage: input LEN CRC32 (LEN decimal bytes, CRC32 8 hex digits)");
    discard_upload();  // a new `input` discards any pending upload
    if (!require_model(cmd)) return;
    const uint32_t want = runner_.input().bytes;
    if (len != want)
        return reply_error(cmd, "E_LENGTH", "input is " + std::to_string(len) + " bytes, the model's input tensor is " +
                                                std::to_string(want) + " bytes");
    upload_pending_ = true;
    upload_len_ = len;
    upload_crc_ = crc;
    upload_.clear();
    upload_.reserve(len);
    JsonWriter w = ok_reply(cmd);
    w.field("bytes", len).field("chunk_max", kChunkMax);
    reply(w.end_object().str());
}

void Device::cmd_data(const std::string& cmd, const std::vector<std::string>& args) {
    if (!upload_pending_) return reply_error(cmd, "E_STATE", "data without a pending input upload (send input first)");
    if (args.size() != 1) return reply_error(cmd, "E_ARGS", "usage: data B64 (one base64 chunk)");
    std::vector<uint8_t> chunk;
    if (!base64_decode(args[0].data(), args[0].size(), chunk)) {
        discard_upload();
        return reply_error(cmd, "E_BASE64", "data chunk is not valid base64; upload discarded");
    }
    if (chunk.size() > kChunkMax || upload_.size() + chunk.size() > upload_len_) {
        const std::string msg = chunk.size() > kChunkMax
                                    ? "data chunk of " + std::to_string(chunk.size()) + " bytes exceeds chunk_max " +
                                          std::to_string(kChunkMax) + "; upload discarded"
                                    : "data exceeds the announced " + std::to_string(upload_len_) +
                                          " bytes; upload discarded";
        discard_upload();
        return reply_error(cmd, "E_LENGTH", msg);
    }
    upload_.insert(upload_.end(), chunk.begin(), chunk.end());
    JsonWriter w = ok_reply(cmd);
    w.field("received", uint32_t(upload_.size())).field("bytes", upload_len_);
    if (upload_.size() == upload_len_) {
        const uint32_t got = crc32(upload_.data(), upload_.size());
        if (got != upload_crc_) {
            const std::string msg = "upload CRC mismatch: announced " + crc32_hex(upload_crc_) + ", received " +
                                    crc32_hex(got) + "; upload discarded";
            discard_upload();
            return reply_error(cmd, "E_CRC", msg);
        }
        input_.assign(upload_.begin(), upload_.end());
        input_loaded_ = true;
        discard_upload();
        w.field("complete", true).field("crc32", crc32_hex(got));
    }
    reply(w.end_object().str());
}

void Device::cmd_run(const std::string& cmd, const std::vector<std::string>& args) {
    if (!args.empty()) return reply_error(cmd, "E_ARGS", "run takes no arguments");
    if (!require_model(cmd)) return;
    if (!input_loaded_)
        return reply_error(cmd, "E_STATE", "run without a complete input upload since the model was loaded");
    uint32_t us = 0;
    std::string error;
    if (!timed_invoke(true, us, error)) return reply_error(cmd, "E_INVOKE", error);
    const TensorInfo out = runner_.output();
    const uint8_t* data = runner_.output_data();
    JsonWriter w = ok_reply(cmd);
    w.field("latency_us", us)
        .field("output", base64_encode(data, out.bytes))
        .field("output_crc32", crc32_hex(crc32(data, out.bytes)))
        .field("dtype", out.dtype);
    reply(w.end_object().str());
}

void Device::cmd_profile(const std::string& cmd, const std::vector<std::string>& args) {
    if (!args.empty()) return reply_error(cmd, "E_ARGS", "profile takes no arguments");
    if (!require_model(cmd)) return;
    uint8_t* dst = runner_.input_data();
    if (dst && !input_.empty()) std::memcpy(dst, input_.data(), input_.size());
    std::vector<OpTiming> ops;
    std::string error;
    marker_.set(true);
    const uint32_t c0 = clock_.cycles();
    const bool ok = runner_.profile(ops, error);
    const uint32_t c1 = clock_.cycles();
    marker_.set(false);
    if (!ok) return reply_error(cmd, "E_INVOKE", error.empty() ? "profiled Invoke() failed" : error);
    JsonWriter w = ok_reply(cmd);
    w.key("ops").begin_array();
    for (size_t i = 0; i < ops.size(); ++i) {
        w.begin_object().field("index", uint32_t(i)).field("op", ops[i].op).field("us", ops[i].us).end_object();
    }
    w.end_array();
    w.field("total_us", cycles_to_us(uint32_t(c1 - c0), clock_.cpu_hz()));
    reply(w.end_object().str());
}

void Device::cmd_reset(const std::string& cmd, const std::vector<std::string>& args) {
    if (!args.empty()) return reply_error(cmd, "E_ARGS", "reset takes no arguments");
    reply(ok_reply(cmd).end_object().str());
    clear_state();
    system_.restart();
}

}  // namespace hil
