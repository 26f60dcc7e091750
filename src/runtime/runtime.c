#include "runtime/runtime.h"

#include <stdlib.h>

#include "util/err.h"

struct lm_runtime {
    lm_pool *pool;
};

lm_runtime_params lm_runtime_default_params(void) {
    return (lm_runtime_params){.n_threads = 0, .pin_threads = false};
}

lm_status lm_runtime_init(const lm_runtime_params *params, lm_runtime **out) {
    *out = NULL;
    lm_runtime_params p = params ? *params : lm_runtime_default_params();
    int cpus = lm_cpu_count();
    if (p.n_threads > cpus)
        return lm_err(LM_ERR_INVALID_ARG, "%d threads asked for but this process may use %d CPUs "
                      "(the workers spin between steps, so more threads than CPUs is slower)", p.n_threads, cpus);
    lm_runtime *rt = lm_calloc(1, sizeof *rt);
    if (!rt) return LM_ERR_OOM;
    lm_status st = lm_pool_init(p.n_threads, p.pin_threads, &rt->pool);
    if (st) {
        free(rt);
        return st;
    }
    *out = rt;
    return LM_OK;
}

void lm_runtime_free(lm_runtime *rt) {
    if (!rt) return;
    lm_pool_free(rt->pool);
    free(rt);
}

int lm_runtime_threads(const lm_runtime *rt) { return rt ? lm_pool_size(rt->pool) : 0; }

lm_pool *lm_runtime_pool(const lm_runtime *rt) { return rt->pool; }
