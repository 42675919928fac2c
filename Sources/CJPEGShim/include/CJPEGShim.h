// JPEG decoding through libjpeg(-turbo). libjpeg reports errors by longjmp, which Swift cannot catch, so the
// decode lives in C and returns an error string instead.
#ifndef HASTE_CJPEGSHIM_H
#define HASTE_CJPEGSHIM_H
#include <stddef.h>
#include <stdint.h>

/// Decodes a whole JPEG from memory to 8-bit pixels: *components is 1 (grey) or 3 (RGB). CMYK/YCCK files are
/// converted to RGB as Pillow does (Adobe-inverted CMYK, then Pillow's cmyk2rgb). *colorspace is libjpeg's
/// J_COLOR_SPACE of the file. Returns 0 on success; otherwise nonzero with a message in err and nothing allocated.
/// Free *pixels with haste_jpeg_free. Before anything image-sized is allocated, a header declaring more than
/// max_pixels pixels, or (max_aspect > 0) a long side over max_aspect × the short side, is refused: returns 3 with
/// *w and *h set to the declared size.
int haste_jpeg_decode(const uint8_t *data, size_t size, uint64_t max_pixels, uint32_t max_aspect, uint8_t **pixels,
                      int *w, int *h, int *components, int *colorspace, char *err, size_t errlen);
void haste_jpeg_free(uint8_t *pixels);

#endif
