// The protocol of docs/protocol.md: line framing, command parsing, dispatch and reply formatting.
// Platform-independent: everything device-specific goes through the interfaces in interfaces.hpp.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "interfaces.hpp"

namespace hil {

constexpr int kProtocolVersion = 2;
constexpr size_t kMaxLine = 1024;
constexpr uint32_t kChunkMax = 750;
constexpr uint32_t kMaxInferUs = 10000000;  // an inference longer than 10 s aborts with E_INVOKE

class Device {
public:
    Device(const BoardInfo& board, Clock& clock, MarkerPin& marker, ModelRunner& runner, Serial& serial,
           System& system, Memory& memory);
    ~Device();

    // Print the boot line `hil-ready protocol=2` (also after a host-side restart); with the reason of the
    // last reset when the platform knows it (`hil-ready protocol=2 reset=panic`: the host then reports the
    // crash instead of re-issuing its command).
    void announce_ready(const char* reset_reason = nullptr);
    // Turn on the operator check: the flatbuffer's operators (custom operators by their custom code) must
    // all be in `supported` (the firmware's ops.txt, firmware_operators()) or the model is refused with
    // E_MODEL naming the first missing one. `tflm_compression`: the runtime can run TFLM_DECODE.
    void set_operator_check(const std::vector<std::string>* supported, bool tflm_compression);
    // Validate a model image (mapped partition or embedded array) and load it into the runner.
    // `arena_override` > 0 replaces the header's arena hint; `default_arena` is used when the hint is 0.
    // The arena is cut to what the heap holds beside the protocol's reserve (core/memory.hpp), and a model
    // that leaves the protocol less than its reserve is unloaded again.
    // Failures are kept and reported by `hello` (E_MODEL); this never aborts.
    void load_model_image(const uint8_t* region, size_t region_size, uint32_t default_arena,
                          uint32_t arena_override = 0);
    // Bytes from the console; every complete line is answered before the next is read.
    void feed(const char* data, size_t len);
    // Forget the uploaded input and any pending upload (power-on state; the model stays).
    void clear_state();

    bool model_ok() const { return model_ok_; }
    const std::string& model_error() const { return model_error_; }

private:
    void handle_line(const std::string& line);
    void reply(const std::string& json);
    void reply_error(const std::string& cmd, const char* code, const std::string& message);
    void log_line(const std::string& text);

    void cmd_version(const std::string& cmd);
    void cmd_hello(const std::string& cmd);
    void cmd_sync(const std::string& cmd, const std::vector<std::string>& args);
    void cmd_infer(const std::string& cmd, const std::vector<std::string>& args);
    void cmd_input(const std::string& cmd, const std::vector<std::string>& args);
    void cmd_data(const std::string& cmd, const std::vector<std::string>& args);
    void cmd_run(const std::string& cmd, const std::vector<std::string>& args);
    void cmd_profile(const std::string& cmd, const std::vector<std::string>& args);
    void cmd_reset(const std::string& cmd, const std::vector<std::string>& args);

    bool require_model(const std::string& cmd);
    // Load into a fresh arena of `bytes`; false with the runner's reason (the arena is freed again).
    bool load_runner(const uint8_t* flatbuffer, size_t length, uint32_t bytes, std::string& error);
    void release_model();
    // One inference on the stored input with the marker high around Invoke(); false on E_INVOKE.
    bool timed_invoke(bool marker, uint32_t& us, std::string& error);
    void discard_upload();

    BoardInfo board_;
    Clock& clock_;
    MarkerPin& marker_;
    ModelRunner& runner_;
    Serial& serial_;
    System& system_;
    Memory& memory_;

    // line framing
    std::string line_;
    bool overflow_ = false;

    // model
    bool model_ok_ = false;
    std::string model_error_ = "no model loaded";
    uint32_t model_crc_ = 0;
    uint32_t model_bytes_ = 0;
    std::string model_sha256_;
    bool model_known_ = false;  // crc/sha/bytes known (image valid even if TFLM refused it)
    std::vector<std::string> model_ops_;  // from the flatbuffer when the operator check is on
    uint8_t* arena_ = nullptr;            // the runner's tensor arena (memory_)
    uint32_t arena_requested_ = 0;        // what the image asked for (the arena may be cut to fit the heap)
    uint32_t reserve_ = 0;                // heap the protocol keeps while this model is loaded
    uint32_t heap_at_load_ = 0;           // the heap's largest block once the model loaded (checked against reserve_)

    // operator check
    const std::vector<std::string>* supported_ops_ = nullptr;
    bool tflm_compression_ = false;

    // input upload
    std::vector<uint8_t> input_;  // the current input (zeros until an upload completes)
    bool input_loaded_ = false;   // a complete upload since the last model load
    bool upload_pending_ = false;
    uint32_t upload_len_ = 0;
    uint32_t upload_crc_ = 0;
    std::vector<uint8_t> upload_;
};

// Strict argument parsing shared by the commands (decimal integers, CRCs of exactly 8 hex digits).
bool parse_uint(const std::string& s, uint32_t max, uint32_t& out);
bool parse_crc32(const std::string& s, uint32_t& out);
std::vector<std::string> split_tokens(const std::string& line);

// A command line's optional CRC suffix (docs/protocol.md, Transport): after removing trailing spaces, a last
// token that starts with '*' must be '*' and 8 hex digits (either case), preceded by one space and at least one
// byte of command, and be the CRC32 of every byte before that space.
enum class LineCrc {
    kNone,       // no such token: the line is the command as it is
    kValid,      // well-formed and matching: the command is the first `command_len` bytes
    kMalformed,  // the last token starts with '*' but is not a well-formed suffix (E_LINE_CRC)
    kMismatch,   // well-formed, but the CRC is not the line's (E_LINE_CRC)
};
// `command_len`: the length of the command (kNone: the line without trailing spaces; kValid: the bytes before
// the suffix); `got`/`want` (kMismatch): the CRC the line carries and the CRC of its bytes.
LineCrc check_line_crc(const std::string& line, size_t& command_len, uint32_t& got, uint32_t& want);

}  // namespace hil
