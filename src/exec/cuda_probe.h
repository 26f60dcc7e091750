// GPU ceilings for `lightmoe bench`: the device it runs on, its measured HBM
// read bandwidth and its measured bf16 tensor-core peak (mma.sync). All on
// the current CUDA device (device 0 unless the caller set another), the one
// the CUDA executor uses. Built without CUDA, each returns LM_ERR_UNSUPPORTED.
#ifndef LM_EXEC_CUDA_PROBE_H
#define LM_EXEC_CUDA_PROBE_H

#include <stddef.h>

#include "lightmoe.h"

typedef struct lm_cuda_device_info {
    char name[256];
    char pci_bus_id[32];        // "0000:01:00.0": how NVML finds the same board
    int device;                 // CUDA ordinal
    int sm_count;
    int max_threads_per_sm;
    int cc_major, cc_minor;     // compute capability
    size_t mem_total;           // bytes of device memory
    int driver_version;         // CUDA version the driver supports, e.g. 12080 = 12.8
    int runtime_version;        // CUDA runtime linked in, e.g. 13000
} lm_cuda_device_info;

lm_status lm_cuda_device_describe(lm_cuda_device_info *out);

// Stream-read of a buffer of at least 2 GiB (far past L2, so this is HBM),
// 16-byte loads over enough CTAs to fill every SM; best of several runs,
// timed with CUDA events. Bytes per second.
lm_status lm_cuda_probe_read_bw(double *bytes_per_s);

// "mma.sync peak": register-resident mma.sync.m16n8k16 bf16 -> f32 with many
// independent accumulators on every SM; best of several runs. FLOP/s. It is
// the ceiling of the mma.sync kernels this engine runs; Hopper's wgmma can
// go higher.
lm_status lm_cuda_probe_bf16_peak(double *flops_per_s);

#endif
