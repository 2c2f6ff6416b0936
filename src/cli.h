/* Subcommands of the qlens program. Each parses its own options and calls
 * the engine; nothing here computes anything the engine could. */
#ifndef QL_CLI_H
#define QL_CLI_H

int cmd_info(int argc, char **argv);
int cmd_eval(int argc, char **argv);

/* Shared option helpers: strict integer parsing with a located message. */
int cli_parse_int(const char *cmd, const char *opt, const char *s, long min, long max,
                  long *out);
void cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
