#include "model_ops.hpp"

#include <algorithm>
#include <cstring>

// 1 when the model runtime can run TFLM_DECODE (TFLM built with USE_TFLM_COMPRESSION, or a fake runtime).
#ifndef HIL_TFLM_COMPRESSION
#define HIL_TFLM_COMPRESSION 0
#endif

namespace hil {

namespace {

const char* const kBuiltinNames[] = {
#include "tflite_builtin_names.inc"
};
constexpr int32_t kBuiltinCustom = 32;  // BuiltinOperator_CUSTOM

// A bounds-checked reader of the flatbuffer wire format (little-endian; offsets are unsigned and point
// forward, vtable offsets are signed). Any out-of-range access makes ok() false.
class Flat {
public:
    Flat(const uint8_t* data, size_t length) : data_(data), length_(length) {}
    bool ok() const { return ok_; }

    uint32_t u32(size_t pos) {
        uint32_t v = 0;
        if (in_range(pos, 4)) std::memcpy(&v, data_ + pos, 4);
        return v;
    }
    uint16_t u16(size_t pos) {
        uint16_t v = 0;
        if (in_range(pos, 2)) std::memcpy(&v, data_ + pos, 2);
        return v;
    }
    uint8_t u8(size_t pos) { return in_range(pos, 1) ? data_[pos] : uint8_t(0); }

    // The position of the table an offset at `pos` points to.
    size_t deref(size_t pos) { return checked(pos + size_t(u32(pos))); }

    // The position of field `index` of the table at `table`, or 0 when the field is absent.
    size_t field(size_t table, unsigned index) {
        int32_t soffset = 0;
        const uint32_t raw = u32(table);
        std::memcpy(&soffset, &raw, 4);
        const int64_t vtable = int64_t(table) - int64_t(soffset);
        if (vtable < 0 || uint64_t(vtable) >= length_) return fail();
        const size_t vt = size_t(vtable);
        const uint16_t vt_size = u16(vt);
        const size_t entry = 4 + 2 * size_t(index);
        if (entry + 2 > vt_size) return 0;
        const uint16_t off = u16(vt + entry);
        return off ? checked(table + off) : 0;
    }

    // A vector an offset field points to: its element count and the position of element 0.
    bool vector(size_t field_pos, uint32_t& count, size_t& first, size_t element_size) {
        if (!field_pos) return false;
        const size_t v = deref(field_pos);
        count = u32(v);
        first = v + 4;
        if (!in_range(first, size_t(count) * element_size)) return false;
        return ok_;
    }

