// emulator stand-in for <cuda_runtime.h>
#pragma once
#include "emu.h"
