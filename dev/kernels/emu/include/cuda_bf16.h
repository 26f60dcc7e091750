// emulator stand-in for <cuda_bf16.h>
#pragma once
#include "emu.h"
