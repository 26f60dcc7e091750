// Runtime API the emulator core (emu.h) lacks and gemm.cu's launchers use:
// cudaLaunchKernelEx with its launch attributes (programmatic stream
// serialization is counted and otherwise ignored: launches are synchronous,
// so every kernel already runs after its predecessor; a cluster dimension
// runs the grid as clusters, emu.h), cudaOccupancyMaxActiveClusters, and
// __stcg. Included from shim_gemm.h and shim_gemm_sm90.h.
#pragma once
#include <tuple>
#include <utility>

#include "emu.h"

// ------------------------------------------------------------ launch API ---
enum cudaLaunchAttributeID { cudaLaunchAttributeProgrammaticStreamSerialization = 3,
                             cudaLaunchAttributeClusterDimension = 4 };
union cudaLaunchAttributeValue {
    char pad[64];
    int programmaticStreamSerializationAllowed;
    struct { unsigned x, y, z; } clusterDim;
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
    unsigned cx = 1;
    for (unsigned i = 0; i < cfg->numAttrs; i++) {
        if (cfg->attrs[i].id == cudaLaunchAttributeProgrammaticStreamSerialization &&
            cfg->attrs[i].val.programmaticStreamSerializationAllowed)
            emu_pdl_launches++;
        if (cfg->attrs[i].id == cudaLaunchAttributeClusterDimension) {
            const auto &c = cfg->attrs[i].val.clusterDim;
            EMU_CHECK(c.y == 1 && c.z == 1, "clusters along y or z: not emulated");
            cx = c.x;
        }
    }
    std::tuple<P...> t(std::forward<A>(args)...);
    if (cx > 1)
        emu_launch_cluster((const void *)k, [&] { std::apply(k, t); }, cfg->gridDim, cfg->blockDim,
                           cfg->dynamicSmemBytes, cx, cfg->stream);
    else
        emu_launch((const void *)k, [&] { std::apply(k, t); }, cfg->gridDim, cfg->blockDim, cfg->dynamicSmemBytes,
                   cfg->stream);
    return cudaPeekAtLastError();
}

// clusters of the config's cluster dimension (1 without one) that fit at once
template <class F>
cudaError_t cudaOccupancyMaxActiveClusters(int *n, F *fn, const cudaLaunchConfig_t *cfg) {
    (void)fn;
    unsigned cx = 1;
    for (unsigned i = 0; i < cfg->numAttrs; i++)
        if (cfg->attrs[i].id == cudaLaunchAttributeClusterDimension) cx = cfg->attrs[i].val.clusterDim.x;
    *n = emu_max_active_clusters(cx, cfg->dynamicSmemBytes,
                                 (int)(cfg->blockDim.x * cfg->blockDim.y * cfg->blockDim.z));
    return cudaSuccess;
}

// --------------------------------------------------------------- memory ---
template <class T> static inline void __stcg(T *p, T v) { *p = v; }
