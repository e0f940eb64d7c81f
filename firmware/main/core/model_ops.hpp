// The operator check of the firmware: which operators a TFLite flatbuffer uses (read here, without TFLM)
// and whether the firmware's operator list (main/ops.txt) has every one of them. Custom operators are
// resolved by their custom code: TFLM's LUT decompression is the custom operator "TFLM_DECODE", never
// the generic "CUSTOM".
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace hil {

// The schema name of a builtin operator code ("CONV_2D" for 3), nullptr for a code this table lacks.
const char* builtin_operator_name(int32_t code);

// The operators of subgraph 0 in execution order: builtin operators by their schema name, custom
// operators (BuiltinOperator CUSTOM) by their custom code. false with a one-line reason when the
// flatbuffer is malformed (every offset is bounds-checked against `length`).
bool model_operator_names(const uint8_t* flatbuffer, size_t length, std::vector<std::string>& ops,
                          std::string& error);

// The byte sizes of subgraph 0's first input and first output tensor (shape x element size), read before
// TFLM sees the model so the arena can be sized with the protocol's needs; 0 for what the model does not say.
void model_io_bytes(const uint8_t* flatbuffer, size_t length, uint32_t& input_bytes, uint32_t& output_bytes);

// The operators the firmware registers: the names of ops.txt, generated into hil_ops.inc by the build.
// TFLM_DECODE is in the list only when the build's TFLM has compression (HIL_TFLM_COMPRESSION=1).
const std::vector<std::string>& firmware_operators();
bool firmware_has_tflm_compression();

// The first operator of `ops` the firmware lacks, with the reason in `error`; true when all are there.
bool check_operators(const std::vector<std::string>& ops, const std::vector<std::string>& supported,
                     bool tflm_compression, std::string& error);

}  // namespace hil
