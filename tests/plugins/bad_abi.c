/* Test module: a plugin built for an ABI qlens does not speak (version 7).
 * qlens must refuse it without reading past abi_version. */
#include "plugins/qlens-plugin.h"

static const qlp_plugin bad_abi = {
    .abi_version = 7,
    .name = "bad-abi",
    .summary = "built for another ABI",
    .kinds = QLP_KIND_ACTIVATION,
};

const qlp_plugin *QLENS_PLUGIN_ENTRY(void) { return &bad_abi; }
