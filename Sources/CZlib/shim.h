// zlib (Debian zlib1g-dev, pulled in by libpng-dev): gzip inflation for dataset files.
#include <zlib.h>
