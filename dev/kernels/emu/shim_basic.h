// Emulated versions of the inline-PTX helpers of src/kernels/cuda/basic.cu
// (prep.py drops the originals): the emulator runs launches one after
// another, so programmatic dependent launch has nothing to wait for.
#pragma once
#include "emu.h"
#include "emu_ext.h"  // cudaLaunchKernelEx and its attributes

static inline void pdl_wait() {}
static inline void pdl_trigger() {}
