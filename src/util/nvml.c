// NVML through dlopen (see nvml.h). The few types and prototypes used are
// declared here, as the NVML API reference gives them, so the build needs
// no nvml.h: NVML's device handle is an opaque pointer and every call
// returns an int (nvmlReturn_t, 0 = NVML_SUCCESS).
#include "util/nvml.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct nvml_device *nvml_dev;  // nvmlDevice_t

enum { NVML_OK = 0 };

typedef int (*fn_void)(void);
typedef int (*fn_by_bus)(const char *, nvml_dev *);
typedef int (*fn_energy)(nvml_dev, unsigned long long *);
typedef int (*fn_power)(nvml_dev, unsigned *);
typedef const char *(*fn_errstr)(int);

struct lm_energy {
    void *lib;
    nvml_dev dev;
    fn_void shutdown;  // nvmlShutdown
    fn_energy energy;  // nvmlDeviceGetTotalEnergyConsumption (mJ)
    fn_power power;    // nvmlDeviceGetPowerUsage (mW)
};

// NVML's own message for a return code, or the number when it has none.
static const char *nvml_msg(fn_errstr errstr, int rc, char *buf, size_t len) {
    const char *s = errstr ? errstr(rc) : NULL;
    if (s) return s;
    snprintf(buf, len, "error %d", rc);
    return buf;
}

lm_energy *lm_energy_open(const char *pci_bus_id, char *why, size_t why_len) {
    if (why && why_len) *why = 0;
    // The driver installs the versioned name; plain libnvidia-ml.so comes only with dev packages.
    void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(why, why_len, "NVML (libnvidia-ml.so.1) cannot be loaded: %s", dlerror());
        return NULL;
    }
    fn_void init = (fn_void)dlsym(lib, "nvmlInit_v2"), shutdown = (fn_void)dlsym(lib, "nvmlShutdown");
    fn_by_bus by_bus = (fn_by_bus)dlsym(lib, "nvmlDeviceGetHandleByPciBusId_v2");
    fn_energy energy = (fn_energy)dlsym(lib, "nvmlDeviceGetTotalEnergyConsumption");
    fn_power power = (fn_power)dlsym(lib, "nvmlDeviceGetPowerUsage");
    fn_errstr errstr = (fn_errstr)dlsym(lib, "nvmlErrorString");  // optional: messages only
    if (!init || !shutdown || !by_bus || !energy || !power) {
        snprintf(why, why_len, "this NVML lacks %s", !init ? "nvmlInit_v2" : !shutdown ? "nvmlShutdown"
                 : !by_bus ? "nvmlDeviceGetHandleByPciBusId_v2" : !energy ? "nvmlDeviceGetTotalEnergyConsumption"
                 : "nvmlDeviceGetPowerUsage");
        dlclose(lib);
        return NULL;
    }
    char num[32];
    int rc = init();
    if (rc != NVML_OK) {
        snprintf(why, why_len, "NVML did not initialise: %s", nvml_msg(errstr, rc, num, sizeof num));
        dlclose(lib);
        return NULL;
    }
    nvml_dev dev = NULL;
    unsigned long long mj = 0;
    unsigned mw = 0;
    if ((rc = by_bus(pci_bus_id, &dev)) != NVML_OK) {
        snprintf(why, why_len, "NVML does not find the GPU at PCI %s: %s", pci_bus_id,
                 nvml_msg(errstr, rc, num, sizeof num));
    } else if ((rc = energy(dev, &mj)) != NVML_OK) {
        // Pre-Volta boards and some virtualised GPUs have no energy counter;
        // the power reading still says something about the board.
        int prc = power(dev, &mw);
        if (prc == NVML_OK)
            snprintf(why, why_len, "the GPU's energy counter: %s; board power now %.0f W",
                     nvml_msg(errstr, rc, num, sizeof num), mw / 1e3);
        else
            snprintf(why, why_len, "the GPU's energy counter: %s", nvml_msg(errstr, rc, num, sizeof num));
    } else {
        lm_energy *e = malloc(sizeof *e);
        if (e) {
            *e = (lm_energy){lib, dev, shutdown, energy, power};
            return e;
        }
        snprintf(why, why_len, "out of memory");
    }
    shutdown();
    dlclose(lib);
    return NULL;
}

int lm_energy_read_mj(lm_energy *e, uint64_t *mj) {
    unsigned long long v = 0;
    int rc = e->energy(e->dev, &v);
    *mj = rc == NVML_OK ? (uint64_t)v : 0;
    return rc;
}

int lm_energy_power_mw(lm_energy *e, unsigned *mw) {
    *mw = 0;
    return e->power(e->dev, mw);
}

void lm_energy_close(lm_energy *e) {
    if (!e) return;
    e->shutdown();
    dlclose(e->lib);
    free(e);
}
