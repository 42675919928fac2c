// Generic HDF5 access for layouts defined on the Swift side (see include/CHDF5.h). Automatic error printing is
// off; every failure is a negative handle or a non-zero return.
#include "CHDF5.h"
#include <hdf5.h>
#include <stdio.h>
#include <string.h>

static hid_t native(int dtype) {
    switch (dtype) {
    case 0: return H5T_NATIVE_UINT8;
    case 1: return H5T_NATIVE_FLOAT;
    case 2: return H5T_NATIVE_INT64;
    default: return -1;
    }
}

static hid_t stored(int dtype) {
    switch (dtype) {
    case 0: return H5T_STD_U8LE;
    case 1: return H5T_IEEE_F32LE;
    case 2: return H5T_STD_I64LE;
    default: return -1;
    }
}

static void message(char *err, size_t errlen, const char *what, const char *path) {
    if (err && errlen) snprintf(err, errlen, "%s: %s", what, path);
}

int64_t haste_h5_file_access(void) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0) H5Pset_file_locking(fapl, 0, 1);
    return fapl;
}

int64_t haste_h5g_create(const char *path, char *err, size_t errlen) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t fapl = haste_h5_file_access();
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0) message(err, errlen, "cannot create HDF5 file (does the folder exist and is it writable?)", path);
    return f;
}

int64_t haste_h5g_open(const char *path, char *err, size_t errlen) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t fapl = haste_h5_file_access();
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (f < 0) message(err, errlen, "not an HDF5 file", path);
    return f;
}

int haste_h5g_close(int64_t file) { return H5Fclose(file) < 0; }

int haste_h5g_set_string_attr(int64_t file, const char *name, const char *value) {
    hid_t space = H5Screate(H5S_SCALAR), t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(value) > 0 ? strlen(value) : 1);
    hid_t a = H5Acreate2(file, name, t, space, H5P_DEFAULT, H5P_DEFAULT);
    int bad = a < 0 || H5Awrite(a, t, value) < 0;
    if (a >= 0) H5Aclose(a);
    H5Tclose(t);
    H5Sclose(space);
    return bad;
}

int haste_h5g_string_attr(int64_t file, const char *name, char *buf, size_t len) {
    if (!len) return 1;
    buf[0] = 0;
    hid_t a = H5Aopen(file, name, H5P_DEFAULT);
    if (a < 0) return 1;
    hid_t t = H5Aget_type(a);
    int bad = 1;
    if (H5Tget_class(t) == H5T_STRING) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        if (H5Tis_variable_str(t) > 0) {
            char *s = NULL;
            H5Tset_size(mt, H5T_VARIABLE);
            if (H5Aread(a, mt, &s) >= 0 && s) { snprintf(buf, len, "%s", s); H5free_memory(s); bad = 0; }
        } else if (H5Tget_size(t) < len) {
            H5Tset_size(mt, H5Tget_size(t));
            memset(buf, 0, len);
            bad = H5Aread(a, mt, buf) < 0;
        }
        H5Tclose(mt);
    }
    H5Tclose(t);
    H5Aclose(a);
    return bad;
}

int haste_h5g_set_int_attr(int64_t file, const char *name, int64_t value) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(file, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    int bad = a < 0 || H5Awrite(a, H5T_NATIVE_INT64, &value) < 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    return bad;
}

int haste_h5g_int_attr(int64_t file, const char *name, int64_t *value) {
    hid_t a = H5Aopen(file, name, H5P_DEFAULT);
    if (a < 0) return 1;
    hid_t t = H5Aget_type(a);
    int bad = H5Tget_class(t) != H5T_INTEGER || H5Aread(a, H5T_NATIVE_INT64, value) < 0;
    H5Tclose(t);
    H5Aclose(a);
    return bad;
}

struct names { char *buf; size_t len, used; int count, objects; };

static void add_name(struct names *n, const char *name) {
    int w = snprintf(n->buf + n->used, n->used < n->len ? n->len - n->used : 0, "%s%s", n->count ? "\n" : "", name);
    n->used += w > 0 ? (size_t)w : 0;
    if (n->used >= n->len) n->used = n->len ? n->len - 1 : 0;
    n->count++;
}

static herr_t attr_name(hid_t loc, const char *name, const H5A_info_t *info, void *data) {
    (void)loc; (void)info;
    add_name(data, name);
    return 0;
}

