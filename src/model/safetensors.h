// safetensors reader: mmap one file or a sharded set (model.safetensors.index.json).
// Every header is validated (JSON well-formed, dtype known, shape product *
// dtype size == byte range, ranges inside the data section, no two tensors
// overlapping) before any tensor data is touched.
#ifndef LM_MODEL_SAFETENSORS_H
#define LM_MODEL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "lightmoe.h"
#include "util/dtype.h"


#define LM_ST_MAX_DIMS 8

typedef struct lm_st_tensor {
    const char *name;      // owned by the set
    const char *dtype_str; // as written in the header, e.g. "BF16"
    lm_dtype dtype;
    int ndim;
    int64_t shape[LM_ST_MAX_DIMS];
    size_t nbytes;
    const void *data;      // points into the mmap'ed file
    int file;              // index of the shard it lives in
} lm_st_tensor;

typedef struct lm_st_set lm_st_set;

// Opens dir/model.safetensors, else dir/model.safetensors.index.json and
// every shard it names (each tensor must be found in the shard the index
// says) — transformers' order. If neither exists, a single other
// *.safetensors file in dir is accepted.
lm_status lm_st_open_dir(const char *dir, lm_st_set **out);

// Opens one .safetensors file.
lm_status lm_st_open_file(const char *path, lm_st_set **out);

void lm_st_close(lm_st_set *set);

int lm_st_count(const lm_st_set *set);
const lm_st_tensor *lm_st_get(const lm_st_set *set, int i);
const lm_st_tensor *lm_st_find(const lm_st_set *set, const char *name);  // NULL if absent
const char *lm_st_file_path(const lm_st_set *set, int file);

// Pure parser used by the loader and the fuzz target: validates the header of
// a safetensors file held in memory (`buf`, `size` bytes, the whole file) and
// calls `cb` for each tensor with `data` pointing into buf. `fname` is used in
// messages only. Never reads outside buf.
typedef lm_status (*lm_st_tensor_cb)(void *user, const lm_st_tensor *t);
lm_status lm_st_parse(const uint8_t *buf, size_t size, const char *fname, lm_st_tensor_cb cb,
                      void *user);

#endif
