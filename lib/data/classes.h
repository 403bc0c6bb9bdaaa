/* classes.h - class names that must agree between records: a model (or update) and the
 * shard it is trained or tested on, or the partition whose counts group its classes.
 * The class count is checked with the shapes (shard_check_fits, rec_get); the names here,
 * so that a test shard of another dataset with as many classes (a CIFAR-10 model on the
 * demo's ten gratings) is refused instead of scored against the wrong labels.
 * What it is not: where the names come from (partition writes meta.classes, aggregate
 * --init copies them into the model, local-train into its update). */
#ifndef FEDSM_CLASSES_H
#define FEDSM_CLASSES_H

#include "record.h"

/* 0 when records a and b name the same classes in the same order in meta.classes (or
 * either has no names: a record written by another program); ERR_FORMAT otherwise, with one
 * line naming both streams (what_a, what_b: "the model", "the test shard"), the first class
 * that differs, and both names. */
int classes_check(const record *a, const char *what_a, const record *b, const char *what_b);

#endif
