/* dataset.h - labelled image datasets read from their distribution layouts:
 *   cifar10   DIR/data_batch_1..5.bin, test_batch.bin (1 label byte + 3072 pixel bytes per
 *             record), DIR/batches.meta.txt (class names, one per line)
 *   cifar100  DIR/train.bin, test.bin (coarse byte, fine byte, 3072 pixel bytes),
 *             DIR/fine_label_names.txt; the fine labels are used
 *   folder    DIR/train/CLASS/NAME.{jpg,jpeg,png} (+ DIR/test/CLASS/...): classes in sorted
 *             name order (or a classes file's order), files in sorted name order
 *   list      FILE of "relative/path label" lines (ImageNet-LT), paths under a root folder
 * Sample i of a set is its position in that order (the `index` of shards).
 *
 * Storage: CIFAR and small images are decoded to planar pixels [n, 3, H, W].  Images
 * larger than small_max on a side (or of differing sizes) stay encoded on disk: the set
 * keeps their paths, and ds_read_encoded() returns the file bytes when a shard is written.
 * Decoding runs on the thread pool (pool.h: pool_set_threads) and is deterministic.
 *
 * Not here: long-tail selection and splits (split.h), writing records (tools/partition.c). */
#ifndef FEDSM_DATASET_H
#define FEDSM_DATASET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { DS_AUTO = 0, DS_CIFAR10, DS_CIFAR100, DS_FOLDER, DS_LIST } ds_format;
typedef enum { DS_STORE_AUTO = 0, DS_STORE_PIXELS, DS_STORE_ENCODED } ds_store;

const char *ds_format_name(ds_format f);
int ds_format_parse(const char *s); /* -1 when unknown */

typedef struct ds_set {
    int64_t n;
    int32_t *labels;  /* [n] */
    int h, w;         /* pixel size when decoded (pixels != NULL) */
    uint8_t *pixels;  /* [n, 3, h, w] or NULL when encoded */
    char **paths;     /* [n] file paths (folder/list inputs), else NULL */
    int max_side;     /* largest side seen (encoded sets) */
} ds_set;

typedef struct dataset {
    ds_format format;
    char name[128];      /* "cifar10", "cifar100", or the folder / list file base name */
    int n_classes;
    char **classes;      /* [n_classes] names */
    ds_set train, test;
    bool has_test;
    int64_t files_read;  /* image files opened (folder/list) */
} dataset;

typedef struct ds_opts {
    ds_format format;          /* DS_AUTO: from what the path holds */
    const char *classes_file;  /* optional: class names in label order, one per line */
    const char *root;          /* list: image root (default: the list file's folder) */
    const char *test_list;     /* list: optional test list file */
    ds_store store;
    int small_max;             /* decode when every side <= small_max (default 64) */
    void (*progress)(const char *what, int64_t done, int64_t total); /* optional */
} ds_opts;
void ds_opts_default(ds_opts *o);

/* Loads a dataset.  Errors: ERR_IO (path not found), ERR_USAGE (unrecognised layout), ERR_FORMAT
 * (missing or short files, wrong record sizes, unknown labels, empty class folders,
 * unreadable images: one message naming the file), ERR_IO, ERR_INTERNAL. */
int ds_load(const char *path, const ds_opts *o, dataset *out);
void ds_free(dataset *d); /* NULL-safe; leaves d zeroed */

/* Reads the encoded bytes of sample i of an encoded set (owned, malloc'd). */
int ds_read_encoded(const ds_set *s, int64_t i, void **buf, size_t *len);

/* Reads class names (one per line, UTF-8; surrounding spaces and blank lines after the
 * last name ignored; a blank line between names, NUL bytes or a name given twice is
 * ERR_FORMAT naming the line or name).  *out is owned (free each name and the array).
 * ERR_FORMAT/ERR_IO (cannot read it) naming path. */
int ds_read_names(const char *path, char ***out, int *n);

#endif
