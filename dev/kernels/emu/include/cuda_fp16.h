// emulator stand-in for <cuda_fp16.h>
#pragma once
#include "emu.h"
