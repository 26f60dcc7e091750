// Streams, events and staging memory for executors whose ops complete
// before they return (cpu, ref): async copies are the plain copies, events
// only check their indices, staging memory is an ordinary allocation.
#include "exec/exec.h"

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
