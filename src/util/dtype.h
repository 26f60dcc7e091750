// Element types of weights and buffers. Here, not in the safetensors reader,
// so that kernels and executors do not depend on the model layer.
#ifndef LM_UTIL_DTYPE_H
#define LM_UTIL_DTYPE_H

#include <stddef.h>

typedef enum lm_dtype {
    LM_DT_F32 = 0,
    LM_DT_F16,
    LM_DT_BF16,
    LM_DT_I32,    // executor buffers (token ids, positions, routing); never a weight
    LM_DT_OTHER,  // a dtype a file may hold (I64, U8, F64, ...) that we never compute with
} lm_dtype;

size_t lm_dtype_size(lm_dtype dt);  // bytes per element (0 for LM_DT_OTHER)
const char *lm_dtype_name(lm_dtype dt);

#endif
