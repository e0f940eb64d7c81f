// Heap budgeting for a loaded model: how large a tensor arena the memory can give while the protocol keeps
// the heap its uploads and replies need. Checked when a model loads, so running out of heap is one clean
// E_MODEL in `hello`, never an abort in the middle of a later command.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace hil {

constexpr uint32_t kMinArenaBytes = 1024;  // below this no model loads: refuse instead of trying

// The heap the protocol needs while a model is loaded: a fixed part (command line, tokens, small replies),
// the input upload, the `run` reply (the output in base64, the JSON, the line) and the replies that list
// every operator (`hello`, `profile`). Measured against the heap's low-water mark in tests/firmware.
uint32_t protocol_reserve(uint32_t input_bytes, uint32_t output_bytes, size_t n_ops);

// What loading a model takes from the heap besides the arena (the device's copy of the input and per-operator
// bookkeeping; the tensors are in the arena) plus protocol_reserve: kept free when the arena is sized, before
// the model is loaded. On newlib the heap never shrinks back, so this must hold the first time.
uint32_t load_reserve(uint32_t input_bytes, uint32_t output_bytes, size_t n_ops);

// The arena to allocate when the model image asks for `wanted` bytes: all of them when the memory holds them
// and leaves `reserve` for the protocol (when the arena comes out of the same heap), else the most that does,
// rounded down to 16. 0 with the reason in `error` when less than kMinArenaBytes would remain.
uint32_t fit_arena(uint32_t wanted, size_t largest_block, bool shares_heap, uint32_t reserve, std::string& error);

// The arena to reload a loaded model with so that the heap gains `deficit` bytes: the configured arena minus
// the deficit (rounded down to 16), when TFLM's measured use (`used`) still fits with 64 bytes to spare;
// 0 when it does not.
uint32_t shrink_arena(uint32_t configured, uint32_t used, size_t deficit);

}  // namespace hil
