// OpenBLAS's CBLAS plus its thread/core queries (Debian libopenblas-dev puts cblas.h on the include path),
// and glibc's mallopt, which the CPU backend uses to keep large activation blocks on the heap.
#include <cblas.h>
#include <malloc.h>
