// See include/CHDF5.h. Every HDF5 call is checked; automatic error printing is off so failures come back as
// messages the Swift side turns into HasteError.
#include "CHDF5.h"
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FORMAT_TAG "haste-dataset-1"

struct haste_h5 {
    hid_t file, images, moments, labels, filenames, str;
    int64_t n;
    int res, mc, ms;
};

static void fail(char *err, size_t errlen, const char *what, const char *path) {
    if (err && errlen) snprintf(err, errlen, "%s%s%s", what, path ? ": " : "", path ? path : "");
}

static hid_t vlen_string(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

static hid_t make_dataset(hid_t file, const char *name, hid_t type, int rank, const hsize_t *dims, const hsize_t *chunk) {
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t plist = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(plist, rank, chunk);
    hid_t d = H5Dcreate2(file, name, type, space, H5P_DEFAULT, plist, H5P_DEFAULT);
    H5Pclose(plist);
    H5Sclose(space);
    return d;
}

static int write_attrs(haste_h5 *f, const char *const *class_names, int n_classes) {
    hid_t scalar = H5Screate(H5S_SCALAR);
    hid_t ftype = H5Tcopy(H5T_C_S1);
    H5Tset_size(ftype, strlen(FORMAT_TAG));
    hid_t a = H5Acreate2(f->file, "format", ftype, scalar, H5P_DEFAULT, H5P_DEFAULT);
    int bad = a < 0 || H5Awrite(a, ftype, FORMAT_TAG) < 0;
    H5Aclose(a);
    H5Tclose(ftype);
    int64_t res = f->res;
    a = H5Acreate2(f->file, "resolution", H5T_STD_I64LE, scalar, H5P_DEFAULT, H5P_DEFAULT);
    bad |= a < 0 || H5Awrite(a, H5T_NATIVE_INT64, &res) < 0;
    H5Aclose(a);
    H5Sclose(scalar);
    hsize_t nc = (hsize_t)n_classes;
    hid_t space = n_classes > 0 ? H5Screate_simple(1, &nc, NULL) : H5Screate(H5S_NULL);
    a = H5Acreate2(f->file, "class_names", f->str, space, H5P_DEFAULT, H5P_DEFAULT);
    if (n_classes > 0) bad |= H5Awrite(a, f->str, class_names) < 0;
    bad |= a < 0;
    H5Aclose(a);
    H5Sclose(space);
    return bad;
}

haste_h5 *haste_h5_create(const char *path, int64_t n, int resolution, int moment_channels, int moment_side,
                          const char *const *class_names, int n_classes, char *err, size_t errlen) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    haste_h5 *f = calloc(1, sizeof *f);
    f->n = n; f->res = resolution; f->mc = moment_channels; f->ms = moment_side;
    f->moments = -1;
    f->str = vlen_string();
    hid_t fapl = haste_h5_file_access();
    f->file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f->file < 0) { fail(err, errlen, "cannot create HDF5 file (does the folder exist and is it writable?)", path); H5Tclose(f->str); free(f); return NULL; }
    hsize_t idims[4] = {(hsize_t)n, 3, (hsize_t)resolution, (hsize_t)resolution}, ichunk[4] = {1, 3, idims[2], idims[3]};
    f->images = make_dataset(f->file, "images", H5T_STD_U8LE, 4, idims, ichunk);
    if (moment_channels > 0) {
        hsize_t mdims[4] = {(hsize_t)n, (hsize_t)moment_channels, (hsize_t)moment_side, (hsize_t)moment_side};
        hsize_t mchunk[4] = {1, mdims[1], mdims[2], mdims[3]};
        f->moments = make_dataset(f->file, "moments", H5T_IEEE_F32LE, 4, mdims, mchunk);
    }
    hsize_t ldims[1] = {(hsize_t)n}, lchunk[1] = {n < 4096 ? (hsize_t)(n > 0 ? n : 1) : 4096};
    f->labels = make_dataset(f->file, "labels", H5T_STD_I64LE, 1, ldims, lchunk);
    f->filenames = make_dataset(f->file, "filenames", f->str, 1, ldims, lchunk);
    if (f->images < 0 || f->labels < 0 || f->filenames < 0 || (moment_channels > 0 && f->moments < 0)
        || write_attrs(f, class_names, n_classes)) {
        fail(err, errlen, "cannot create the datasets in", path);
        haste_h5_close(f);
        return NULL;
    }
    return f;
}

