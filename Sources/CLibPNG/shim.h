// libpng 1.6 simplified API (Debian libpng-dev): png_image_* read/write without setjmp.
#include <png.h>
