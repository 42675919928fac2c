// See include/CJPEGShim.h. Pillow semantics: JpegImagePlugin opens CMYK/YCCK as "CMYK;I" (always assumes Adobe
// inversion), and convert("RGB") uses Convert.c's cmyk2rgb with MULDIV255 rounding.
#include "CJPEGShim.h"
#include <stdio.h>
#include <jpeglib.h>
#include <jerror.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

struct shim_error {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char *err;
    size_t errlen;
};

static void shim_error_exit(j_common_ptr cinfo) {
    struct shim_error *e = (struct shim_error *)cinfo->err;
    char msg[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, msg);
    if (e->err && e->errlen) snprintf(e->err, e->errlen, "%s", msg);
    longjmp(e->jump, 1);
}

// A truncated file (premature end of data) is an error here, as in Pillow ("image file is truncated"): it must
// be reported and skipped, not padded with grey as libjpeg would. Other corrupt-data warnings pass, as in Pillow.
static void shim_emit_message(j_common_ptr cinfo, int level) {
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) shim_error_exit(cinfo);
}

static inline uint8_t muldiv255(int a, int b) {
    int tmp = a * b + 128;
    return (uint8_t)(((tmp >> 8) + tmp) >> 8);
}

static void cmyk_to_rgb(const uint8_t *in, uint8_t *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int c = 255 - in[4 * i], m = 255 - in[4 * i + 1], y = 255 - in[4 * i + 2], k = 255 - in[4 * i + 3];
        int nk = 255 - k;
        out[3 * i] = (uint8_t)(nk - muldiv255(c, nk));
        out[3 * i + 1] = (uint8_t)(nk - muldiv255(m, nk));
        out[3 * i + 2] = (uint8_t)(nk - muldiv255(y, nk));
    }
}

int haste_jpeg_decode(const uint8_t *data, size_t size, uint64_t max_pixels, uint32_t max_aspect, uint8_t **pixels,
                      int *w, int *h, int *components, int *colorspace, char *err, size_t errlen) {
    struct jpeg_decompress_struct cinfo;
    struct shim_error jerr;
    uint8_t *volatile out = NULL, *volatile raw = NULL;
    *pixels = NULL;
    if (err && errlen) err[0] = 0;
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = shim_error_exit;
    jerr.pub.emit_message = shim_emit_message;
    jerr.err = err;
    jerr.errlen = errlen;
    if (setjmp(jerr.jump)) {
        jpeg_destroy_decompress(&cinfo);
        free(out);
        free(raw);
        return 1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    // Refuse from the header, before jpeg_start_decompress allocates anything image-sized (a 474-byte file can
    // declare 65500×65500). The caller words the refusal from *w and *h.
    uint64_t iw = cinfo.image_width, ih = cinfo.image_height;
    uint64_t lo = iw < ih ? iw : ih, hi = iw < ih ? ih : iw;
    if (iw * ih > max_pixels || (max_aspect && hi > (uint64_t)max_aspect * lo)) {
        *w = (int)iw;
        *h = (int)ih;
        snprintf(err, errlen, "refused from its header (%llux%llu)", (unsigned long long)iw, (unsigned long long)ih);
        jpeg_destroy_decompress(&cinfo);
        return 3;
    }
    *colorspace = (int)cinfo.jpeg_color_space;
    int cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    if (cmyk) cinfo.out_color_space = JCS_CMYK;
    else if (cinfo.jpeg_color_space == JCS_GRAYSCALE) cinfo.out_color_space = JCS_GRAYSCALE;
    else cinfo.out_color_space = JCS_RGB;
    jpeg_start_decompress(&cinfo);
    size_t width = cinfo.output_width, height = cinfo.output_height, nc = cinfo.output_components;
    int outc = cmyk ? 3 : (int)nc;
    out = malloc(width * height * (size_t)outc);
    if (cmyk) raw = malloc(width * 4);
    if (!out || (cmyk && !raw)) {
        snprintf(err, errlen, "out of memory for a %zux%zu image", width, height);
        jpeg_destroy_decompress(&cinfo);
        free(out);
        free(raw);
        return 2;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        size_t row = cinfo.output_scanline;
        JSAMPROW dst = cmyk ? (JSAMPROW)raw : (JSAMPROW)(out + row * width * nc);
        jpeg_read_scanlines(&cinfo, &dst, 1);
        if (cmyk) cmyk_to_rgb(raw, out + row * width * 3, width);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    free(raw);
    *pixels = out;
    *w = (int)width;
    *h = (int)height;
    *components = outc;
    return 0;
}

void haste_jpeg_free(uint8_t *pixels) { free(pixels); }
