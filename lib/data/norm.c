/* norm.c - the normalisation table and its choice rules (norm.h). */
#include "norm.h"

#include "err.h"
#include "shard.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const norm_stats cifar = {"cifar", {0.4914, 0.4822, 0.4465}, {0.2023, 0.1994, 0.2010}};
static const norm_stats imagenet = {"imagenet", {0.485, 0.456, 0.406}, {0.229, 0.224, 0.225}};

const norm_stats *norm_by_name(const char *name)
{
    if (name && !strcmp(name, "cifar"))
        return &cifar;
    if (name && !strcmp(name, "imagenet"))
        return &imagenet;
    return NULL;
}

const norm_stats *norm_for_storage(bool encoded) { return encoded ? &imagenet : &cifar; }

const norm_stats *norm_for_arch(const char *arch)
{
    return arch && !strcmp(arch, "resnet50") ? &imagenet : &cifar;
}

bool norm_same(const float mean_a[3], const float std_a[3], const float mean_b[3],
               const float std_b[3])
{
    for (int c = 0; c < 3; c++)
        if (fabsf(mean_a[c] - mean_b[c]) > 1e-5f || fabsf(std_a[c] - std_b[c]) > 1e-5f)
            return false;
    return true;
}

/* "cifar", "imagenet" or "custom": which table entry the pair is */
static const char *family(const float mean[3], const float std[3])
{
    const norm_stats *all[2] = {&cifar, &imagenet};
    for (int k = 0; k < 2; k++) {
        float m[3], s[3];
        for (int c = 0; c < 3; c++)
            m[c] = (float)all[k]->mean[c], s[c] = (float)all[k]->std[c];
        if (norm_same(mean, std, m, s))
            return all[k]->name;
    }
    return "custom";
}

int norm_check_shard(const record *model, const record *shard)
{
    float mm[3], ms[3], sm[3], ss[3];
    if (!mv_map_get(model->meta, "mean") || !mv_map_get(shard->meta, "mean"))
        return 0;
    int rc;
    if ((rc = meta_get_vec3(model, "mean", mm)) || (rc = meta_get_vec3(model, "std", ms)) ||
        (rc = meta_get_vec3(shard, "mean", sm)) || (rc = meta_get_vec3(shard, "std", ss)))
        return rc;
    if (norm_same(mm, ms, sm, ss))
        return 0;
    return err_set(ERR_FORMAT,
                   "normalisation differs (stream %s, field meta.mean/std): the shard's is %s "
                   "(mean %.4g %.4g %.4g), the model's (%s) %s (mean %.4g %.4g %.4g); make the "
                   "model with 'aggregate --init --partition' of this data",
                   shard->src[0] ? shard->src : "shard", family(sm, ss), sm[0], sm[1], sm[2],
                   model->src[0] ? model->src : "model", family(mm, ms), mm[0], mm[1], mm[2]);
}