// H5L_info_t is the version-default link info type (1.10 and 1.12+ alike through H5Literate).
static herr_t link_name(hid_t loc, const char *name, const H5L_info_t *info, void *data) {
    (void)info;
    hid_t o = H5Oopen(loc, name, H5P_DEFAULT);
    if (o < 0) return 0;
    if (H5Iget_type(o) == H5I_DATASET) add_name(data, name);
    H5Oclose(o);
    return 0;
}

int haste_h5g_names(int64_t file, int objects, char *buf, size_t len) {
    struct names n = {buf, len, 0, 0, objects};
    if (len) buf[0] = 0;
    hsize_t idx = 0;
    herr_t r = objects ? H5Literate(file, H5_INDEX_NAME, H5_ITER_INC, &idx, link_name, &n)
                       : H5Aiterate2(file, H5_INDEX_NAME, H5_ITER_INC, &idx, attr_name, &n);
    return r < 0 ? -1 : n.count;
}

int64_t haste_h5g_create_dataset(int64_t file, const char *name, int dtype, int rank, const int64_t *dims, const int64_t *chunk) {
    if (rank < 0 || rank > 8 || stored(dtype) < 0) return -1;
    hsize_t d[8], c[8];
    for (int k = 0; k < rank; k++) { d[k] = (hsize_t)dims[k]; c[k] = (hsize_t)(chunk[k] > 0 ? chunk[k] : 1); }
    hid_t space = rank ? H5Screate_simple(rank, d, NULL) : H5Screate(H5S_SCALAR);
    hid_t plist = H5Pcreate(H5P_DATASET_CREATE);
    if (rank) H5Pset_chunk(plist, rank, c);
    hid_t ds = H5Dcreate2(file, name, stored(dtype), space, H5P_DEFAULT, plist, H5P_DEFAULT);
    H5Pclose(plist);
    H5Sclose(space);
    return ds;
}

int64_t haste_h5g_open_dataset(int64_t file, const char *name, int *dtype, int *rank, int64_t *dims) {
    if (H5Lexists(file, name, H5P_DEFAULT) <= 0) return -1;
    hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
    if (ds < 0) return -1;
    hid_t t = H5Dget_type(ds), space = H5Dget_space(ds);
    H5T_class_t cls = H5Tget_class(t);
    size_t size = H5Tget_size(t);
    H5T_sign_t sign = cls == H5T_INTEGER ? H5Tget_sign(t) : H5T_SGN_ERROR;
    *dtype = cls == H5T_INTEGER && size == 1 && sign == H5T_SGN_NONE ? 0
           : cls == H5T_FLOAT && size == 4 ? 1
           : cls == H5T_INTEGER && size == 8 && sign == H5T_SGN_2 ? 2 : -1;
    int r = H5Sget_simple_extent_ndims(space);
    *rank = r;
    hsize_t d[8] = {0};
    if (r > 0 && r <= 8) H5Sget_simple_extent_dims(space, d, NULL);
    for (int k = 0; k < 8; k++) dims[k] = k < r ? (int64_t)d[k] : 0;
    H5Sclose(space);
    H5Tclose(t);
    if (r < 0 || r > 8) { H5Dclose(ds); return -1; }
    return ds;
}

int haste_h5g_rows(int64_t dataset, int dtype, int64_t start, int64_t count, void *buf, int write) {
    hid_t mt = native(dtype);
    if (mt < 0) return 1;
    hid_t space = H5Dget_space(dataset);
    int rank = H5Sget_simple_extent_ndims(space);
    herr_t r;
    if (rank <= 0) {
        r = write ? H5Dwrite(dataset, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) : H5Dread(dataset, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    } else {
        hsize_t dims[8], off[8] = {0}, cnt[8];
        H5Sget_simple_extent_dims(space, dims, NULL);
        if (start < 0 || count < 0 || (hsize_t)(start + count) > dims[0]) { H5Sclose(space); return 1; }
        for (int k = 0; k < rank; k++) cnt[k] = dims[k];
        off[0] = (hsize_t)start;
        cnt[0] = (hsize_t)count;
        H5Sselect_hyperslab(space, H5S_SELECT_SET, off, NULL, cnt, NULL);
        hid_t mem = H5Screate_simple(rank, cnt, NULL);
        r = write ? H5Dwrite(dataset, mt, mem, space, H5P_DEFAULT, buf) : H5Dread(dataset, mt, mem, space, H5P_DEFAULT, buf);
        H5Sclose(mem);
    }
    H5Sclose(space);
    return r < 0;
}

int haste_h5g_close_dataset(int64_t dataset) { return H5Dclose(dataset) < 0; }
