// LAPACKE (Debian liblapacke-dev): eigen-decompositions and matrix square roots for FID.
#include <lapacke.h>
