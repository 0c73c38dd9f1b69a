// The emulated half of scaled_add.cu, built the way another crate's build script builds its own
// (docs/interop.md, "Adding your own kernel"): g++ with `-include cuda_emulator.h` and this crate's
// kernels/ folder on the include path. Here emulator/build.rs compiles it (a dev-only build step:
// an integration test has no build script of its own), and tests/custom_op.rs names the exported
// entry point in an `extern "C"` block and registers it as the family's emulated half.
#include "scaled_add.cu"

ASIF_EMU_EXPORT_FAMILY(custom_scaled_add_emulated, ASIF_EMU_ENTRY(custom_scaled_add),
                       ASIF_EMU_ENTRY(custom_scaled_add_assign))
