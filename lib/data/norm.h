/* norm.h - the one table of input normalisations (per-channel mean and std of images
 * scaled to [0, 1]) and the rule that picks one, so a shard's meta.mean/std and a model's
 * cannot drift apart silently (docs/algorithms.md, data and preprocessing).
 *
 * What it is: the CIFAR and ImageNet statistics the reference code uses, chosen by dataset
 * family: small fixed-size pixel images (CIFAR-10/100) get CIFAR's, encoded JPEG/PNG images
 * (ImageNet-LT, image folders) ImageNet's.  A model takes its normalisation from the
 * partition it is made for (aggregate --init --partition); without one, from its
 * architecture's usual data (the CIFAR ResNets: CIFAR; ResNet-50: ImageNet).
 * What it is not: normalisation itself (shard_gather applies it). */
#ifndef FEDSM_NORM_H
#define FEDSM_NORM_H

#include "record.h"

#include <stdbool.h>

typedef struct {
    const char *name; /* "cifar" or "imagenet" */
    double mean[3], std[3];
} norm_stats;

/* By family name ("cifar", "imagenet"); NULL for any other. */
const norm_stats *norm_by_name(const char *name);
/* What partition records for a set: encoded images -> imagenet, pixel arrays -> cifar. */
const norm_stats *norm_for_storage(bool encoded);
/* The default of a model architecture: "resnet50" -> imagenet, the CIFAR ResNets -> cifar. */
const norm_stats *norm_for_arch(const char *arch);
/* True when two mean/std pairs agree to 1e-5 (they are copied, never recomputed). */
bool norm_same(const float mean_a[3], const float std_a[3], const float mean_b[3],
               const float std_b[3]);

/* 0 when the shard record's meta mean/std equal the model (or update) record's; ERR_FORMAT
 * with a one-line message naming both streams and families otherwise.  A record without
 * mean/std (a model of other than 3 input channels, a shard written by another program)
 * is not checked. */
int norm_check_shard(const record *model, const record *shard);

#endif
