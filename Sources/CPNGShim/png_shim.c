// See include/CPNGShim.h.
#include "CPNGShim.h"
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct shim_ctx {
    const uint8_t *data;
    size_t size, pos;
    char *err;
    size_t errlen;
};

static void shim_error(png_structp png, png_const_charp msg) {
    struct shim_ctx *ctx = (struct shim_ctx *)png_get_error_ptr(png);
    if (ctx && ctx->err && ctx->errlen) snprintf(ctx->err, ctx->errlen, "%s", msg);
    png_longjmp(png, 1);
}

static void shim_warning(png_structp png, png_const_charp msg) { (void)png; (void)msg; }

static void shim_read(png_structp png, png_bytep out, png_size_t n) {
    struct shim_ctx *ctx = (struct shim_ctx *)png_get_io_ptr(png);
    if (ctx->size - ctx->pos < n) png_error(png, "file is truncated (unexpected end of data)");
    memcpy(out, ctx->data + ctx->pos, n);
    ctx->pos += n;
}

void haste_png_free(void *p) { free(p); }

int haste_png_decode(const uint8_t *data, size_t size, uint64_t max_pixels, uint32_t max_aspect, uint32_t *width,
                     uint32_t *height, int *channels, int *depth, uint8_t **pixels, char *err, size_t errlen) {
    struct shim_ctx ctx = {data, size, 0, err, errlen};
    *pixels = NULL;
    if (size < 8 || png_sig_cmp(data, 0, 8) != 0) {
        snprintf(err, errlen, "not a PNG signature");
        return -1;
    }
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, shim_error, shim_warning);
    if (!png) { snprintf(err, errlen, "out of memory"); return -1; }
    png_infop info = png_create_info_struct(png);
    png_bytep *volatile rows = NULL;
    uint8_t *volatile buf = NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {   // err holds libpng's message (shim_error); destroy sets info to NULL
        free(rows);
        free(buf);
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    png_set_read_fn(png, &ctx, shim_read);
    png_read_info(png, info);
    int color = png_get_color_type(png, info), bits = png_get_bit_depth(png, info);
    uint32_t w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    // Refuse from the header, before allocating; the caller words the refusal from *width and *height.
    uint64_t lo = w < h ? w : h, hi = w < h ? h : w;
    if ((uint64_t)w * h > max_pixels || (max_aspect && hi > (uint64_t)max_aspect * lo)) {
        png_destroy_read_struct(&png, &info, NULL);
        *width = w; *height = h;
        snprintf(err, errlen, "refused from its header (%ux%u)", w, h);
        return 3;
    }
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    else if (color == PNG_COLOR_TYPE_GRAY && bits < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (bits == 16) {
        const uint16_t probe = 1;
        if (*(const uint8_t *)&probe == 1) png_set_swap(png);   // host (little-endian) uint16
    }
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int c = png_get_channels(png, info), d = png_get_bit_depth(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if (rowbytes != (size_t)w * c * (d / 8)) png_error(png, "unexpected row layout after expansion");
    buf = (uint8_t *)malloc(rowbytes * h + 1);
    rows = (png_bytep *)malloc(sizeof(png_bytep) * (h ? h : 1));
    if (!buf || !rows) png_error(png, "out of memory");
    for (uint32_t y = 0; y < h; y++) rows[y] = buf + (size_t)y * rowbytes;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    *width = w; *height = h; *channels = c; *depth = d; *pixels = buf;
    return 0;
}

int haste_png_write(const char *path, const uint8_t *pixels, uint32_t width, uint32_t height, int channels,
                    int level, char *err, size_t errlen) {
    struct shim_ctx ctx = {NULL, 0, 0, err, errlen};
    FILE *volatile f = fopen(path, "wb");
    if (!f) { snprintf(err, errlen, "cannot create the file"); return -1; }
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, shim_error, shim_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, NULL);
        fclose(f);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fclose(f);
        return -1;
    }
    png_init_io(png, f);
    int color = channels == 1 ? PNG_COLOR_TYPE_GRAY : channels == 4 ? PNG_COLOR_TYPE_RGB_ALPHA : PNG_COLOR_TYPE_RGB;
    png_set_IHDR(png, info, width, height, 8, color, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(png, level);
    if (level == 0) png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_NONE);
    png_write_info(png, info);
    for (uint32_t y = 0; y < height; y++) png_write_row(png, (png_const_bytep)(pixels + (size_t)y * width * channels));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (fclose(f) != 0) { snprintf(err, errlen, "cannot finish writing (disk full?)"); return -1; }
    return 0;
}
