/* Planned memory for an executor's value buffers (engine/memplan.c).
 *
 * Why: buffers kept by size for the next run (exec.h, reuse_buffers) are
 * each used once per run, so a large model's activations are spread over
 * more memory than the processor's cache holds, and a layer writes its
 * output to lines last touched a whole run ago. A plan lays the buffers of
 * one kind of run out in one arena, so that a buffer takes memory that
 * earlier buffers of the same run released, still in cache.
 *
 * How: the executor tells the planner every allocation and release of a
 * run. A run of a kind (a signature) not seen before is traced; at its end
 * the trace becomes a plan: offsets in the arena such that buffers live at
 * the same time never share memory (largest first, lowest free offset).
 * A later run of the same signature takes its allocations from the arena,
 * in order, while each has the traced size and the buffers that shared its
 * memory in the trace have been released in this run; at the first
 * allocation that differs, the rest of the run allocates as without a plan
 * and the plan is dropped. So a plan can make a run slower, never wrong. */
#ifndef QL_MEMPLAN_H
#define QL_MEMPLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ql_memplan ql_memplan;

ql_memplan *ql_memplan_new(void);
void ql_memplan_free(ql_memplan *p);

/* Start of a run whose allocations depend on sig only. */
void ql_memplan_begin(ql_memplan *p, uint64_t sig);
/* The next allocation, of bytes: arena memory, or NULL when the caller
 * must allocate (then it calls ql_memplan_note). */
void *ql_memplan_alloc(ql_memplan *p, size_t bytes);
/* The caller allocated ptr itself for the allocation just asked for. */
void ql_memplan_note(ql_memplan *p, void *ptr);
/* ptr is released: true if it was arena memory (nothing to free), false
 * if it is the caller's to free or keep. */
bool ql_memplan_release(ql_memplan *p, void *ptr);
/* ptr leaves the executor (handed to its caller). Arena memory must not:
 * the caller copies it out first, then releases it, and the plan is
 * dropped so that the next trace allocates that buffer apart. */
void ql_memplan_taken(ql_memplan *p, void *ptr);
bool ql_memplan_in_arena(const ql_memplan *p, const void *ptr);
/* End of the run (ok: it completed). True when a new plan was made. */
bool ql_memplan_end(ql_memplan *p, bool ok);
/* Bytes of the arena. */
size_t ql_memplan_arena_bytes(const ql_memplan *p);

/* FNV-1a, for signatures. */
static inline uint64_t ql_fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *s = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 0x100000001b3ULL;
    return h;
}
#define QL_FNV_INIT 0xcbf29ce484222325ULL

#endif
