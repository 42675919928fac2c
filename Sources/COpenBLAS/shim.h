// OpenBLAS's CBLAS plus its thread/core queries (Debian libopenblas-dev puts cblas.h on the include path).
#include <cblas.h>
