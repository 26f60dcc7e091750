// The runtime: the machine resources models and contexts share — the CPU
// thread pool now, devices later. One runtime may serve several models and
// contexts, on several threads (the pool serialises their regions).
#ifndef LM_RUNTIME_RUNTIME_H
#define LM_RUNTIME_RUNTIME_H

#include "lightmoe.h"
#include "util/threadpool.h"

lm_pool *lm_runtime_pool(const lm_runtime *rt);

#endif
