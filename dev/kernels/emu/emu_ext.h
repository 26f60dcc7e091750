// Runtime API the emulator core (emu.h) lacks and gemm.cu's launchers use:
// cudaLaunchKernelEx with its launch attributes (programmatic stream
// serialization is counted and otherwise ignored: launches are synchronous,
// so every kernel already runs after its predecessor), and __stcg.
// Included from shim_gemm.h.
#pragma once
#include <tuple>
#include <utility>

#include "emu.h"

// ------------------------------------------------------------ launch API ---
enum cudaLaunchAttributeID { cudaLaunchAttributeProgrammaticStreamSerialization = 3 };
union cudaLaunchAttributeValue {
    char pad[64];
    int programmaticStreamSerializationAllowed;
};
struct cudaLaunchAttribute {
    cudaLaunchAttributeID id;
    char pad[8 - sizeof(cudaLaunchAttributeID)];
    cudaLaunchAttributeValue val;
};
struct cudaLaunchConfig_t {
    dim3 gridDim, blockDim;
    size_t dynamicSmemBytes;
    cudaStream_t stream;
    cudaLaunchAttribute *attrs;
    unsigned numAttrs;
};

// launches that asked for programmatic stream serialization
inline long emu_pdl_launches = 0;

// The arguments are converted to the kernel's parameter types once, as the
// runtime does, then each thread of each block gets its copies.
template <class... P, class... A>
cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t *cfg, void (*k)(P...), A &&...args) {
    for (unsigned i = 0; i < cfg->numAttrs; i++)
        if (cfg->attrs[i].id == cudaLaunchAttributeProgrammaticStreamSerialization &&
            cfg->attrs[i].val.programmaticStreamSerializationAllowed)
            emu_pdl_launches++;
    std::tuple<P...> t(std::forward<A>(args)...);
    emu_launch((const void *)k, [&] { std::apply(k, t); }, cfg->gridDim, cfg->blockDim, cfg->dynamicSmemBytes,
               cfg->stream);
    return cudaPeekAtLastError();
}

// --------------------------------------------------------------- memory ---
template <class T> static inline void __stcg(T *p, T v) { *p = v; }
