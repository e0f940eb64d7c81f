#include "tflm_runner.hpp"

#include <cstdarg>
#include <cstdio>
#include <new>

#include "core/model_ops.hpp"
#if defined(ESP_PLATFORM)
#include "esp_heap_caps.h"
#include "sdkconfig.h"
#else
#include <cstdlib>
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

// TFLM's profiler interface with CPU-cycle timestamps: the interpreter opens one event per operator,
// tagged with the operator's name. (tflite::MicroProfiler keeps its per-event ticks private.)
class CycleProfiler : public tflite::MicroProfilerInterface {
public:
    static constexpr int kMaxEvents = 512;
    explicit CycleProfiler(Clock& clock) : clock_(clock) {}
    uint32_t BeginEvent(const char* tag) override {
        if (n_ >= kMaxEvents) return kMaxEvents - 1;
        tags_[n_] = tag;
        start_[n_] = clock_.cycles();
        end_[n_] = start_[n_];
        return uint32_t(n_++);
    }
    void EndEvent(uint32_t handle) override { end_[handle] = clock_.cycles(); }
    void clear() { n_ = 0; }
    int size() const { return n_; }
    const char* tag(int i) const { return tags_[i]; }
    uint32_t cycles(int i) const { return end_[i] - start_[i]; }

private:
    Clock& clock_;
    const char* tags_[kMaxEvents] = {};
    uint32_t start_[kMaxEvents] = {}, end_[kMaxEvents] = {};
    int n_ = 0;
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

void* arena_alloc(uint32_t bytes) {
#if defined(ESP_PLATFORM)
#if CONFIG_HIL_ARENA_PSRAM
    return heap_caps_aligned_alloc(16, bytes, MALLOC_CAP_SPIRAM | MALLOC_CAP_8BIT);
#else
    return heap_caps_aligned_alloc(16, bytes, MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT);
#endif
#else
    return std::aligned_alloc(16, (size_t(bytes) + 15u) & ~size_t(15));
#endif
}

void arena_free(void* p) {
#if defined(ESP_PLATFORM)
    heap_caps_free(p);
#else
    std::free(p);
#endif
}

std::string arena_failure(uint32_t bytes) {
    std::string msg = "arena of " + std::to_string(bytes) + " bytes does not fit the heap";
#if defined(ESP_PLATFORM)
#if CONFIG_HIL_ARENA_PSRAM
    const uint32_t caps = MALLOC_CAP_SPIRAM | MALLOC_CAP_8BIT;
#else
    const uint32_t caps = MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT;
#endif
    msg += " (largest free block " + std::to_string(heap_caps_get_largest_free_block(caps)) + " bytes)";
#endif
    return msg;
}

}  // namespace

struct TflmRunner::Impl {
    explicit Impl(Clock& clock) : profiler(clock) {}
    Resolver resolver;
    CycleProfiler profiler;
    uint8_t* arena = nullptr;
    tflite::MicroInterpreter* interpreter = nullptr;
    alignas(tflite::MicroInterpreter) uint8_t interpreter_storage[sizeof(tflite::MicroInterpreter)];
    bool resolver_ok = false;

    void release() {
        if (interpreter) interpreter->~MicroInterpreter();
        interpreter = nullptr;
        if (arena) arena_free(arena);
        arena = nullptr;
    }
};

TflmRunner::TflmRunner(Clock& clock) : clock_(clock), impl_(new Impl(clock)) {
    impl_->resolver_ok = register_ops(impl_->resolver);
}

TflmRunner::~TflmRunner() { impl_->release(); }

bool TflmRunner::load(const uint8_t* flatbuffer, size_t length, uint32_t arena_bytes, std::string& error) {
    impl_->release();
    ops_.clear();
    input_ = output_ = TensorInfo{};
    arena_bytes_ = arena_bytes;
    if (!impl_->resolver_ok) {
        error = "op resolver: registering the operators of ops.txt failed (HIL_OP_COUNT too small?)";
        return false;
    }
    const tflite::Model* model = tflite::GetModel(flatbuffer);
    flatbuffers::Verifier verifier(flatbuffer, length);
    if (!model->Verify(verifier)) {
        error = "model image holds no valid TFLite flatbuffer";
        return false;
    }
    if (model->version() != TFLITE_SCHEMA_VERSION) {
        error = "model schema version " + std::to_string(model->version()) + " not supported";
        return false;
    }
    // Operator names in execution order (custom operators by their custom code, e.g. TFLM_DECODE), checked
    // against ops.txt by the core; then each one must resolve (custom operators by custom code too).
    std::string names_error;
    if (!model_operator_names(flatbuffer, length, ops_, names_error)) {
        error = names_error;
        return false;
    }
    if (!check_operators(ops_, firmware_operators(), firmware_has_tflm_compression(), error)) return false;
    const auto* subgraphs = model->subgraphs();
    const auto* codes = model->operator_codes();
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
    impl_->arena = static_cast<uint8_t*>(arena_alloc(arena_bytes));
    if (!impl_->arena) {
        error = arena_failure(arena_bytes);
        return false;
    }
    impl_->interpreter = new (impl_->interpreter_storage)
        tflite::MicroInterpreter(model, impl_->resolver, impl_->arena, arena_bytes, nullptr, &impl_->profiler);
    if (impl_->interpreter->AllocateTensors() != kTfLiteOk) {
        error = "arena too small or model not supported by TFLM: AllocateTensors() failed with a " +
                std::to_string(arena_bytes) + "-byte arena";
        impl_->release();
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
    impl_->profiler.clear();  // events are recorded on every Invoke(); keep the buffer from filling up
    if (!impl_->interpreter || impl_->interpreter->Invoke() != kTfLiteOk) {
        error = "TFLM Invoke() failed";
        return false;
    }
    return true;
}

bool TflmRunner::profile(std::vector<OpTiming>& ops, std::string& error) {
    ops.clear();
    if (!invoke(error)) return false;
    const uint32_t mhz = clock_.cpu_hz() / 1000000u;
    for (int i = 0; i < impl_->profiler.size(); ++i)
        ops.push_back({impl_->profiler.tag(i), mhz ? impl_->profiler.cycles(i) / mhz : 0});
    return true;
}

uint32_t TflmRunner::arena_used() const {
    return impl_->interpreter ? uint32_t(impl_->interpreter->arena_used_bytes()) : 0;
}

}  // namespace hil