// Reads or writes one row (item i) of a dataset whose rows are `rank`-dimensional with the given trailing dims.
static int row_io(hid_t d, hid_t memtype, int64_t i, void *buf, int write) {
    hid_t space = H5Dget_space(d);
    int rank = H5Sget_simple_extent_ndims(space);
    hsize_t dims[4], start[4] = {0, 0, 0, 0}, count[4];
    H5Sget_simple_extent_dims(space, dims, NULL);
    for (int k = 0; k < rank; k++) count[k] = dims[k];
    start[0] = (hsize_t)i;
    count[0] = 1;
    H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL);
    hid_t mem = H5Screate_simple(rank, count, NULL);
    herr_t r = write ? H5Dwrite(d, memtype, mem, space, H5P_DEFAULT, buf) : H5Dread(d, memtype, mem, space, H5P_DEFAULT, buf);
    H5Sclose(mem);
    H5Sclose(space);
    return r < 0;
}

static int write_row(hid_t d, hid_t memtype, int64_t i, const void *buf) { return row_io(d, memtype, i, (void *)buf, 1); }
static int read_row(hid_t d, hid_t memtype, int64_t i, void *buf) { return row_io(d, memtype, i, buf, 0); }

int haste_h5_write_item(haste_h5 *f, int64_t i, const uint8_t *image, const float *moments, int64_t label,
                        const char *filename, char *err, size_t errlen) {
    if (i < 0 || i >= f->n) { fail(err, errlen, "item index out of range", NULL); return 1; }
    int bad = write_row(f->images, H5T_NATIVE_UINT8, i, image);
    if (f->moments >= 0 && moments) bad |= write_row(f->moments, H5T_NATIVE_FLOAT, i, moments);
    bad |= write_row(f->labels, H5T_NATIVE_INT64, i, &label);
    bad |= write_row(f->filenames, f->str, i, &filename);
    if (bad) fail(err, errlen, "cannot write an item (disk full?)", filename);
    return bad;
}

static int read_int_attr(hid_t file, const char *name, int64_t *out) {
    hid_t a = H5Aopen(file, name, H5P_DEFAULT);
    if (a < 0) return 1;
    int bad = H5Aread(a, H5T_NATIVE_INT64, out) < 0;
    H5Aclose(a);
    return bad;
}

static int check_format(hid_t file) {
    hid_t a = H5Aopen(file, "format", H5P_DEFAULT);
    if (a < 0) return 1;
    hid_t t = H5Aget_type(a);
    char buf[64] = {0};
    int bad = 1;
    if (H5Tget_class(t) == H5T_STRING && !H5Tis_variable_str(t) && H5Tget_size(t) < sizeof buf) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5Tget_size(t));
        bad = H5Aread(a, mt, buf) < 0 || strcmp(buf, FORMAT_TAG) != 0;
        H5Tclose(mt);
    }
    H5Tclose(t);
    H5Aclose(a);
    return bad;
}

