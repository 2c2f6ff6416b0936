/* The op table, indexed by ql_op_id; rows are defined by the family files. */
#include <assert.h>
#include <string.h>

#include "../op.h"

#define QL_OP_ROW_(e, name, since) [QL_OP_##e] = &ql_op_def_##e,
static const ql_op_def *const op_table[] = {QL_OP_LIST(QL_OP_ROW_)};
#undef QL_OP_ROW_
static_assert(sizeof op_table / sizeof op_table[0] == QL_OP_COUNT,
              "op table out of step with ql_op_id");

#define QL_OP_NAME_(e, name, since) name,
static const char *const op_names[] = {QL_OP_LIST(QL_OP_NAME_)};
#undef QL_OP_NAME_
static_assert(sizeof op_names / sizeof op_names[0] == QL_OP_COUNT,
              "op name table out of step with ql_op_id");

const ql_op_def *ql_op_get(int op)
{
    assert(op >= 0 && op < QL_OP_COUNT);
    return op_table[op];
}

const char *ql_op_name(int op)
{
    if (op < 0 || op >= QL_OP_COUNT)
        return "?";
    return op_names[op];
}

int ql_op_find(const char *op_type, const char *domain)
{
    if (domain && domain[0] && strcmp(domain, "ai.onnx") != 0)
        return -1;
    for (int i = 0; i < QL_OP_COUNT; i++)
        if (strcmp(op_names[i], op_type) == 0)
            return i;
    return -1;
}
