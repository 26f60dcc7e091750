// GPU energy from NVML's total-energy counter, for `lightmoe bench`'s J/token
// and average power. NVML ships with the NVIDIA driver, not the toolkit, so
// it is loaded at run time (dlopen): a machine without it only loses the
// energy figures. No CUDA here: the board is named by its PCI bus id.
#ifndef LM_UTIL_NVML_H
#define LM_UTIL_NVML_H

#include <stddef.h>
#include <stdint.h>

typedef struct lm_energy lm_energy;

// Opens NVML and the GPU at pci_bus_id ("0000:01:00.0", as
// cudaDeviceGetPCIBusId writes it) and checks that its energy counter
// works. NULL when it cannot be had, with the reason in why (NVML missing,
// the board not found, the counter not supported — then the board power
// now, when NVML can read it).
lm_energy *lm_energy_open(const char *pci_bus_id, char *why, size_t why_len);

// The board's energy since the driver was loaded, in millijoules: the
// difference of two reads is the energy used between them. 0, or the NVML
// error code.
int lm_energy_read_mj(lm_energy *e, uint64_t *mj);

// Board power draw now in milliwatts (NVML averages it over about a second
// on most boards). 0, or the NVML error code.
int lm_energy_power_mw(lm_energy *e, unsigned *mw);

void lm_energy_close(lm_energy *e);  // NULL is fine

#endif
