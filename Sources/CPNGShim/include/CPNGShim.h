// PNG through libpng's full API (errors longjmp, hence C). The simplified png_image_* API applies gamma
// (gAMA chunks, 16-bit files treated as linear) and composites alpha when it is dropped; Pillow does neither,
// so decoding here applies no colour transform at all. See Sources/HasteIO/PNG.swift.
#ifndef CPNGSHIM_H
#define CPNGSHIM_H
#include <stddef.h>
#include <stdint.h>

/// Decodes a PNG held in memory. Palette images are expanded to RGB and 1/2/4-bit grey to 8 bits; nothing else
/// changes (tRNS and gAMA ignored, 16-bit samples kept in host byte order, interlacing undone). On success returns
/// 0 and sets *pixels to a malloc'd buffer of height·width·channels samples of depth bits (8 or 16), which the
/// caller frees with haste_png_free; channels 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA. On failure returns -1 and
/// writes libpng's message to err. A header declaring more than max_pixels pixels, or (max_aspect > 0) a long
/// side over max_aspect × the short side, is refused before anything is allocated: returns 3 with *width and
/// *height set to the declared size.
int haste_png_decode(const uint8_t *data, size_t size, uint64_t max_pixels, uint32_t max_aspect, uint32_t *width,
                     uint32_t *height, int *channels, int *depth, uint8_t **pixels, char *err, size_t errlen);
void haste_png_free(void *p);

/// Writes 8-bit pixels (HWC, channels 1/3/4) to path with zlib level 0–9. Level 0 writes stored blocks with no
/// row filter (spec/data.md §1.1: the reference writes uncompressed PNGs). Returns 0, or -1 with a message.
int haste_png_write(const char *path, const uint8_t *pixels, uint32_t width, uint32_t height, int channels,
                    int level, char *err, size_t errlen);
#endif
