#include "tflm_runner.hpp"

#include <cstdarg>
#include <cstdio>
#include <new>

#include "esp_cpu.h"
#include "esp_heap_caps.h"
#include "esp_private/esp_clk.h"
#include "sdkconfig.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/micro/micro_profiler_interface.h"
#include "tensorflow/lite/schema/schema_generated.h"
#include "tensorflow/lite/schema/schema_utils.h"

namespace hil::esp {

namespace {

#define HIL_OP(method)  // first pass over the generated list: only HIL_OP_COUNT is wanted
#include "hil_ops.inc"
#undef HIL_OP

using Resolver = tflite::MicroMutableOpResolver<HIL_OP_COUNT>;

bool register_ops(Resolver& r) {
#undef HIL_OP
#define HIL_OP(method) \
    if (r.method() != kTfLiteOk) return false;
#include "hil_ops.inc"
#undef HIL_OP
    return true;
}

// TFLM's profiler interface with CPU-cycle timestamps: the interpreter opens one event per operator,
// tagged with the operator's name. (tflite::MicroProfiler keeps its per-event ticks private.)
class CycleProfiler : public tflite::MicroProfilerInterface {
public:
    static constexpr int kMaxEvents = 512;
    uint32_t BeginEvent(const char* tag) override {
        if (n_ >= kMaxEvents) return kMaxEvents - 1;
        tags_[n_] = tag;
        start_[n_] = esp_cpu_get_cycle_count();
        end_[n_] = start_[n_];
        return uint32_t(n_++);
    }
    void EndEvent(uint32_t handle) override { end_[handle] = esp_cpu_get_cycle_count(); }
    void clear() { n_ = 0; }
    int size() const { return n_; }
    const char* tag(int i) const { return tags_[i]; }
    uint32_t cycles(int i) const { return end_[i] - start_[i]; }

private:
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

}  // namespace

struct TflmRunner::Impl {
    Resolver resolver;
    CycleProfiler profiler;
    uint8_t* arena = nullptr;
    tflite::MicroInterpreter* interpreter = nullptr;
    alignas(tflite::MicroInterpreter) uint8_t interpreter_storage[sizeof(tflite::MicroInterpreter)];
    bool resolver_ok = false;

    void release() {
        if (interpreter) interpreter->~MicroInterpreter();
        interpreter = nullptr;
        if (arena) heap_caps_free(arena);
        arena = nullptr;
    }
};

TflmRunner::TflmRunner() : impl_(new Impl) { impl_->resolver_ok = register_ops(impl_->resolver); }

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
    // Operator names in execution order, and the first one the resolver lacks (named in the error).
    const auto* subgraphs = model->subgraphs();
    const auto* codes = model->operator_codes();
    std::string unsupported;
    if (subgraphs && subgraphs->size() > 0 && subgraphs->Get(0)->operators()) {
        for (const auto* op : *subgraphs->Get(0)->operators()) {
            const auto code = tflite::GetBuiltinCode(codes->Get(op->opcode_index()));
            ops_.push_back(tflite::EnumNameBuiltinOperator(code));
            if (unsupported.empty() && impl_->resolver.FindOp(code) == nullptr) unsupported = ops_.back();
        }
    }
    if (!unsupported.empty()) {
        error = "unsupported operator " + unsupported + " (not in the firmware's ops.txt)";
        return false;
    }
#if CONFIG_HIL_ARENA_PSRAM
    const uint32_t caps = MALLOC_CAP_SPIRAM | MALLOC_CAP_8BIT;
#else
    const uint32_t caps = MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT;
#endif
    impl_->arena = static_cast<uint8_t*>(heap_caps_aligned_alloc(16, arena_bytes, caps));
    if (!impl_->arena) {
        error = "arena of " + std::to_string(arena_bytes) + " bytes does not fit the heap (largest free block " +
                std::to_string(heap_caps_get_largest_free_block(caps)) + " bytes)";
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
    const uint32_t mhz = uint32_t(esp_clk_cpu_freq() / 1000000);
    for (int i = 0; i < impl_->profiler.size(); ++i)
        ops.push_back({impl_->profiler.tag(i), mhz ? impl_->profiler.cycles(i) / mhz : 0});
    return true;
}

uint32_t TflmRunner::arena_used() const {
    return impl_->interpreter ? uint32_t(impl_->interpreter->arena_used_bytes()) : 0;
}

}  // namespace hil::esp
