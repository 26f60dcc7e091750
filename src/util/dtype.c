#include "dtype.h"

size_t lm_dtype_size(lm_dtype dt) {
    switch (dt) {
    case LM_DT_F32: return 4;
    case LM_DT_F16: return 2;
    case LM_DT_BF16: return 2;
    case LM_DT_I32: return 4;
    case LM_DT_OTHER: return 0;
    }
    return 0;
}

const char *lm_dtype_name(lm_dtype dt) {
    switch (dt) {
    case LM_DT_F32: return "F32";
    case LM_DT_F16: return "F16";
    case LM_DT_BF16: return "BF16";
    case LM_DT_I32: return "I32";
    case LM_DT_OTHER: return "other";
    }
    return "?";
}
