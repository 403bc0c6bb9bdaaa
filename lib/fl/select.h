/* select.h - which clients take part in a round (docs/algorithms.md 2.2): the seeded order
 * of all N client ids for (seed, "select", round), and the first K of it that are present.
 * With every client present this is the simulation's selection (`aggregate --select`), so a
 * federated run whose clients are all up picks the very clients the file pipeline trains;
 * a client that is away is replaced by the next present one in the same seeded order.
 * Not here: who is present (tools/fl-server.c), training (local-train). */
#ifndef FEDSM_SELECT_H
#define FEDSM_SELECT_H

#include <stdbool.h>
#include <stdint.h>

/* order (n) receives a permutation of 0..n-1, seeded by (seed, "select", round). */
void fl_select_order(int64_t *order, int64_t n, uint64_t seed, int64_t round);
/* out (k) receives the first k ids of order (n) whose present[id] is true (present NULL:
 * all are), in increasing order; returns how many were found (< k when fewer are present). */
int64_t fl_select_present(int64_t *out, int64_t k, const int64_t *order, int64_t n,
                          const bool *present);

#endif
