#include "tflm_runner.hpp"

#include <new>

#include "core/log_tail.hpp"
#include "core/model_ops.hpp"
#include "core/op_profile.hpp"
#if HIL_TFLM_LOG_CALLBACK  // TFLM's cortex_m_generic DebugLog: its text reaches E_MODEL replies
#include "tensorflow/lite/micro/cortex_m_generic/debug_log_callback.h"
#endif
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/micro/micro_profiler_interface.h"
#include "tensorflow/lite/schema/schema_generated.h"
#include "tensorflow/lite/schema/schema_utils.h"

namespace hil {

namespace {

#define HIL_OP(name, method)  // first pass over the generated list: only HIL_OP_COUNT is wanted
#define HIL_OP_COMPRESSION(name, method)
#include "hil_ops.inc"
#undef HIL_OP
#undef HIL_OP_COMPRESSION

using Resolver = tflite::MicroMutableOpResolver<HIL_OP_COUNT>;

bool register_ops(Resolver& r) {
#define HIL_OP(name, method) \
    if (r.method() != kTfLiteOk) return false;
#if HIL_TFLM_COMPRESSION  // AddDecode() (custom operator "TFLM_DECODE") needs TFLM's USE_TFLM_COMPRESSION
#define HIL_OP_COMPRESSION(name, method) HIL_OP(name, method)
#else  // left out: the core's operator check refuses TFLM_DECODE with the reason
#define HIL_OP_COMPRESSION(name, method)
#endif
#include "hil_ops.inc"
#undef HIL_OP
#undef HIL_OP_COMPRESSION
    return true;
}

// TFLM's profiler interface over the core's OpProfile (sized to the model at load), with CPU-cycle
// timestamps: the interpreter opens one event per operator, tagged with its name.
class CycleProfiler : public tflite::MicroProfilerInterface {
public:
    CycleProfiler(Clock& clock, OpProfile& events) : clock_(clock), events_(events) {}
    uint32_t BeginEvent(const char* tag) override { return events_.begin(tag, clock_.cycles()); }
    void EndEvent(uint32_t handle) override { events_.end(handle, clock_.cycles()); }

private:
    Clock& clock_;
    OpProfile& events_;
};

const char* dtype_name(TfLiteType t) {
    switch (t) {
        case kTfLiteInt8: return "int8";
        case kTfLiteUInt8: return "uint8";
        case kTfLiteInt16: return "int16";
        case kTfLiteInt32: return "int32";
        case kTfLiteFloat32: return "float32";
        case kTfLiteFloat16: return "float16";
        default: return "unknown";
    }
}

TensorInfo describe(const TfLiteTensor* t) {
    TensorInfo info;
    if (!t) return info;
    for (int i = 0; i < t->dims->size; ++i) info.shape.push_back(t->dims->data[i]);
    info.dtype = dtype_name(t->type);
    if (t->type != kTfLiteFloat32) {
        info.scale = t->params.scale;
        info.zero_point = t->params.zero_point;
    }
    info.bytes = uint32_t(t->bytes);
    return info;
}

}  // namespace

struct TflmRunner::Impl {
    explicit Impl(Clock& clock) : profiler(clock, events) {}
    Resolver resolver;
    OpProfile events;
    CycleProfiler profiler;
    tflite::MicroInterpreter* interpreter = nullptr;
    alignas(tflite::MicroInterpreter) uint8_t interpreter_storage[sizeof(tflite::MicroInterpreter)];
    bool resolver_ok = false;

