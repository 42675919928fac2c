// The packed dataset file ("haste-dataset-1") through libhdf5. HDF5's type constants are macros over globals
// that Swift cannot import, so the whole file format lives in this small C layer.
// Layout: /images uint8 [N,3,R,R] chunked (1,3,R,R); /moments float32 [N,C,S,S] chunked (1,C,S,S) (absent
// when C = 0); /labels int64 [N]; /filenames variable-length strings [N]; root attributes format (string),
// resolution (int64), class_names (variable-length strings).
#ifndef HASTE_CHDF5_H
#define HASTE_CHDF5_H
#include <stddef.h>
#include <stdint.h>

typedef struct haste_h5 haste_h5;

/// Creates (truncating) a file for n items. class_names: n_classes C strings. NULL on failure, message in err.
haste_h5 *haste_h5_create(const char *path, int64_t n, int resolution, int moment_channels, int moment_side,
                          const char *const *class_names, int n_classes, char *err, size_t errlen);
/// Writes item i; moments may be NULL when the file has none. 0 on success.
int haste_h5_write_item(haste_h5 *f, int64_t i, const uint8_t *image, const float *moments, int64_t label,
                        const char *filename, char *err, size_t errlen);
/// Opens read-only; checks the format tag. NULL on failure.
haste_h5 *haste_h5_open(const char *path, char *err, size_t errlen);
int64_t haste_h5_count(const haste_h5 *f);
int haste_h5_resolution(const haste_h5 *f);
int haste_h5_moment_channels(const haste_h5 *f);
int haste_h5_moment_side(const haste_h5 *f);
int haste_h5_read_image(haste_h5 *f, int64_t i, uint8_t *out);
int haste_h5_read_moments(haste_h5 *f, int64_t i, float *out);
int haste_h5_read_labels(haste_h5 *f, int64_t *out);
/// Class names joined by '\n' into buf (truncated to len); returns the number of classes, -1 on error.
int haste_h5_class_names(haste_h5 *f, char *buf, size_t len);
/// File name of item i into buf; 0 on success.
int haste_h5_filename(haste_h5 *f, int64_t i, char *buf, size_t len);
/// Flushes and closes; 0 on success.
int haste_h5_close(haste_h5 *f);

// Generic access (hdf5_generic.c) for files laid out by the Swift side, e.g. "haste-coco-1": handles are hid_t
// values (int64), negative on failure. dtype codes: 0 uint8, 1 float32, 2 int64; -1 any other type.
/// A file-access property list with HDF5's file locks off (close it with H5Pclose after the open/create). haste
/// writes through a temporary renamed at the end and opens read-only; the flock HDF5 takes by default is inherited by
/// any child process forked while the file is open and outlives our close, so a later open failed ("unable to lock
/// file") while such a child ran.
int64_t haste_h5_file_access(void);
int64_t haste_h5g_create(const char *path, char *err, size_t errlen);
int64_t haste_h5g_open(const char *path, char *err, size_t errlen);
int haste_h5g_close(int64_t file);
int haste_h5g_set_string_attr(int64_t file, const char *name, const char *value);
/// A fixed- or variable-length string attribute into buf; 0 on success.
int haste_h5g_string_attr(int64_t file, const char *name, char *buf, size_t len);
int haste_h5g_set_int_attr(int64_t file, const char *name, int64_t value);
int haste_h5g_int_attr(int64_t file, const char *name, int64_t *value);
/// Names of the root's attributes (or, objects = 1, of its datasets) joined by '\n'; the count, -1 on error.
int haste_h5g_names(int64_t file, int objects, char *buf, size_t len);
/// A dataset of rank <= 8, chunked by `chunk`.
int64_t haste_h5g_create_dataset(int64_t file, const char *name, int dtype, int rank, const int64_t *dims, const int64_t *chunk);
/// Opens a dataset; dtype, rank and dims (8 slots) are filled in.
int64_t haste_h5g_open_dataset(int64_t file, const char *name, int *dtype, int *rank, int64_t *dims);
/// Reads or writes rows [start, start + count) of the first axis (the whole dataset for rank 0) as dtype.
int haste_h5g_rows(int64_t dataset, int dtype, int64_t start, int64_t count, void *buf, int write);
int haste_h5g_close_dataset(int64_t dataset);

#endif