haste_h5 *haste_h5_open(const char *path, char *err, size_t errlen) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    haste_h5 *f = calloc(1, sizeof *f);
    f->images = f->moments = f->labels = f->filenames = -1;
    f->str = vlen_string();
    hid_t fapl = haste_h5_file_access();
    f->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (f->file < 0) { fail(err, errlen, "not an HDF5 file", path); H5Tclose(f->str); free(f); return NULL; }
    int64_t res = 0;
    if (check_format(f->file) || read_int_attr(f->file, "resolution", &res)) {
        fail(err, errlen, "no format=\"" FORMAT_TAG "\" / resolution attributes (not written by haste preprocess)", path);
        haste_h5_close(f);
        return NULL;
    }
    f->res = (int)res;
    f->images = H5Dopen2(f->file, "images", H5P_DEFAULT);
    f->labels = H5Dopen2(f->file, "labels", H5P_DEFAULT);
    f->filenames = H5Dopen2(f->file, "filenames", H5P_DEFAULT);
    if (H5Lexists(f->file, "moments", H5P_DEFAULT) > 0) f->moments = H5Dopen2(f->file, "moments", H5P_DEFAULT);
    if (f->images < 0 || f->labels < 0 || f->filenames < 0) {
        fail(err, errlen, "missing /images, /labels or /filenames", path);
        haste_h5_close(f);
        return NULL;
    }
    hsize_t dims[4];
    hid_t s = H5Dget_space(f->images);
    H5Sget_simple_extent_dims(s, dims, NULL);
    H5Sclose(s);
    f->n = (int64_t)dims[0];
    if (f->moments >= 0) {
        s = H5Dget_space(f->moments);
        H5Sget_simple_extent_dims(s, dims, NULL);
        H5Sclose(s);
        f->mc = (int)dims[1];
        f->ms = (int)dims[2];
    }
    return f;
}

int64_t haste_h5_count(const haste_h5 *f) { return f->n; }
int haste_h5_resolution(const haste_h5 *f) { return f->res; }
int haste_h5_moment_channels(const haste_h5 *f) { return f->mc; }
int haste_h5_moment_side(const haste_h5 *f) { return f->ms; }
int haste_h5_read_image(haste_h5 *f, int64_t i, uint8_t *out) { return read_row(f->images, H5T_NATIVE_UINT8, i, out); }
int haste_h5_read_moments(haste_h5 *f, int64_t i, float *out) {
    return f->moments < 0 ? 1 : read_row(f->moments, H5T_NATIVE_FLOAT, i, out);
}
int haste_h5_read_labels(haste_h5 *f, int64_t *out) {
    return H5Dread(f->labels, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0;
}

int haste_h5_filename(haste_h5 *f, int64_t i, char *buf, size_t len) {
    char *name = NULL;
    if (read_row(f->filenames, f->str, i, &name) || !name) return 1;
    snprintf(buf, len, "%s", name);
    H5free_memory(name);
    return 0;
}

int haste_h5_class_names(haste_h5 *f, char *buf, size_t len) {
    hid_t a = H5Aopen(f->file, "class_names", H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t s = H5Aget_space(a);
    hssize_t n = H5Sget_simple_extent_npoints(s);
    if (len) buf[0] = 0;
    int result = (int)n;
    if (n > 0) {
        char **names = calloc((size_t)n, sizeof *names);
        if (H5Aread(a, f->str, names) < 0) result = -1;
        size_t used = 0;
        for (hssize_t k = 0; k < n && result >= 0; k++) {
            int w = snprintf(buf + used, used < len ? len - used : 0, "%s%s", k ? "\n" : "", names[k] ? names[k] : "");
            used += w > 0 ? (size_t)w : 0;
            if (used >= len) used = len ? len - 1 : 0;
        }
        if (result >= 0) H5Dvlen_reclaim(f->str, s, H5P_DEFAULT, names);
        free(names);
    }
    H5Sclose(s);
    H5Aclose(a);
    return result;
}

int haste_h5_close(haste_h5 *f) {
    if (!f) return 0;
    hid_t ds[4] = {f->images, f->moments, f->labels, f->filenames};
    for (int k = 0; k < 4; k++) if (ds[k] >= 0) H5Dclose(ds[k]);
    H5Tclose(f->str);
    int bad = f->file >= 0 && H5Fclose(f->file) < 0;
    free(f);
    return bad;
}
