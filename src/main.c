/* qlens: entry point and subcommand dispatch (GNU conventions). */
#include <getopt.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"

typedef struct subcommand {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} subcommand;

static const subcommand subcommands[] = {
    {"info", cmd_info, "show a model's inputs, outputs and layers"},
    {"eval", cmd_eval, "run the model on data; accuracy, throughput, float vs quantized"},
    {"calibrate", cmd_calibrate, "collect statistics and write a quant config"},
    {"sensitivity", cmd_sensitivity, "per-layer sensitivity of a quantized model, worst first"},
    {"autoprec", cmd_autoprec, "raise sensitive layers to int16/float until a target holds"},
    {"plugins", cmd_plugins, "list calibration plugins, and why any were refused"},
    {"run", cmd_run, "run a script of session commands headless (qlens-script(5))"},
};

static void usage(FILE *f)
{
    fprintf(f, "Usage: qlens [--help] [--version] COMMAND [ARGS...]\n\n"
               "A workbench for post-training quantization of ONNX models.\n\n"
               "Commands:\n");
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        fprintf(f, "  %-10s %s\n", subcommands[i].name, subcommands[i].summary);
    fprintf(f, "\nRun 'qlens COMMAND --help' for a command's options; see qlens(1).\n");
}

void cli_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "qlens%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int cli_parse_int(const char *cmd, const char *opt, const char *s, long min, long max,
                  long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < min || v > max) {
        cli_error(cmd, "option %s: '%s' is not an integer in [%ld, %ld]", opt, s, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
#ifdef __GLIBC__
    /* Keep freed activation buffers in the heap for the next batch, as ONNX
     * Runtime's arena does: by default glibc maps every block over 128 KiB
     * afresh and unmaps it on free, so each run would pay page faults and
     * zeroing for all its activations. bench/qlens-bench does the same. */
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
        printf("qlens %s\n", PACKAGE_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        if (strcmp(argv[1], subcommands[i].name) == 0)
            return subcommands[i].run(argc - 1, argv + 1);
    cli_error(NULL, "unknown command '%s' (see 'qlens --help')", argv[1]);
    return 2;
}
