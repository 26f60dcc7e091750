// Copies, streams, events and staging memory for executors whose tensors
// are host memory and whose ops complete before they return (cpu, ref):
// copies are memcpy, async copies are the plain copies, events only check
// their indices, staging memory is an ordinary allocation.
#include <string.h>

#include "exec/exec.h"

lm_status lm_exec_host_upload(lm_exec *ex, lm_tensor dst, const void *src) {
    size_t es = lm_dtype_size(dst.dt), row = (size_t)dst.cols * es;
    if (dst.ld == (size_t)dst.cols) memcpy(dst.data, src, row * (size_t)dst.rows);
    else
        for (int i = 0; i < dst.rows; i++) memcpy((char *)dst.data + (size_t)i * dst.ld * es, (const char *)src + i * row, row);
    return LM_OK;
}

lm_status lm_exec_host_download(lm_exec *ex, lm_tensor src, void *dst) {
    size_t es = lm_dtype_size(src.dt), row = (size_t)src.cols * es;
    for (int i = 0; i < src.rows; i++) memcpy((char *)dst + i * row, (const char *)src.data + (size_t)i * src.ld * es, row);
    return LM_OK;
}

const void *lm_exec_host_ptr(lm_exec *ex, lm_tensor t) { return t.data; }

lm_status lm_exec_sync_upload_async(lm_exec *ex, lm_tensor dst, const void *src, int stream) {
    lm_status st = lm_exec_check_stream("upload_async", stream);
    return st ? st : ex->ops->upload(ex, dst, src);
}

lm_status lm_exec_sync_download_async(lm_exec *ex, lm_tensor src, void *dst, int stream) {
    lm_status st = lm_exec_check_stream("download_async", stream);
    return st ? st : ex->ops->download(ex, src, dst);
}

lm_status lm_exec_sync_event_record(lm_exec *ex, int event, int stream) {
    lm_status st = lm_exec_check_event("event_record", event);
    return st ? st : lm_exec_check_stream("event_record", stream);
}

lm_status lm_exec_sync_event_wait(lm_exec *ex, int event, int stream) {
    lm_status st = lm_exec_check_event("event_wait", event);
    return st ? st : lm_exec_check_stream("event_wait", stream);
}

lm_status lm_exec_sync_event_sync(lm_exec *ex, int event) { return lm_exec_check_event("event_sync", event); }

lm_status lm_exec_sync_bind_weights(lm_exec *ex, const lm_model *m) { return LM_OK; }

// In rows of 4 KiB so that buffers beyond 2^31 bytes keep int shapes.
lm_status lm_exec_sync_host_alloc(lm_exec *ex, size_t bytes, void **out) {
    lm_tensor t;
    size_t rows = (bytes + 4095) / 4096;
    *out = NULL;
    if (rows > (size_t)INT32_MAX)
        return lm_err(LM_ERR_INVALID_ARG, "%s executor: staging buffer of %zu bytes is too large", ex->ops->name, bytes);
    lm_status st = ex->ops->alloc(ex, LM_DT_F32, rows ? (int)rows : 1, 1024, &t);
    if (!st) *out = t.data;
    return st;
}