    bool string(size_t field_pos, std::string& out) {
        uint32_t n = 0;
        size_t first = 0;
        if (!vector(field_pos, n, first, 1)) return false;
        out.assign(reinterpret_cast<const char*>(data_ + first), n);
        return true;
    }

private:
    bool in_range(size_t pos, size_t n) {
        if (pos > length_ || n > length_ - pos) ok_ = false;
        return ok_;
    }
    size_t checked(size_t pos) { return pos < length_ ? pos : fail(); }
    size_t fail() {
        ok_ = false;
        return 0;
    }
    const uint8_t* data_;
    size_t length_;
    bool ok_ = true;
};

// Bytes per element of a TensorType (schema order: FLOAT32, FLOAT16, INT32, UINT8, INT64, STRING, BOOL, INT16,
// COMPLEX64, INT8, FLOAT64, COMPLEX128, UINT64, RESOURCE, VARIANT, UINT32, UINT16, INT4); 1 when unknown.
uint32_t element_bytes(uint8_t type) {
    static const uint8_t kSizes[] = {4, 2, 4, 1, 8, 1, 1, 2, 8, 1, 8, 16, 8, 1, 1, 4, 2, 1};
    return type < sizeof kSizes ? kSizes[type] : 1u;
}

// The byte size of tensor `index` of the subgraph at `subgraph` (SubGraph 0 tensors; Tensor 0 shape, 1 type).
uint32_t tensor_bytes(Flat& f, size_t subgraph, uint32_t index) {
    uint32_t n_tensors = 0, n_dims = 0;
    size_t tensors = 0, dims = 0;
    if (!f.vector(f.field(subgraph, 0), n_tensors, tensors, 4) || index >= n_tensors) return 0;
    const size_t tensor = f.deref(tensors + 4 * size_t(index));
    const size_t type_pos = f.field(tensor, 1);
    uint64_t bytes = element_bytes(type_pos ? f.u8(type_pos) : 0);
    if (!f.vector(f.field(tensor, 0), n_dims, dims, 4)) return f.ok() ? uint32_t(bytes) : 0;  // a scalar
    for (uint32_t d = 0; d < n_dims && f.ok(); ++d) {
        const int32_t dim = int32_t(f.u32(dims + 4 * size_t(d)));
        bytes *= uint64_t(dim > 0 ? dim : 1);
        if (bytes > 0xFFFFFFFFull) return 0xFFFFFFFFu;
    }
    return f.ok() ? uint32_t(bytes) : 0;
}

}  // namespace

void model_io_bytes(const uint8_t* flatbuffer, size_t length, uint32_t& input_bytes, uint32_t& output_bytes) {
    input_bytes = output_bytes = 0;
    if (!flatbuffer || length < 8) return;
    Flat f(flatbuffer, length);
    uint32_t n_subgraphs = 0, n = 0;
    size_t subgraphs = 0, first = 0;
    const size_t model = f.deref(0);
    if (!f.ok() || !f.vector(f.field(model, 2), n_subgraphs, subgraphs, 4) || n_subgraphs == 0) return;
    const size_t subgraph = f.deref(subgraphs);
    // SubGraph: 1 inputs, 2 outputs (tensor indices).
    if (f.ok() && f.vector(f.field(subgraph, 1), n, first, 4) && n > 0) input_bytes = tensor_bytes(f, subgraph, f.u32(first));
    if (f.ok() && f.vector(f.field(subgraph, 2), n, first, 4) && n > 0) output_bytes = tensor_bytes(f, subgraph, f.u32(first));
    if (!f.ok()) input_bytes = output_bytes = 0;
}

const char* builtin_operator_name(int32_t code) {
    if (code < 0 || size_t(code) >= sizeof kBuiltinNames / sizeof kBuiltinNames[0]) return nullptr;
    return kBuiltinNames[code][0] ? kBuiltinNames[code] : nullptr;
}

bool model_operator_names(const uint8_t* flatbuffer, size_t length, std::vector<std::string>& ops,
                          std::string& error) {
    ops.clear();
    const char* bad = "model image holds no valid TFLite flatbuffer";
    if (!flatbuffer || length < 8) {
        error = bad;
        return false;
    }
    Flat f(flatbuffer, length);
    const size_t model = f.deref(0);
    // Model: 1 operator_codes, 2 subgraphs.
    std::vector<std::string> code_names;
    uint32_t n_codes = 0, n_subgraphs = 0;
    size_t codes = 0, subgraphs = 0;
    if (!f.ok() || !f.vector(f.field(model, 1), n_codes, codes, 4) ||
        !f.vector(f.field(model, 2), n_subgraphs, subgraphs, 4) || n_subgraphs == 0) {
        error = std::string(bad) + " (no operator codes or subgraphs)";
        return false;
    }
    for (uint32_t i = 0; i < n_codes && f.ok(); ++i) {
        // OperatorCode: 0 deprecated_builtin_code (int8), 1 custom_code, 3 builtin_code (int32).
        const size_t code = f.deref(codes + 4 * size_t(i));
        const size_t deprecated_pos = f.field(code, 0), builtin_pos = f.field(code, 3);
        const int32_t deprecated = deprecated_pos ? int32_t(int8_t(f.u8(deprecated_pos))) : 0;
        const int32_t builtin = builtin_pos ? int32_t(f.u32(builtin_pos)) : 0;
        const int32_t op = std::max(deprecated, builtin);  // the schema's rule for the two code fields
        std::string name;
        if (op == kBuiltinCustom) {
            if (!f.string(f.field(code, 1), name) || name.empty()) name = "CUSTOM";
        } else {
            const char* known = builtin_operator_name(op);
            name = known ? known : "BUILTIN_" + std::to_string(op);
        }
        code_names.push_back(name);
    }
    // SubGraph 0: 3 operators; Operator: 0 opcode_index (uint32).
    const size_t subgraph = f.deref(subgraphs);
    uint32_t n_ops = 0;
    size_t first_op = 0;
    const size_t ops_field = f.ok() ? f.field(subgraph, 3) : 0;
    if (ops_field && !f.vector(ops_field, n_ops, first_op, 4)) {
        error = std::string(bad) + " (operator list out of range)";
        return false;
    }
    for (uint32_t i = 0; i < n_ops && f.ok(); ++i) {
        const size_t op = f.deref(first_op + 4 * size_t(i));
        const size_t index_pos = f.field(op, 0);
        const uint32_t index = index_pos ? f.u32(index_pos) : 0;
        if (index >= code_names.size()) {
            error = std::string(bad) + " (operator " + std::to_string(i) + " has opcode index " +
                    std::to_string(index) + " of " + std::to_string(code_names.size()) + ")";
            return false;
        }
        ops.push_back(code_names[index]);
    }
    if (!f.ok()) {
        ops.clear();
        error = std::string(bad) + " (offset out of range)";
        return false;
    }
    return true;
}

bool check_operators(const std::vector<std::string>& ops, const std::vector<std::string>& supported,
                     bool tflm_compression, std::string& error) {
    for (const std::string& op : ops) {
        if (std::find(supported.begin(), supported.end(), op) != supported.end()) continue;
        if (op == "TFLM_DECODE" && !tflm_compression) {
            error = "unsupported operator TFLM_DECODE: LUT-compressed models need TFLM built with "
                    "USE_TFLM_COMPRESSION, and this firmware's TFLM is built without it";
        } else {
            error = "unsupported operator " + op + " (not in the firmware's ops.txt)";
        }
        return false;
    }
    return true;
}

namespace {
#define HIL_OP(name, method) #name,
#if HIL_TFLM_COMPRESSION
#define HIL_OP_COMPRESSION(name, method) #name,
#else
#define HIL_OP_COMPRESSION(name, method)
#endif
const char* const kFirmwareOps[] = {
#include "hil_ops.inc"
    nullptr};
#undef HIL_OP
#undef HIL_OP_COMPRESSION
}  // namespace

const std::vector<std::string>& firmware_operators() {
    static const std::vector<std::string> ops = [] {
        std::vector<std::string> v;
        for (const char* const* p = kFirmwareOps; *p; ++p) v.push_back(*p);
        return v;
    }();
    return ops;
}

bool firmware_has_tflm_compression() { return HIL_TFLM_COMPRESSION != 0; }

}  // namespace hil