    void release() {
        if (interpreter) interpreter->~MicroInterpreter();
        interpreter = nullptr;
    }
};

TflmRunner::TflmRunner(Clock& clock) : clock_(clock), impl_(new Impl(clock)) {
    impl_->resolver_ok = register_ops(impl_->resolver);
#if HIL_TFLM_LOG_CALLBACK
    RegisterDebugLogCallback(hil_tflm_log_callback);
#endif
}

TflmRunner::~TflmRunner() { impl_->release(); }

namespace {
// TFLM's own words for a failure, when its log reached us (HIL_TFLM_LOG_CALLBACK), else a pointer to the log.
std::string tflm_reason() {
    const std::string text = tflm_log().text();
#if HIL_TFLM_LOG_CALLBACK
    return text.empty() ? "TFLM gave no reason" : "TFLM: " + text;
#else
    return text.empty() ? "TFLM's reason is in the board's log" : "TFLM: " + text;
#endif
}
}  // namespace

void TflmRunner::unload() {
    impl_->release();
    ops_.clear();
    input_ = output_ = TensorInfo{};
}

bool TflmRunner::load(const uint8_t* flatbuffer, size_t length, uint8_t* arena, uint32_t arena_bytes,
                      std::string& error) {
    unload();
    arena_bytes_ = arena_bytes;
    if (!impl_->resolver_ok) {
        error = "op resolver: registering the operators of ops.txt failed (HIL_OP_COUNT too small?)";
        return false;
    }
    flatbuffers::Verifier verifier(flatbuffer, length);
    if (!tflite::VerifyModelBuffer(verifier)) {
        error = "model image holds no valid TFLite flatbuffer";
        return false;
    }
    const tflite::Model* model = tflite::GetModel(flatbuffer);
    if (model->version() != TFLITE_SCHEMA_VERSION) {
        error = "model schema version " + std::to_string(model->version()) + " not supported";
        return false;
    }
    // Operator names in execution order (custom operators by their custom code, e.g. TFLM_DECODE), checked
    // against ops.txt by the core; then each one must resolve (custom operators by custom code too).
    if (!model_operator_names(flatbuffer, length, ops_, error)) return false;
    if (!check_operators(ops_, firmware_operators(), firmware_has_tflm_compression(), error)) return false;
    const auto* subgraphs = model->subgraphs();
    const auto* codes = model->operator_codes();
    size_t n_ops = 0;
    if (subgraphs) {
        for (const auto* sg : *subgraphs) n_ops += sg->operators() ? sg->operators()->size() : 0;
    }
    if (subgraphs && subgraphs->size() > 0 && subgraphs->Get(0)->operators()) {
        size_t i = 0;
        for (const auto* op : *subgraphs->Get(0)->operators()) {
            const auto* opcode = codes->Get(op->opcode_index());
            const auto code = tflite::GetBuiltinCode(opcode);
            const bool custom = code == tflite::BuiltinOperator_CUSTOM;
            const auto* found =
                custom ? (opcode->custom_code() ? impl_->resolver.FindOp(opcode->custom_code()->c_str()) : nullptr)
                       : impl_->resolver.FindOp(code);
            if (found == nullptr) {
                error = "unsupported operator " + (i < ops_.size() ? ops_[i] : std::string("?")) +
                        " (in ops.txt, but the op resolver did not register it)";
                return false;
            }
            ++i;
        }
    }
    // One event per operator of every subgraph (a WHILE body runs more than once: the margin), so `profile`
    // fails rather than drops times when a model runs more.
    if (!impl_->events.reserve(n_ops + 16)) {
        error = "no heap for the profiler's " + std::to_string(n_ops + 16) + " events";
        return false;
    }
    tflm_log().clear();
    impl_->interpreter = new (impl_->interpreter_storage)
        tflite::MicroInterpreter(model, impl_->resolver, arena, arena_bytes, nullptr, &impl_->profiler);
    if (impl_->interpreter->AllocateTensors() != kTfLiteOk) {
        error = "AllocateTensors() failed with a " + std::to_string(arena_bytes) + "-byte arena: " + tflm_reason();
        unload();
        return false;
    }
    input_ = describe(impl_->interpreter->input(0));
    output_ = describe(impl_->interpreter->output(0));
    return true;
}

uint8_t* TflmRunner::input_data() {
    return impl_->interpreter ? impl_->interpreter->input(0)->data.uint8 : nullptr;
}

const uint8_t* TflmRunner::output_data() {
    return impl_->interpreter ? impl_->interpreter->output(0)->data.uint8 : nullptr;
}

bool TflmRunner::invoke(std::string& error) {
    impl_->events.clear();  // events are recorded on every Invoke(); `profile` reads the last one's
    if (!impl_->interpreter) {
        error = "no model loaded";
        return false;
    }
    tflm_log().clear();
    if (impl_->interpreter->Invoke() != kTfLiteOk) {
        error = "TFLM Invoke() failed: " + tflm_reason();
        return false;
    }
    return true;
}

bool TflmRunner::profile(std::vector<OpTiming>& ops, std::string& error) {
    ops.clear();
    if (!invoke(error)) return false;
    return impl_->events.timings(clock_.cpu_hz(), ops, error);
}

uint32_t TflmRunner::arena_used() const {
    return impl_->interpreter ? uint32_t(impl_->interpreter->arena_used_bytes()) : 0;
}

}  // namespace hil
